"""Fitting the fill-probability model on the tape.

Hypothetical limit orders are placed once a minute at several distances from mid (in spreads) on each
side; one fills when a taker trade on the other side prints at or through its price within the horizon.
(A, k, beta) maximize the Bernoulli likelihood of those outcomes under sofia_runtime.fill_model.p_fill.

Without books and trades, the same orders are placed at each candle's close and fill when the next bar's low
(buy) or high (sell) reaches them ("bar touch"), with the spread estimated from the candles: an optimistic
model (a touch is not a fill, there is no queue), named so in the table's `method`.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from sofia_pipelines.market_inputs import ABDI_RANALDO, candle_spread_abdi_ranaldo, finest_candles
from sofia_runtime.fill_model import FillParams, p_fill
from sofia_runtime.schemas import FILL_MODEL

DISTANCES = np.array([0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0])
HORIZON_S = 60.0
SAMPLE_EVERY_S = 60
VOL_WINDOW = 10  # minutes of mid returns behind each sample
TAPE = ("tape_mle", "books+trades")
BAR_TOUCH = "bar_touch_mle"


def neg_log_likelihood(theta: np.ndarray, features: np.ndarray, filled: np.ndarray,
                       horizon_s: float) -> tuple[float, np.ndarray]:
    """-log L of outcomes `filled` (0/1) under p_fill with A = exp(theta[0]), k = theta[1], beta = theta[2],
    and its gradient; `features` are the rows 1, -distance, log(vol / vol_ref). p is clipped to
    [1e-9, 1 - 1e-9], so the clipped samples have no slope."""
    lam = horizon_s * np.exp(theta @ features)  # p = 1 - exp(-lam)
    p = 1.0 - np.exp(-lam)
    inside = (p > 1e-9) & (p < 1 - 1e-9)
    p = np.clip(p, 1e-9, 1 - 1e-9)
    value = -np.sum(filled * np.log(p) + (1 - filled) * np.log(1 - p))
    # d/dlam: -filled (1 - p) / p + (1 - filled), as dp/dlam = 1 - p; dlam/dtheta = lam * features
    slope = (1 - filled - filled * (1 - p) / p) * lam * inside
    return value, features @ slope


def fit_params(distance: np.ndarray, vol: np.ndarray, filled: np.ndarray, horizon_s: float) -> FillParams:
    vol_ref = float(np.median(vol[vol > 0])) if np.any(vol > 0) else 1.0
    log_ratio = np.log(np.maximum(np.asarray(vol, dtype=float), 1e-12) / vol_ref)
    features = np.stack([np.ones_like(log_ratio), -np.asarray(distance, dtype=float), log_ratio])
    result = minimize(neg_log_likelihood, x0=np.array([np.log(0.02), 1.0, 1.0]), jac=True, method="L-BFGS-B",
                      args=(features, np.asarray(filled, dtype=float), horizon_s),
                      bounds=[(-15, 3), (0.0, 20.0), (-3.0, 5.0)])
    return FillParams(float(np.exp(result.x[0])), float(result.x[1]), vol_ref, float(result.x[2]))


def _window_extreme(prices: np.ndarray, lo: np.ndarray, hi: np.ndarray, reduce) -> np.ndarray:
    """reduce (np.fmin or np.fmax: NaN is skipped) of prices[lo[i]:hi[i]] for each i; NaN where the window is
    empty or holds only NaN."""
    if lo.size == 0:
        return np.empty(0)
    padded = np.append(prices, np.nan)  # so an index may be len(prices)
    bounds = np.empty(2 * lo.size, dtype=np.intp)
    bounds[0::2], bounds[1::2] = lo, hi
    out = reduce.reduceat(padded, bounds)[0::2]  # [lo, hi) when lo < hi, else padded[lo]
    out[hi <= lo] = np.nan
    return out


def fill_samples(books: pl.DataFrame, trades: pl.DataFrame, horizon_s: float = HORIZON_S) -> pl.DataFrame:
    """One row per venue, symbol, side, sample time and distance: the features and whether it filled."""
    out = []
    tape = trades.partition_by("venue", "symbol", as_dict=True)
    sides = (("buy", "sell", -1), ("sell", "buy", 1))
    for (venue, symbol), b in books.sort("ts").group_by("venue", "symbol", maintain_order=True):
        t = tape.get((venue, symbol), trades.clear()).sort("ts")
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
        if not np.isfinite(vol).any():  # a tape of a few minutes: 10-second mid returns, scaled to one minute
            ten_s = b.group_by_dynamic("ts", every="10s").agg(((pl.col("bid") + pl.col("ask")) / 2).last().alias("m"))
            short = pl.Series(np.diff(np.log(ten_s["m"].to_numpy()), prepend=np.nan)).fill_nan(None).rolling_std(
                6, min_samples=3).fill_null(np.nan).to_numpy() * np.sqrt(6)
            ten_ts = ten_s["ts"].dt.epoch("ms").to_numpy()
            vol = short[np.clip(np.searchsorted(ten_ts, b_ts[idx], side="right") - 1, 0, len(ten_ts) - 1)]
        keep = np.isfinite(vol)
        idx, vol = idx[keep], vol[keep]
        tt, tp, ts_side = t["ts"].dt.epoch("ms").to_numpy(), t["price"].to_numpy(), t["side"].to_numpy()
        lo = np.searchsorted(tt, b_ts[idx], side="right")
        hi = np.searchsorted(tt, b_ts[idx] + horizon_s * 1000, side="right")
        filled = []
        for side, taker, sign in sides:
            # a buy fills when a taker sell prints at or below its price within the horizon, a sell the reverse
            prices = np.where(ts_side == taker, tp, np.nan)
            extreme = _window_extreme(prices, lo, hi, np.fmin if sign < 0 else np.fmax)
            limit = mid[idx] + sign * DISTANCES[:, None] * spread[idx]  # (distances, samples)
            filled.append(extreme <= limit if sign < 0 else extreme >= limit)
        n, k = len(idx), len(sides) * len(DISTANCES)  # rows by side, then distance, then sample time
        out.append(pl.DataFrame({
            "venue": pl.repeat(venue, n * k, eager=True), "symbol": pl.repeat(symbol, n * k, eager=True),
            "side": pl.Series([s for s, _, _ in sides]).gather(np.repeat(np.arange(len(sides)), len(DISTANCES) * n)),
            "ts": np.tile(b_ts[idx], k), "distance": np.tile(np.repeat(DISTANCES, n), len(sides)),
            "vol": np.tile(vol, k), "filled": np.concatenate(filled).ravel()}))
    if not out:
        return pl.DataFrame()
    return pl.concat(out).with_columns(pl.lit(horizon_s).alias("horizon_s"), pl.lit(TAPE[0]).alias("method"),
                                       pl.lit(TAPE[1]).alias("inputs"))


def bar_touch_samples(candles: pl.DataFrame) -> pl.DataFrame:
    """fill_samples' rows from candles alone: at each bar's close (the mid), orders at DISTANCES spreads fill
    when the next bar's low (buy) or high (sell) reaches them within that bar (horizon = the bar). The spread
    is the Abdi-Ranaldo estimate over all the venue-symbol's bars: one scale for every distance (an hour's
    dozen bars give too noisy an estimate, and the model comes out miscalibrated on held-out hours with it);
    volatility is the rolling std of the bars' log returns over VOL_WINDOW bars, scaled to one minute."""
    bars = finest_candles(candles).sort("venue", "symbol", "ts")
    if bars.is_empty():
        return pl.DataFrame()
    by = ["venue", "symbol"]
    spread = candle_spread_abdi_ranaldo(bars, every=None).select(*by, "spread_bps")
    df = (bars.join(spread, on=by, how="left")
          .with_columns(pl.col("close").log().diff().over(by).alias("ret"),
                        pl.col("low").shift(-1).over(by).alias("next_low"),
                        pl.col("high").shift(-1).over(by).alias("next_high"),
                        (pl.col("ts").shift(-1).over(by) - pl.col("ts")).dt.total_seconds().alias("gap_s"))
          .with_columns((pl.col("ret").rolling_std(VOL_WINDOW, min_samples=3).over(by)
                         / (pl.col("bar_seconds") / 60).sqrt()).alias("vol"))
          .filter((pl.col("gap_s") == pl.col("bar_seconds")) & (pl.col("spread_bps") > 0) & pl.col("vol").is_finite()
                  & (pl.col("vol") > 0)))
    if df.is_empty():
        return pl.DataFrame()
    grid = pl.DataFrame({"distance": DISTANCES})
    samples = df.join(grid, how="cross").with_columns((pl.col("close") * pl.col("spread_bps") / 1e4).alias("_spread"))
    buys = samples.with_columns(pl.lit("buy").alias("side"),
                                (pl.col("next_low") <= pl.col("close") - pl.col("distance") * pl.col("_spread"))
                                .alias("filled"))
    sells = samples.with_columns(pl.lit("sell").alias("side"),
                                 (pl.col("next_high") >= pl.col("close") + pl.col("distance") * pl.col("_spread"))
                                 .alias("filled"))
    return pl.concat([buys, sells]).select(
        *by, "side", pl.col("ts").dt.epoch("ms").alias("ts"), "distance", "vol", "filled",
        pl.col("bar_seconds").cast(pl.Float64).alias("horizon_s"), pl.lit(BAR_TOUCH).alias("method"),
        pl.format("candles {} + {} spread", "timeframe", pl.lit(ABDI_RANALDO)).alias("inputs"))


def fill_samples_by_input(books: pl.DataFrame, trades: pl.DataFrame, candles: pl.DataFrame
                          ) -> tuple[pl.DataFrame, list[tuple[str, str, str]]]:
    """The tape's samples for every venue-symbol with books and trades, bar-touch samples from candles for
    those without, and (venue, symbol, reason) for what has neither."""
    traded = trades.select("venue", "symbol").unique()
    tape = fill_samples(books.join(traded, on=["venue", "symbol"], how="semi"), trades, HORIZON_S)
    covered = tape.select("venue", "symbol").unique() if tape.height else traded.clear()
    bars = bar_touch_samples(candles.join(covered, on=["venue", "symbol"], how="anti"))
    samples = pl.concat([s for s in (tape, bars) if s.height], how="vertical_relaxed") if tape.height or bars.height \
        else pl.DataFrame()
    sampled = samples.select("venue", "symbol").unique() if samples.height else covered
    seen = pl.concat([f.select("venue", "symbol") for f in (books, trades, candles)]).unique()
    gaps = []
    for venue, symbol in seen.join(sampled, on=["venue", "symbol"], how="anti").sort("venue", "symbol").iter_rows():
        has = {name for name, f in (("books", books), ("trades", trades), ("candles", candles))
               if f.filter((pl.col("venue") == venue) & (pl.col("symbol") == symbol)).height}
        reason = ("books and trades, but too short a tape for a volatility estimate (3 minutes, or 30 s of "
                  "10-second mids)" if {"books", "trades"} <= has else
                  "books without trades and no candles" if has == {"books"} else
                  "candles give no usable bar pairs (zero-volume, gaps or zero spread estimate)" if "candles" in has
                  else f"only {', '.join(sorted(has))}: neither a tape nor candles to fit on")
        gaps.append((venue, symbol, reason))
    return samples, gaps


def _one_blas_thread():
    """L-BFGS-B solves a tiny triangular system (LAPACK dtrtrs) every iteration, and OpenBLAS runs dtrtrs on
    all its threads whatever the size: the hand-off costs more than the solve, up to milliseconds per
    iteration when the other cores are busy."""
    return threadpool_limits(1, user_api="blas")


def fit_fill_model(samples: pl.DataFrame, horizon_s: float = HORIZON_S) -> pl.DataFrame:
    rows = []
    with _one_blas_thread():
        for (venue, symbol, side), g in samples.group_by("venue", "symbol", "side", maintain_order=True):
            d, v, y = g["distance"].to_numpy(), g["vol"].to_numpy(), g["filled"].to_numpy().astype(float)
            h = g["horizon_s"].to_numpy() if "horizon_s" in g.columns else horizon_s
            params = fit_params(d, v, y, h)
            brier = float(np.mean((p_fill(params, d, v, h) - y) ** 2))
            rows.append({"venue": venue, "symbol": symbol, "side": side, "intensity_a": params.intensity_a,
                         "decay_k": params.decay_k, "vol_ref": params.vol_ref, "vol_exponent": params.vol_exponent,
                         "brier": brier, "n_obs": len(y),
                         "method": g["method"][0] if "method" in g.columns else TAPE[0],
                         "inputs": g["inputs"][0] if "inputs" in g.columns else TAPE[1]})
    if not rows:
        return FILL_MODEL.empty()
    return FILL_MODEL.conform(pl.DataFrame(rows), "fill_model")


def calibration(model: pl.DataFrame, samples: pl.DataFrame, horizon_s: float = HORIZON_S) -> pl.DataFrame:
    """Predicted vs observed fill rate by predicted-probability bucket on `samples` (a held-out set)."""
    joined = samples.join(model.drop("method", "inputs", strict=False), on=["venue", "symbol", "side"])
    h = joined["horizon_s"].to_numpy() if "horizon_s" in joined.columns else horizon_s
    pred = p_fill(FillParams(joined["intensity_a"].to_numpy(), joined["decay_k"].to_numpy(),
                             joined["vol_ref"].to_numpy(), joined["vol_exponent"].to_numpy()),
                  joined["distance"].to_numpy(), joined["vol"].to_numpy(), h)
    df = joined.with_columns(pl.Series("predicted", pred),
                             (pl.Series("predicted", pred) * 10).floor().clip(0, 9).alias("bucket"))
    return df.group_by("bucket").agg(pl.len().alias("n"), pl.col("predicted").mean().alias("predicted"),
                                     pl.col("filled").cast(pl.Float64).mean().alias("observed")).sort("bucket")


def held_out(samples: pl.DataFrame) -> pl.Series:
    """Odd UTC hours are held out of the fit and used to judge calibration; a tape within one hour holds out its
    odd minutes, and one within a minute every other sample time."""
    ts = pl.from_epoch(samples["ts"], time_unit="ms")
    for test in ((ts.dt.hour() % 2) == 1, (ts.dt.minute() % 2) == 1, (samples["ts"].rank("dense") % 2) == 0):
        if 0 < test.sum() < len(test):
            return test
    return test


def expected_calibration_error(table: pl.DataFrame) -> float:
    """Sample-weighted mean |predicted - observed| over the calibration buckets."""
    return float((table["n"] * (table["predicted"] - table["observed"]).abs()).sum() / table["n"].sum())
