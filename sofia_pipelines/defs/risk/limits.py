"""Risk limits per venue and symbol from config/risk.yaml, in base units at the day's prices."""

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from sofia_pipelines.defs.fees.compute import load_yaml
from sofia_pipelines.defs.inventory.assets import usd_prices
from sofia_pipelines.metadata import preview
from sofia_pipelines.partitions import daily_partitions, partition_window
from sofia_pipelines.warehouse import read_window, replace_day
from sofia_runtime.schemas import MARKETS, RISK_LIMITS


def risk_limits_frame(markets: pl.DataFrame, prices_usd: dict[str, float], config: dict) -> pl.DataFrame:
    d = config["default"]
    venues = markets["venue"].n_unique()
    # no single venue-symbol may lose more than its share of the book's budget
    loss = min(float(d["daily_loss_limit_usd"]), float(config["risk_budget_usd"]) / max(venues, 1))
    rows = []
    for m in markets.iter_rows(named=True):
        price = prices_usd.get(m["base"])
        if price is None:
            continue
        rows.append({"venue": m["venue"], "symbol": m["symbol"], "max_position": d["max_position_usd"] / price,
                     "max_notional_usd": float(d["max_notional_usd"]), "max_open_orders": int(d["max_open_orders"]),
                     "daily_loss_limit_usd": loss})
    return RISK_LIMITS.conform(pl.DataFrame(rows), "risk_limits")


@dg.asset(key="risk_limits", partitions_def=daily_partitions, group_name="risk", kinds={"duckdb", "yaml"},
          deps=[dg.AssetKey("markets"), dg.AssetKey(["raw", "books"])],
          description="Max position (base units at the day's prices), notional, open orders and daily loss per "
                      "venue and symbol, from config/risk.yaml and the risk budget.")
def risk_limits_asset(context: dg.AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
    start, end = partition_window(context.partition_key)
    with warehouse.get_connection() as conn:
        limits = risk_limits_frame(read_window(conn, "analytics", MARKETS), usd_prices(conn, start, end),
                                   load_yaml("risk.yaml"))
        replace_day(conn, "analytics", RISK_LIMITS, limits, start.date())
    return dg.MaterializeResult(metadata={"dagster/row_count": dg.MetadataValue.int(limits.height),
                                          "preview": preview(limits)})
