"""The serving snapshot: the end of the graph, handed to the runtime as files (see sofia_runtime.snapshot)."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from sofia_pipelines.partitions import daily_partitions, partition_window
from sofia_pipelines.warehouse import read_day, read_window
from sofia_runtime import paths
from sofia_runtime.schemas import RAW_TABLES, REPLAY_TABLES, SERVING_TABLES
from sofia_runtime.snapshot import SnapshotError, load_current, write_snapshot

UNPARTITIONED = ("fee_table", "withdrawal_fees", "tax_rules", "markets")
KEEP_SNAPSHOTS = 10


@dg.asset(key="serving_snapshot", partitions_def=daily_partitions, group_name="serving", kinds={"parquet"},
          deps=[dg.AssetKey(name) for name in SERVING_TABLES] + [dg.AssetKey(["raw", t]) for t in
                                                                  ("books", "trades", "latency", "funding")],
          description="Writes the runtime-facing tables and the partition's market data for replay as a snapshot "
                      "(Parquet per table, manifest with hashes and row counts) and switches CURRENT to it "
                      f"atomically; keeps the last {KEEP_SNAPSHOTS}.")
def serving_snapshot(context: dg.AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
    start, end = partition_window(context.partition_key)
    with warehouse.get_connection() as conn:
        tables = {name: read_window(conn, "analytics", schema) if name in UNPARTITIONED
                  else read_day(conn, "analytics", schema, start.date()) for name, schema in SERVING_TABLES.items()}
        for name in REPLAY_TABLES:
            tables[name] = read_window(conn, "raw", RAW_TABLES[name.removeprefix("replay_")], start, end)
    snapshot_id = write_snapshot(tables, context.partition_key, paths.serving_dir(), keep=KEEP_SNAPSHOTS)
    counts = {name: df.height for name, df in tables.items()}
    return dg.MaterializeResult(metadata={
        "snapshot_id": snapshot_id, "path": str(paths.serving_dir() / snapshot_id),
        "dagster/row_count": dg.MetadataValue.int(sum(counts.values())),
        "tables": dg.MetadataValue.md("\n".join(f"- {k}: {v:,} rows" for k, v in counts.items()))})


@dg.asset_check(asset="serving_snapshot", blocking=True, partitions_def=daily_partitions,
                description="CURRENT names a snapshot whose every table matches its manifest hash, rows and schema.")
def snapshot_hashes_match(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    try:
        snapshot = load_current(paths.serving_dir())
    except SnapshotError as exc:
        return dg.AssetCheckResult(passed=False, description=str(exc))
    empty = [n for n in ("fee_table", "route_table", "fill_model", "markets") if snapshot.tables[n].is_empty()]
    return dg.AssetCheckResult(passed=not empty, metadata={"snapshot_id": snapshot.snapshot_id,
                                                           "empty_required_tables": str(empty)})
