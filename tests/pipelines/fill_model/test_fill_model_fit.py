"""The fill model recovers the parameters it was simulated with, and fits the embedded tape calibrated."""

import numpy as np
import polars as pl
import pytest

from sofia_pipelines.defs.fill_model.compute import (DISTANCES, calibration, expected_calibration_error, fill_samples,
                                                     fit_fill_model, fit_params, held_out, neg_log_likelihood)
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


def test_likelihood_matches_p_fill_and_its_gradient_the_finite_differences():
    rng = np.random.default_rng(5)
    d, vol = rng.choice([0.5, 1.0, 2.0, 5.0], 500), rng.lognormal(np.log(0.001), 0.5, 500)
    y = (rng.random(500) < 0.3).astype(float)
    features = np.stack([np.ones(500), -d, np.log(vol / 0.001)])
    for theta in (np.array([np.log(0.02), 0.8, 1.2]), np.array([-6.0, 0.1, -0.5]), np.array([1.0, 3.0, 2.0])):
        p = np.clip(p_fill(FillParams(np.exp(theta[0]), theta[1], 0.001, theta[2]), d, vol, 60.0), 1e-9, 1 - 1e-9)
        value, grad = neg_log_likelihood(theta, features, y, 60.0)
        assert value == pytest.approx(-np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)), rel=1e-10)
        # central differences; where p is near 1 the objective itself carries rounding (1 - p), hence 1e-5
        numeric = [(neg_log_likelihood(theta + 1e-5 * e, features, y, 60.0)[0]
                    - neg_log_likelihood(theta - 1e-5 * e, features, y, 60.0)[0]) / 2e-5 for e in np.eye(3)]
        assert grad == pytest.approx(numeric, rel=1e-5, abs=1e-6)


def _fill_samples_by_scanning(books: pl.DataFrame, trades: pl.DataFrame, horizon_s: float = 60.0) -> pl.DataFrame:
    """fill_samples' `filled` the plain way: each sample's window of the tape scanned for a print through it."""
    rows = []
    for (venue, symbol), b in books.sort("ts").group_by("venue", "symbol", maintain_order=True):
        t = trades.filter((pl.col("venue") == venue) & (pl.col("symbol") == symbol)).sort("ts")
        tt, tp, side = t["ts"].dt.epoch("ms").to_numpy(), t["price"].to_numpy(), t["side"].to_numpy()
        for ts, bid, ask in b.select(pl.col("ts").dt.epoch("ms"), "bid", "ask").iter_rows():
            window = (tt > ts) & (tt <= ts + horizon_s * 1000)
            for d in DISTANCES:
                buy, sell = (bid + ask) / 2 - d * (ask - bid), (bid + ask) / 2 + d * (ask - bid)
                rows.append((venue, symbol, "buy", ts, d, bool(np.any(window & (side == "sell") & (tp <= buy)))))
                rows.append((venue, symbol, "sell", ts, d, bool(np.any(window & (side == "buy") & (tp >= sell)))))
    return pl.DataFrame(rows, schema=["venue", "symbol", "side", "ts", "distance", "filled"], orient="row")


def test_fill_samples_match_a_plain_scan_of_the_tape():
    day = MarketSimulator().day(MarketSimulator().available_days()[1])
    keep = pl.col("symbol").is_in(["BTC/USDT"]) & pl.col("venue").is_in(["binance", "okx"])
    books = day["books"].filter(keep & (pl.col("ts").dt.hour() < 2))
    trades = day["trades"].filter(keep & (pl.col("ts").dt.hour() < 3))
    samples = fill_samples(books, trades)
    assert samples.height and 0 < samples["filled"].mean() < 1
    key = ["venue", "symbol", "side", "ts", "distance"]
    expected = _fill_samples_by_scanning(books, trades).join(samples.select(key), on=key, how="semi")
    assert expected.height == samples.height
    got = samples.join(expected, on=key, suffix="_scan")
    assert (got["filled"] == got["filled_scan"]).all()


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
