"""Fitting the fill-probability model on the tape.

Hypothetical limit orders are placed once a minute at several distances from mid (in spreads) on each
side; one fills when a taker trade on the other side prints at or through its price within the horizon.
(A, k, beta) maximize the Bernoulli likelihood of those outcomes under sofia_runtime.fill_model.p_fill.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy.optimize import minimize

from sofia_runtime.fill_model import FillParams, p_fill
from sofia_runtime.schemas import FILL_MODEL

DISTANCES = np.array([0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0])
HORIZON_S = 60.0
SAMPLE_EVERY_S = 60
VOL_WINDOW = 10  # minutes of mid returns behind each sample


def fit_params(distance: np.ndarray, vol: np.ndarray, filled: np.ndarray, horizon_s: float) -> FillParams:
    vol_ref = float(np.median(vol[vol > 0])) if np.any(vol > 0) else 1.0

    def nll(theta):
        params = FillParams(float(np.exp(theta[0])), theta[1], vol_ref, theta[2])
        p = np.clip(p_fill(params, distance, vol, horizon_s), 1e-9, 1 - 1e-9)
        return -np.sum(filled * np.log(p) + (1 - filled) * np.log(1 - p))

    result = minimize(nll, x0=np.array([np.log(0.02), 1.0, 1.0]), method="L-BFGS-B",
                      bounds=[(-15, 3), (0.0, 20.0), (-3.0, 5.0)])
    return FillParams(float(np.exp(result.x[0])), float(result.x[1]), vol_ref, float(result.x[2]))


def fill_samples(books: pl.DataFrame, trades: pl.DataFrame, horizon_s: float = HORIZON_S) -> pl.DataFrame:
    """One row per venue, symbol, side, sample time and distance: the features and whether it filled."""
    out = []
    for (venue, symbol), b in books.sort("ts").group_by("venue", "symbol", maintain_order=True):
        t = trades.filter((pl.col("venue") == venue) & (pl.col("symbol") == symbol)).sort("ts")
        b_ts = b["ts"].dt.epoch("ms").to_numpy()
        mid = ((b["bid"] + b["ask"]) / 2).to_numpy()
        spread = (b["ask"] - b["bid"]).to_numpy()
        minute_mid = b.group_by_dynamic("ts", every="1m").agg(((pl.col("bid") + pl.col("ask")) / 2).last().alias("m"))
        rets = np.diff(np.log(minute_mid["m"].to_numpy()), prepend=np.nan)
        vol_by_minute = pl.Series(rets).rolling_std(VOL_WINDOW, min_samples=3).to_numpy()
        minute_ts = minute_mid["ts"].dt.epoch("ms").to_numpy()
        step = max(1, int(SAMPLE_EVERY_S // 10))
        idx = np.arange(0, len(b_ts), step)
        vol = vol_by_minute[np.clip(np.searchsorted(minute_ts, b_ts[idx], side="right") - 1, 0, len(minute_ts) - 1)]
        keep = np.isfinite(vol)
        idx, vol = idx[keep], vol[keep]
        tt, tp, ts_side = t["ts"].dt.epoch("ms").to_numpy(), t["price"].to_numpy(), t["side"].to_numpy()
        lo = np.searchsorted(tt, b_ts[idx], side="right")
        hi = np.searchsorted(tt, b_ts[idx] + horizon_s * 1000, side="right")
        for side, taker, sign in (("buy", "sell", -1), ("sell", "buy", 1)):
            prices = np.where(ts_side == taker, tp, np.nan)
            for d in DISTANCES:
                limit = mid[idx] + sign * d * spread[idx]
                filled = np.array([
                    bool(np.any(prices[a:z] <= p) if sign < 0 else np.any(prices[a:z] >= p)) if z > a else False
                    for a, z, p in zip(lo, hi, limit)])
                out.append(pl.DataFrame({"venue": venue, "symbol": symbol, "side": side, "ts": b_ts[idx],
                                         "distance": d, "vol": vol, "filled": filled}))
    return pl.concat(out) if out else pl.DataFrame()


def fit_fill_model(samples: pl.DataFrame, horizon_s: float = HORIZON_S) -> pl.DataFrame:
    rows = []
    for (venue, symbol, side), g in samples.group_by("venue", "symbol", "side", maintain_order=True):
        d, v, y = g["distance"].to_numpy(), g["vol"].to_numpy(), g["filled"].to_numpy().astype(float)
        params = fit_params(d, v, y, horizon_s)
        brier = float(np.mean((p_fill(params, d, v, horizon_s) - y) ** 2))
        rows.append({"venue": venue, "symbol": symbol, "side": side, "intensity_a": params.intensity_a,
                     "decay_k": params.decay_k, "vol_ref": params.vol_ref, "vol_exponent": params.vol_exponent,
                     "brier": brier, "n_obs": len(y)})
    return FILL_MODEL.conform(pl.DataFrame(rows), "fill_model")


def calibration(model: pl.DataFrame, samples: pl.DataFrame, horizon_s: float = HORIZON_S) -> pl.DataFrame:
    """Predicted vs observed fill rate by predicted-probability bucket on `samples` (a held-out set)."""
    joined = samples.join(model, on=["venue", "symbol", "side"])
    pred = p_fill(FillParams(joined["intensity_a"].to_numpy(), joined["decay_k"].to_numpy(),
                             joined["vol_ref"].to_numpy(), joined["vol_exponent"].to_numpy()),
                  joined["distance"].to_numpy(), joined["vol"].to_numpy(), horizon_s)
    df = joined.with_columns(pl.Series("predicted", pred),
                             (pl.Series("predicted", pred) * 10).floor().clip(0, 9).alias("bucket"))
    return df.group_by("bucket").agg(pl.len().alias("n"), pl.col("predicted").mean().alias("predicted"),
                                     pl.col("filled").cast(pl.Float64).mean().alias("observed")).sort("bucket")


def held_out(samples: pl.DataFrame) -> pl.Series:
    """Odd UTC hours are held out of the fit and used to judge calibration."""
    return (pl.from_epoch(samples["ts"], time_unit="ms").dt.hour() % 2) == 1


def expected_calibration_error(table: pl.DataFrame) -> float:
    """Sample-weighted mean |predicted - observed| over the calibration buckets."""
    return float((table["n"] * (table["predicted"] - table["observed"]).abs()).sum() / table["n"].sum())
