"""The serving snapshot: the end of the graph, handed to the runtime as files (see sofia_runtime.snapshot).

The asset writes the snapshot's folder, reads it back as the runtime will (manifest, hashes, rows, schema) and
judges it with the runtime's own rule (sofia_runtime.tradable): only when that passes does CURRENT switch to it.
A refused snapshot stays on disk for inspection, CURRENT keeps naming the previous one, and the blocking check
says why. Empty tables some strategies need (route_table, fill_model, …) are a WARN check, quoting the reason
their producer gave where it gave one.
"""

import dagster as dg
from dagster_duckdb import DuckDBResource

from sofia_pipelines.partitions import daily_partitions, partition_window
from sofia_pipelines.warehouse import read_day, read_window
from sofia_runtime import paths
from sofia_runtime.schemas import RAW_TABLES, REPLAY_TABLES, SERVING_TABLES
from sofia_runtime.snapshot import SnapshotError, current_id, switch_current, validate_snapshot, write_snapshot_folder

UNPARTITIONED = ("fee_table", "withdrawal_fees", "tax_rules", "markets")
KEEP_SNAPSHOTS = 10
PUBLISHABLE = "snapshot_publishable"
COMPLETE = "snapshot_tables_complete"
# the metadata keys in which an upstream asset says why its table is empty (the first one present is quoted)
REASON_KEYS = ("empty_reason", "reason", "method")


def _empty_reasons(instance: dg.DagsterInstance, partition: str, empty: list[str]) -> dict[str, str]:
    """Why each empty upstream table is empty, from its latest materialization's metadata for this partition (or
    its latest, unpartitioned); tables whose producer said nothing are left out."""
    out = {}
    for name in empty:
        key = dg.AssetKey(["raw", name.removeprefix("replay_")]) if name.startswith("replay_") else dg.AssetKey(name)
        for partitions in ([partition], None):
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, asset_partitions=partitions), limit=1).records
            if records:
                metadata = records[0].asset_materialization.metadata
                reason = next((metadata[k] for k in REASON_KEYS if k in metadata), None)
                if reason is not None:
                    out[name] = str(getattr(reason, "value", reason))
                break
    return out


@dg.asset(key="serving_snapshot", partitions_def=daily_partitions, group_name="serving", kinds={"parquet"},
          deps=[dg.AssetKey(name) for name in SERVING_TABLES] + [dg.AssetKey(["raw", t]) for t in
                                                                  ("books", "trades", "latency", "funding")],
          check_specs=[
              dg.AssetCheckSpec(PUBLISHABLE, asset="serving_snapshot", blocking=True,
                                description="The snapshot read back matches its manifest (hashes, rows, schema) and "
                                            "has at least one instrument with a market, a selected fee row and risk "
                                            "limits; only then is CURRENT switched to it."),
              dg.AssetCheckSpec(COMPLETE, asset="serving_snapshot",
                                description="WARN: tables some strategies or instruments need are empty (the runtime "
                                            "refuses those and says why); the reason their producer gave is quoted.")],
          description="Writes the runtime-facing tables and the partition's market data for replay as a snapshot "
                      "(Parquet per table, manifest with hashes and row counts), validates it and only then switches "
                      f"CURRENT to it atomically; keeps the last {KEEP_SNAPSHOTS}.")
def serving_snapshot(context: dg.AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
    start, end = partition_window(context.partition_key)
    with warehouse.get_connection() as conn:
        tables = {name: read_window(conn, "analytics", schema) if name in UNPARTITIONED
                  else read_day(conn, "analytics", schema, start.date()) for name, schema in SERVING_TABLES.items()}
        for name in REPLAY_TABLES:
            tables[name] = read_window(conn, "raw", RAW_TABLES[name.removeprefix("replay_")], start, end)
    serving = paths.serving_dir()
    serving.mkdir(parents=True, exist_ok=True)
    counts = {name: df.height for name, df in tables.items()}
    reasons = _empty_reasons(context.instance, context.partition_key, [n for n, c in counts.items() if c == 0])
    snapshot_id = write_snapshot_folder(tables, context.partition_key, serving)
    del tables
    try:
        _, readiness = validate_snapshot(serving, snapshot_id, reasons)
        refusals, warnings, tradable = readiness.refusals, readiness.warnings, readiness.tradable
    except SnapshotError as exc:
        refusals, warnings, tradable = [f"does not read back: {exc}"], [], []
    published = not refusals
    if published:
        switch_current(serving, snapshot_id, keep=KEEP_SNAPSHOTS)
    try:
        current = current_id(serving)
    except SnapshotError:
        current = None
    verdict = ("published: CURRENT names it" if published else
               f"refused, CURRENT still names {current or 'nothing'}: " + "; ".join(refusals))
    context.log.log("info" if published else "error", f"serving snapshot {snapshot_id} {verdict}")
    for warning in warnings:
        context.log.warning(f"serving snapshot {snapshot_id}: {warning}")
    common = {"snapshot_id": snapshot_id, "current": str(current)}
    return dg.MaterializeResult(
        metadata={
            **common, "published": published, "verdict": verdict, "path": str(serving / snapshot_id),
            "tradable_instruments": dg.MetadataValue.int(len(tradable)),
            "dagster/row_count": dg.MetadataValue.int(sum(counts.values())),
            "tables": dg.MetadataValue.md("\n".join(f"- {k}: {v:,} rows" for k, v in counts.items())),
            "warnings": dg.MetadataValue.md("\n".join(f"- {w}" for w in warnings) or "none")},
        check_results=[
            dg.AssetCheckResult(check_name=PUBLISHABLE, passed=published,
                                description=verdict if not published else None,
                                metadata={**common, "refusals": dg.MetadataValue.md(
                                    "\n".join(f"- {r}" for r in refusals) or "none"),
                                    "tradable_instruments": len(tradable)}),
            dg.AssetCheckResult(check_name=COMPLETE, passed=not warnings, severity=dg.AssetCheckSeverity.WARN,
                                description="; ".join(warnings) or None,
                                metadata={**common, "empty_tables": str(sorted(n for n, c in counts.items() if c == 0)),
                                          "reasons": dg.MetadataValue.json(reasons)})])
