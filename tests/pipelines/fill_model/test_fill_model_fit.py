"""The fill model recovers the parameters it was simulated with, and fits the embedded tape calibrated."""

import numpy as np
import polars as pl
import pytest

from sofia_pipelines.defs.fill_model.compute import (calibration, expected_calibration_error, fill_samples,
                                                     fit_fill_model, fit_params, held_out)
from sofia_runtime.simulator import MarketSimulator
from sofia_runtime.fill_model import FillParams, p_fill


def test_fit_recovers_simulated_parameters():
    rng = np.random.default_rng(3)
    n = 40_000
    d = rng.choice([0.5, 1.0, 1.5, 2.0, 3.0, 5.0], n)
    vol = rng.lognormal(np.log(0.001), 0.4, n)
    truth = FillParams(intensity_a=0.02, decay_k=0.8, vol_ref=0.001, vol_exponent=1.2)
    filled = (rng.random(n) < p_fill(truth, d, vol, 60.0)).astype(float)
    fit = fit_params(d, vol, filled, 60.0)
    # vol_ref is the sample median, so A absorbs (median / 0.001) ** beta
    a_at_truth_ref = fit.intensity_a * (0.001 / fit.vol_ref) ** fit.vol_exponent
    assert a_at_truth_ref == pytest.approx(0.02, rel=0.1)
    assert fit.decay_k == pytest.approx(0.8, rel=0.1)
    assert fit.vol_exponent == pytest.approx(1.2, abs=0.15)


def test_fill_probability_bounds_and_monotone_in_distance():
    params = FillParams(0.05, 1.0, 0.001, 1.0)
    p = p_fill(params, [0.5, 1, 2, 4], 0.001, 60)
    assert np.all((p > 0) & (p < 1)) and np.all(np.diff(p) < 0)


def test_embedded_tape_is_calibrated_on_held_out_hours():
    day = MarketSimulator().day(MarketSimulator().available_days()[1])
    keep = pl.col("symbol").is_in(["BTC/USDT", "ETH/USDT:USDT"])
    samples = fill_samples(day["books"].filter(keep), day["trades"].filter(keep))
    test = held_out(samples)
    model = fit_fill_model(samples.filter(~test))
    assert model.height == 12  # BTC/USDT and ETH/USDT:USDT on binance, okx and bybit, both sides
    table = calibration(model, samples.filter(test))
    assert expected_calibration_error(table) < 0.05
    assert model["brier"].max() < 0.25
