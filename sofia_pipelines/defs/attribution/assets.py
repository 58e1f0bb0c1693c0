"""Profit attribution asset (feature J): the runtimes' P&L split into edge, slippage, inventory mark-to-market,
funding, fees, transaction tax and profit tax, recomputed whole from the ingested journal whenever it changes."""

import dagster as dg
import duckdb
import polars as pl
from dagster_duckdb import DuckDBResource

from sofia_pipelines.defs.attribution.charts import strategy_figure, waterfall_figure
from sofia_pipelines.defs.attribution.compute import (COMPONENTS, component_totals, profit_attribution,
                                                      strategy_days)
from sofia_pipelines.metadata import markdown_table, png_markdown
from sofia_pipelines.warehouse import read_window, replace_rows, table_exists
from sofia_runtime.schemas import AUDIT_EVENTS, FILLS, NET_PNL_QUARTERS, PROFIT_ATTRIBUTION, TAX_RULES
from sofia_runtime.tax import rules_from_table

GROUP = "attribution"


def attribution_inputs(conn: duckdb.DuckDBPyConnection) -> dict:
    """What the attribution reads: the fills, the records that explain them (starts, orders, passed decisions,
    funding), the day's last book mid of each traded market day, USD/TRY, tax rules and the quarterly taxes."""
    fills = read_window(conn, "audit", FILLS)
    events = AUDIT_EVENTS.empty()
    if table_exists(conn, "audit", "events"):
        events = AUDIT_EVENTS.conform(conn.sql(
            "SELECT * FROM audit.events WHERE kind IN ('start', 'order', 'funding') "
            "OR (kind = 'decision' AND json_extract_string(payload, '$.result') = 'passed')").pl(), "audit.events")
    marks = pl.DataFrame(schema={"venue": pl.Utf8, "symbol": pl.Utf8, "day": pl.Date, "mark": pl.Float64})
    if fills.height and table_exists(conn, "raw", "books"):
        days = fills.select(pl.coalesce("market_ts", "ts").dt.date().unique())[:, 0].to_list()
        marks = conn.sql(
            "SELECT venue, symbol, CAST(ts AS DATE) AS day, arg_max((bid + ask) / 2, ts) AS mark FROM raw.books "
            f"WHERE CAST(ts AS DATE) IN ({', '.join('?' for _ in days)}) GROUP BY ALL", params=days).pl()
    fx = conn.sql("SELECT pair, ts, rate FROM raw.fx WHERE pair = 'USD/TRY'").pl() \
        if table_exists(conn, "raw", "fx") else None
    rules = rules_from_table(read_window(conn, "analytics", TAX_RULES)) \
        if table_exists(conn, "analytics", "tax_rules") else []
    quarters = read_window(conn, "audit", NET_PNL_QUARTERS) if table_exists(conn, "audit", "net_pnl_quarters") else None
    return {"fills": fills, "events": events, "marks": marks, "fx": fx, "rules": rules, "quarters": quarters}


@dg.asset(key="profit_attribution", group_name=GROUP, kinds={"duckdb", "polars"},
          deps=[dg.AssetKey("fills"), dg.AssetKey("audit_events"), dg.AssetKey("net_pnl"), dg.AssetKey("tax_rules"),
                dg.AssetKey(["raw", "books"]), dg.AssetKey(["raw", "fx"])],
          automation_condition=dg.AutomationCondition.eager(),
          description="The runtimes' P&L by strategy x venue x symbol x market day in USD, split into edge captured "
                      "(maker fills vs the decision's mid), slippage (taker fills vs the decision's mid), inventory "
                      "mark-to-market (to the day's last book mid), funding, fees, transaction tax and the quarter's "
                      "profit tax allocated pro rata to positive realized P&L; components sum to net exactly.")
def profit_attribution_asset(warehouse: DuckDBResource) -> dg.MaterializeResult:
    with warehouse.get_connection() as conn:
        inputs = attribution_inputs(conn)
        attribution, notes = profit_attribution(**inputs)
        replace_rows(conn, "analytics", PROFIT_ATTRIBUTION, attribution)
    metadata = {"dagster/row_count": dg.MetadataValue.int(attribution.height), **{k: v for k, v in notes.items()}}
    if attribution.height:
        totals = component_totals(attribution)
        metadata.update({f"total {c}": dg.MetadataValue.float(float(v)) for c, v in totals.items()})
        by_strategy = (attribution.group_by("strategy").agg(pl.col([*COMPONENTS, "net_usd"]).sum())
                       .sort("strategy").with_columns(pl.col(pl.Decimal).cast(pl.Float64)))
        metadata["by strategy (USD)"] = dg.MetadataValue.md(markdown_table(by_strategy))
        metadata["waterfall"] = png_markdown(waterfall_figure(totals))
        metadata["P&L by strategy over time"] = png_markdown(strategy_figure(strategy_days(attribution)))
    else:
        metadata["note"] = "no fills in audit.fills yet: run a runtime and ingest its journal"
    return dg.MaterializeResult(metadata=metadata)
