"""Checks on the risk run's output: the limits go to the runtime and the backtest feeds them, so both block."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from sofia_pipelines.defs.inventory.assets import usd_prices
from sofia_pipelines.defs.risk.compute import backtest_problems, limits_problems, risk_config, risk_limits_frame
from sofia_pipelines.market_inputs import read_gaps
from sofia_pipelines.partitions import daily_partitions, partition_window
from sofia_pipelines.warehouse import read_day, read_window
from sofia_runtime.schemas import MARKETS, RISK_BACKTEST_FILLS, RISK_BACKTEST_PNL, RISK_LIMITS


@dg.asset_check(asset="risk_backtest", blocking=True, partitions_def=daily_partitions,
                description="The book is the sum of the strategies, every row's net = gross - fees + funding - tax, "
                            "and each strategy's fills table holds as many fills as its engine counted.")
def backtest_adds_up(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource) -> dg.AssetCheckResult:
    day = partition_window(context.partition_key)[0].date()
    with warehouse.get_connection() as conn:
        pnl = read_day(conn, "analytics", RISK_BACKTEST_PNL, day)
        fills = read_day(conn, "analytics", RISK_BACKTEST_FILLS, day)
        not_replayed = read_gaps(conn, "risk_backtest", day)
    if pnl.is_empty() and fills.is_empty() and not not_replayed.is_empty():
        return dg.AssetCheckResult(passed=True, metadata={"strategies": 0, "fills": 0},
                                   description="nothing replayed: see risk_backtest_inputs_complete for why")
    problems = backtest_problems(pnl, fills)
    return dg.AssetCheckResult(passed=not problems, description="; ".join(problems) or None,
                               metadata={"strategies": pnl.height - 1, "fills": fills.height})


@dg.asset_check(asset="risk_limits", blocking=True, partitions_def=daily_partitions,
                description="Every market with a price has limits; max_position is the config default times one "
                            "factor within [min_factor, max_factor]; every daily loss limit is positive and within "
                            "the risk budget.")
def limits_within_budget(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource) -> dg.AssetCheckResult:
    config = risk_config()
    start, end = partition_window(context.partition_key)
    with warehouse.get_connection() as conn:
        limits = read_day(conn, "analytics", RISK_LIMITS, start.date())
        defaults = risk_limits_frame(read_window(conn, "analytics", MARKETS), usd_prices(conn, start, end), config)
    problems = limits_problems(limits, defaults, config)
    return dg.AssetCheckResult(passed=not problems, description="; ".join(problems) or None,
                               metadata={"rows": limits.height})
