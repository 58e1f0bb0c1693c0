"""The rebalance LP on a case with a known optimum, an infeasible case, and targets from flow."""

import polars as pl
import pytest

from sofia_pipelines.defs.inventory.compute import inventory_targets, rebalance_asset


def test_known_optimum_uses_the_cheap_route_once():
    current = {"a": 10.0, "b": 0.0, "c": 5.0}
    lower = {"a": 4.0, "b": 4.0, "c": 4.0}
    upper = {"a": 6.0, "b": 6.0, "c": 6.0}
    fees = {"a": ("cheap", 0.1), "c": ("dear", 1.0)}
    plan = rebalance_asset("X", current, lower, upper, fees, prices_usd=1.0)
    # one transfer a -> b of at least 4.1 (b receives >= 4, a keeps <= 6) costs 0.1; nothing is cheaper
    assert plan.select("from_venue", "to_venue", "network").rows() == [("a", "b", "cheap")]
    amount = plan["amount"][0]
    assert 4.1 - 1e-9 <= amount <= 6.1 + 1e-9 and 10 - amount <= 6 + 1e-9
    assert plan["fee"].sum() == pytest.approx(0.1)


def test_already_within_band_needs_nothing():
    assert rebalance_asset("X", {"a": 5.0, "b": 5.0}, {"a": 4, "b": 4}, {"a": 6, "b": 6}, {"a": ("n", 0.1)}, 1.0).is_empty()


def test_infeasible_targets_are_reported_not_crashed_on():
    plan = rebalance_asset("X", {"a": 1.0, "b": 0.0}, {"a": 4.0, "b": 4.0}, {"a": 6.0, "b": 6.0},
                           {"a": ("n", 0.1)}, 1.0)
    row = plan.row(0, named=True)
    assert row["status"] == "infeasible" and "short of lower bound" in row["reason"]


def test_targets_follow_routed_flow_with_a_floor():
    routes = pl.DataFrame({"symbol": ["BTC/USDT"] * 4, "best_venue": ["a", "a", "a", "b"]})
    balances = pl.DataFrame({"venue": ["a", "b", "a", "b"], "asset": ["BTC", "BTC", "USDT", "USDT"],
                             "total": [1.0, 1.0, 100.0, 0.0]})
    t = inventory_targets(routes, balances, min_share=0.1, tolerance=0.1).sort("asset", "venue")
    # 10 % floor each, the remaining 80 % split 3:1
    assert t.filter(pl.col("asset") == "BTC")["target"].to_list() == pytest.approx([2 * (0.1 + 0.8 * 0.75),
                                                                                    2 * (0.1 + 0.8 * 0.25)])
    assert t["target"].sum() == pytest.approx(102.0)
