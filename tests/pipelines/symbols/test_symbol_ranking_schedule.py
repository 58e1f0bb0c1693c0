"""Symbol ranking components and the session schedule's rules on hand-made hours."""

from datetime import datetime

import polars as pl
import pytest

from sofia_pipelines.defs.symbols.compute import RankingWeights, ScheduleRules, session_schedule, symbol_rankings

H = datetime(2026, 10, 26, 9)


def _liq(rows):
    return pl.DataFrame([{"venue": v, "symbol": s, "hour": H.replace(hour=h), "volume_usd": vol, "depth_usd_mean": d,
                          "spread_bps_mean": sp, "volatility_1m": 0.001} for v, s, h, vol, d, sp in rows])


FEES = pl.DataFrame({"venue": ["a", "b", "c"], "symbol": ["X/USDT"] * 3, "taker": [0.001, 0.0005, 0.001],
                     "selected": [True] * 3})


def test_ranking_components_are_percentiles_and_weighted():
    liq = _liq([("a", "X/USDT", 9, 1e6, 1e5, 2.0), ("b", "X/USDT", 9, 5e5, 5e4, 1.0), ("c", "X/USDT", 9, 1e5, 1e4, 8.0)])
    r = symbol_rankings(liq, FEES, RankingWeights(liquidity=1, spread=0, volatility=0, cost=0))
    assert r["venue"].to_list() == ["a", "b", "c"]
    assert r["liquidity_score"].to_list() == [1.0, 0.5, 0.0]
    r = symbol_rankings(liq, FEES, RankingWeights(liquidity=0, spread=0, volatility=0, cost=1))
    # all-in cost = taker + half spread: b 5.5, a 11, c 14 bps
    assert r["venue"].to_list() == ["b", "a", "c"] and r["cost_score"].to_list() == [1.0, 0.5, 0.0]
    assert r["score"].to_list() == pytest.approx([1.0, 0.5, 0.0])


def test_schedule_min_liquidity_and_caps():
    liq = _liq([("a", "X/USDT", 9, 50_000, 30_000, 2.0), ("a", "X/USDT", 3, 5_000, 30_000, 2.0),
                ("a", "X/USDT", 4, 50_000, 30_000, 25.0)])
    lat = pl.DataFrame([{"venue": "a", "endpoint": "private_rest", "hour": H.replace(hour=h), "p95_ms": 100.0,
                         "error_rate": 0.0} for h in (9, 3, 4)])
    ranks = pl.DataFrame({"venue": ["a"], "symbol": ["X/USDT"], "score": [0.7]})
    s = session_schedule(liq, lat, ranks, ScheduleRules()).sort("hour")
    assert s.select("hour", "active").rows() == [(3, False), (4, False), (9, True)]
    assert s["reason"].to_list() == ["volume below minimum", "spread above cap", "liquid, cheap and fast"]
    slow = lat.with_columns(pl.lit(900.0).alias("p95_ms"))
    assert not session_schedule(liq, slow, ranks, ScheduleRules())["active"].any()


def test_absent_depth_and_latency_are_not_judged_and_an_estimated_spread_says_so():
    from sofia_pipelines.defs.symbols.compute import absent_input_only

    liq = _liq([("a", "X/USDT", 9, 50_000, None, 2.0), ("a", "X/USDT", 10, 50_000, None, 25.0),
                ("a", "X/USDT", 11, None, None, 2.0)]).with_columns(
        pl.col("depth_usd_mean").cast(pl.Float64), pl.col("spread_bps_mean").alias("spread_bps"),
        pl.lit("abdi_ranaldo_2017").alias("spread_method"))
    none = pl.DataFrame(schema={"venue": pl.Utf8, "endpoint": pl.Utf8, "hour": pl.Datetime("us"),
                                "p95_ms": pl.Float64, "error_rate": pl.Float64})
    ranks = pl.DataFrame({"venue": ["a"], "symbol": ["X/USDT"], "score": [0.7]})
    s = session_schedule(liq, none, ranks, ScheduleRules()).sort("hour")
    assert s["active"].to_list() == [True, False, False]
    assert s["reason"].to_list() == ["liquid, cheap and fast", "spread above cap (estimated from candles: no books)",
                                     "no volume in USD (no candles or trades, or a quote without a USD value)"]
    assert set(s["inputs"]) == {"rules not applied (input absent): depth (no books), latency and error rate "
                                "(no probes or tape times)"}
    assert absent_input_only(s).to_list() == [False, True, True]
    r = symbol_rankings(liq, FEES, RankingWeights()).row(0, named=True)
    assert r["depth_usd"] is None and r["inputs"] == "left out (input absent): depth"
    assert r["method"] == "spread=abdi_ranaldo_2017"
