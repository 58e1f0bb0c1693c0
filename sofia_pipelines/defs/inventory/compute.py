"""Inventory targets from expected flow, and the cheapest rebalance as a mixed-integer linear program.

Each transfer i -> j of an asset pays the source venue's cheapest network withdrawal fee once (a fixed
cost, hence a binary "transfer used" variable). scipy's linprog (HiGHS) solves it with `integrality`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl
from scipy.optimize import linprog

from sofia_runtime.schemas import INVENTORY_TARGETS, TableSchema

REBALANCE_PLAN = TableSchema(
    "rebalance_plan",
    {"asset": pl.Utf8, "from_venue": pl.Utf8, "to_venue": pl.Utf8, "network": pl.Utf8, "amount": pl.Float64,
     "fee": pl.Float64, "status": pl.Utf8, "reason": pl.Utf8},
    keys=("asset", "from_venue", "to_venue"), nullable=frozenset({"from_venue", "to_venue", "network"}),
    time_column=None,
    description="transfers that bring every venue within its target band; one row with status=infeasible per "
                "asset whose targets cannot be met, with the reason")


def _assets_of(symbol: str) -> tuple[str, str]:
    base, rest = symbol.split("/")
    return base, rest.split(":")[0]


def inventory_targets(routes: pl.DataFrame, balances: pl.DataFrame, min_share: float, tolerance: float) -> pl.DataFrame:
    """Target per venue and asset: the asset's total split by each venue's share of routed flow in it, with
    `min_share` of the total reserved for every venue that holds the asset."""
    flow = routes.with_columns(pl.col("symbol").map_elements(lambda s: list(_assets_of(s)),
                                                             return_dtype=pl.List(pl.Utf8)).alias("asset"))
    flow = flow.explode("asset").group_by("asset", pl.col("best_venue").alias("venue")).len()
    totals = balances.group_by("asset").agg(pl.col("total").sum().alias("asset_total"),
                                            pl.col("venue").n_unique().alias("n_venues"))
    df = (balances.select("venue", "asset").join(flow, on=["venue", "asset"], how="left")
          .with_columns(pl.col("len").fill_null(0))
          .with_columns((pl.col("len") / pl.col("len").sum().over("asset")).fill_nan(0).alias("share"))
          .join(totals, on="asset"))
    floor = pl.min_horizontal(pl.lit(min_share), 1 / pl.col("n_venues"))
    target = pl.col("asset_total") * (floor + (1 - floor * pl.col("n_venues")) * pl.col("share"))
    # an asset no route uses is split evenly
    target = pl.when(pl.col("len").sum().over("asset") == 0).then(pl.col("asset_total") / pl.col("n_venues")) \
        .otherwise(target)
    out = df.with_columns(target.alias("target")).with_columns(
        (pl.col("target") * (1 - tolerance)).alias("lower"), (pl.col("target") * (1 + tolerance)).alias("upper"))
    return INVENTORY_TARGETS.conform(out.sort("asset", "venue"), "inventory_targets")


def rebalance_asset(asset: str, current: Mapping[str, float], lower: Mapping[str, float], upper: Mapping[str, float],
                    fees: Mapping[str, tuple[str, float]], prices_usd: float) -> pl.DataFrame:
    """Cheapest transfers of one asset. `fees[venue]` = (network, fee in asset units) for withdrawing from it."""
    venues = sorted(current)
    pairs = [(i, j) for i in venues for j in venues if i != j and i in fees]
    if all(lower[v] <= current[v] <= upper[v] for v in venues):
        return REBALANCE_PLAN.empty()
    total = sum(current.values())
    n = len(pairs)
    if n == 0:
        return REBALANCE_PLAN.conform(pl.DataFrame([{
            "asset": asset, "from_venue": None, "to_venue": None, "network": None, "amount": 0.0, "fee": 0.0,
            "status": "infeasible", "reason": "no venue holding it has a withdrawal route in withdrawal_fees"}]),
            "rebalance_plan")
    # variables: x (amount withdrawn per pair) then y (1 when the pair is used)
    cost = np.concatenate([np.zeros(n), [fees[i][1] * prices_usd for i, _ in pairs]])
    a_ub, b_ub = [], []
    for v in venues:  # final balance within [lower, upper]
        row = np.zeros(2 * n)
        for k, (i, j) in enumerate(pairs):
            if i == v:
                row[k] -= 1
            if j == v:
                row[k] += 1
                row[n + k] -= fees[i][1]
        a_ub.append(row)
        b_ub.append(upper[v] - current[v])
        a_ub.append(-row)
        b_ub.append(current[v] - lower[v])
    for k in range(n):  # x <= total * y, and a used transfer moves more than its fee
        row = np.zeros(2 * n)
        row[k], row[n + k] = 1, -total
        a_ub.append(row)
        b_ub.append(0.0)
        row = np.zeros(2 * n)
        row[k], row[n + k] = -1, fees[pairs[k][0]][1]
        a_ub.append(row)
        b_ub.append(0.0)
    result = linprog(cost, A_ub=np.array(a_ub), b_ub=np.array(b_ub),
                     bounds=[(0, total)] * n + [(0, 1)] * n, integrality=[0] * n + [1] * n, method="highs")
    if result.status != 0:
        short = {v: round(lower[v] - current[v], 8) for v in venues if current[v] < lower[v]}
        return REBALANCE_PLAN.conform(pl.DataFrame([{
            "asset": asset, "from_venue": None, "to_venue": None, "network": None, "amount": 0.0, "fee": 0.0,
            "status": "infeasible",
            "reason": f"{result.message.strip()}; short of lower bound: {short}, total {total:g} after fees"}]),
            "rebalance_plan")
    rows = [{"asset": asset, "from_venue": i, "to_venue": j, "network": fees[i][0], "amount": float(result.x[k]),
             "fee": fees[i][1], "status": "planned", "reason": "brings every venue within its target band"}
            for k, (i, j) in enumerate(pairs) if result.x[n + k] > 0.5]
    return REBALANCE_PLAN.conform(pl.DataFrame(rows), "rebalance_plan")


def rebalance_plan(targets: pl.DataFrame, balances: pl.DataFrame, withdrawal: pl.DataFrame,
                   prices_usd: Mapping[str, float]) -> pl.DataFrame:
    cheapest = withdrawal.sort("fee").group_by("venue", "asset", maintain_order=True).first()
    plans = []
    for asset in sorted(targets["asset"].unique()):
        t = targets.filter(pl.col("asset") == asset)
        b = dict(balances.filter(pl.col("asset") == asset).select("venue", "total").iter_rows())
        fees = {r["venue"]: (r["network"], r["fee"]) for r in cheapest.filter(pl.col("asset") == asset).iter_rows(named=True)}
        # the price scales every cost of one asset alike, so an asset without a USD price has the same optimum
        plans.append(rebalance_asset(asset, {v: b.get(v, 0.0) for v in t["venue"]},
                                     dict(zip(t["venue"], t["lower"])), dict(zip(t["venue"], t["upper"])),
                                     fees, prices_usd.get(asset, 1.0)))
    return pl.concat(plans) if plans else REBALANCE_PLAN.empty()
