"""Raw market-data assets: one per table, daily-partitioned, written to DuckDB schema `raw`."""


import dagster as dg
from dagster_duckdb import DuckDBResource

from sofia_pipelines.defs.market_data.sources import check_raw_frame, series_order
from sofia_pipelines.metadata import preview
from sofia_pipelines.partitions import daily_partitions, partition_window
from sofia_pipelines.resources import MarketSourceResource
from sofia_pipelines.warehouse import replace_window
from sofia_runtime.schemas import RAW_TABLES


def _raw_asset(table: str) -> dg.AssetsDefinition:
    schema = RAW_TABLES[table]

    @dg.asset(
        key=["raw", table],
        partitions_def=daily_partitions,
        group_name="market_data",
        kinds={"duckdb", "polars"},
        description=f"raw.{table}: {schema.description}, one UTC day per partition; "
                    "re-materializing a day replaces exactly that day's rows.",
        metadata={"table": f"raw.{table}", "keys": list(schema.keys)},
    )
    def _asset(context: dg.AssetExecutionContext, warehouse: DuckDBResource,
               market_source: MarketSourceResource) -> dg.MaterializeResult:
        source = market_source.get()
        start, end = partition_window(context.partition_key)
        # files the source deliberately does not read (documentation, markets dumps, mark-price candles)
        ignored = getattr(source, "ignored", dict)()
        not_read = {"ignored_files": dg.MetadataValue.md("\n".join(f"- `{p}`: {why}" for p, why in ignored.items()))} \
            if ignored else {}
        if table not in source.provides():
            with warehouse.get_connection() as conn:
                written = replace_window(conn, "raw", schema, schema.empty(), start, end)
            return dg.MaterializeResult(metadata={
                "dagster/row_count": dg.MetadataValue.int(written), "source": source.name,
                "note": f"source {source.name} has no {table}; nothing to write for this day", **not_read})
        df = check_raw_frame(table, source.load(table, start, end).sort(series_order(schema)),
                             f"{source.name} {table} {context.partition_key}")
        with warehouse.get_connection() as conn:
            written = replace_window(conn, "raw", schema, df, start, end)
        metadata = {
            "dagster/row_count": dg.MetadataValue.int(written),
            "source": source.name,
            "preview": preview(df),
            **not_read,
        }
        if not written:
            metadata["note"] = f"source {source.name} has {table}, but no rows on {context.partition_key}"
        else:
            metadata["time_range"] = f"{df['ts'].min()} … {df['ts'].max()}"
            for col in ("venue", "symbol", "pair", "endpoint"):
                if col in df.columns:
                    metadata[f"{col}s"] = ", ".join(sorted(df[col].unique().to_list()))
        return dg.MaterializeResult(metadata=metadata)

    return _asset


raw_candles = _raw_asset("candles")
raw_books = _raw_asset("books")
raw_trades = _raw_asset("trades")
raw_funding = _raw_asset("funding")
raw_latency = _raw_asset("latency")
raw_fx = _raw_asset("fx")
