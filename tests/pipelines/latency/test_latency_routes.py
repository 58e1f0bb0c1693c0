"""Latency percentiles and route choice on hand-computed cases."""

import math
from datetime import datetime, timedelta

import polars as pl
import pytest

from sofia_pipelines.defs.latency.compute import latency_heatmap, route_table, venue_costs
from sofia_pipelines.defs.latency.assets import heatmap_png

T0 = datetime(2026, 10, 26, 14)  # a Monday


def test_percentiles_and_error_rate_by_hour():
    lat = [10.0, 20.0, 30.0, 40.0, None]
    probes = pl.DataFrame({"venue": ["v"] * 5, "endpoint": ["public_rest"] * 5,
                           "ts": [T0 + timedelta(seconds=15 * i) for i in range(5)],
                           "latency_ms": lat, "ok": [True, True, True, True, False], "error": [None] * 4 + ["timeout"]})
    out = latency_heatmap(probes)
    day = out.filter(pl.col("view") == "hour_of_day").row(0, named=True)
    assert day["bucket"] == 14 and day["samples"] == 5 and day["error_rate"] == pytest.approx(0.2)
    assert day["p50_ms"] == pytest.approx(25.0) and day["p95_ms"] == pytest.approx(38.5)
    week = out.filter(pl.col("view") == "hour_of_week").row(0, named=True)
    assert week["bucket"] == 14  # Monday 14:00
    assert heatmap_png(out) is not None


def _inputs(rows):
    liq = pl.DataFrame([{"venue": v, "symbol": "BTC/USDT", "hour": T0, "spread_bps_mean": s, "volatility_1m": vol,
                         "depth_usd_mean": d} for v, s, vol, d, *_ in rows])
    lat = pl.DataFrame([{"venue": v, "endpoint": "private_rest", "hour": T0, "p50_ms": ms, "error_rate": err}
                        for v, _, _, _, ms, err, _ in rows])
    fees = pl.DataFrame([{"venue": v, "symbol": "BTC/USDT", "taker": fee, "selected": True}
                         for v, *_, fee in rows])
    return liq, lat, fees


def test_cheapest_fee_loses_to_spread_and_latency():
    # venue a: lowest fee but wide spread and slow; venue b wins all-in; venue c is down (error rate)
    rows = [("a", 6.0, 0.002, 1e6, 400.0, 0.0, 0.0004),
            ("b", 1.0, 0.002, 1e6, 25.0, 0.0, 0.0006),
            ("c", 0.5, 0.002, 1e6, 10.0, 0.5, 0.0001)]
    costs = venue_costs(*_inputs(rows), notional_usd=10_000)
    slip = lambda ms: 0.002 / math.sqrt(60) * math.sqrt(ms / 1000) * math.sqrt(2 / math.pi) * 1e4  # noqa: E731
    a = costs.filter(pl.col("venue") == "a")["cost_bps"][0]
    b = costs.filter(pl.col("venue") == "b")["cost_bps"][0]
    assert a == pytest.approx(4 + 3 + slip(400)) and b == pytest.approx(6 + 0.5 + slip(25))
    routes = route_table(costs, 10_000)
    assert routes.height == 2 and set(routes["side"]) == {"buy", "sell"}
    r = routes.row(0, named=True)
    assert (r["best_venue"], r["runner_up_venue"]) == ("b", "a")  # c is excluded by its error rate
    assert r["margin_bps"] == pytest.approx(a - b)


def test_depth_impact_and_single_venue_symbol():
    rows = [("a", 2.0, 0.001, 5_000.0, 50.0, 0.0, 0.0005)]
    costs = venue_costs(*_inputs(rows), notional_usd=20_000)
    assert costs["impact_bps"][0] == pytest.approx(1.0 * 3)  # half spread x (20k / 5k - 1)
    r = route_table(costs, 20_000).row(0, named=True)
    assert r["runner_up_venue"] is None and r["margin_bps"] is None


def test_hour_of_week_buckets_cover_the_weekend():
    """Saturday and Sunday evening land in buckets 143 and 167 (the weekday arithmetic must not overflow)."""
    probes = pl.DataFrame({"venue": "binance", "endpoint": "public_rest", "ts": [datetime(2026, 10, 31, 23),
                                                                                datetime(2026, 11, 1, 23)],
                           "latency_ms": [10.0, 20.0], "ok": True, "error": None},
                          schema_overrides={"ts": pl.Datetime("ms"), "error": pl.Utf8})
    week = latency_heatmap(probes).filter(pl.col("view") == "hour_of_week")
    assert sorted(week["bucket"].to_list()) == [143, 167]


def test_without_probes_the_tapes_delay_prices_latency_and_without_either_it_is_not_charged():
    liq, _, fees = _inputs([("a", 2.0, 0.002, None, 0, 0, 0.0005), ("b", 2.0, 0.002, None, 0, 0, 0.0005)])
    liq = liq.with_columns(pl.col("depth_usd_mean").cast(pl.Float64),
                           pl.col("spread_bps_mean").alias("spread_bps"),
                           pl.lit("abdi_ranaldo_2017").alias("spread_method"))
    tape = pl.DataFrame({"venue": ["a"], "endpoint": ["tape"], "hour": [T0], "p50_ms": [100.0], "error_rate": [0.0]})
    costs = venue_costs(liq, tape, fees, notional_usd=10_000).sort("venue")
    slip = 0.002 / math.sqrt(60) * math.sqrt(0.1) * math.sqrt(2 / math.pi) * 1e4
    a, b = costs.row(0, named=True), costs.row(1, named=True)
    assert a["slippage_bps"] == pytest.approx(slip) and a["cost_bps"] == pytest.approx(5 + 1 + slip)
    assert a["method"] == "spread=abdi_ranaldo_2017;latency=tape_local_minus_exchange_ts"
    assert a["inputs"] == "fee, spread; not charged (input absent): depth impact"
    assert b["slippage_bps"] is None and b["cost_bps"] == pytest.approx(5 + 1)
    assert b["method"] == "spread=abdi_ranaldo_2017;latency=absent"
    assert b["inputs"] == "fee, spread; not charged (input absent): latency slippage, depth impact"
    # probes win over the tape where a venue has both
    probes = tape.with_columns(pl.lit("private_rest").alias("endpoint"), pl.lit(400.0).alias("p50_ms"))
    both = venue_costs(liq, pl.concat([tape, probes]), fees, 10_000).filter(pl.col("venue") == "a").row(0, named=True)
    assert both["method"].endswith("latency=probes") and both["slippage_bps"] == pytest.approx(2 * slip)
    routes = route_table(costs, 10_000)
    assert routes["best_venue"].unique().to_list() == ["b"] and set(routes["method"]) == {b["method"]}
