"""SLOs of the trading runtime (feature N): the SLIs measured from the audit journal against the targets of
config/slo.yaml, with the remaining error budget and the short- and long-window burn rates."""

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import dagster as dg
import duckdb
import polars as pl
from dagster_duckdb import DuckDBResource
from pydantic import Field

from sofia_pipelines.defs.slo.compute import (SNAPSHOT_KINDS, STATE_KINDS, exhausted, load_slo_config, parse_as_of,
                                              slo_report as compute_report, snapshot_created_from_id)
from sofia_pipelines.metadata import markdown_table
from sofia_pipelines.warehouse import replace_rows, table_exists
from sofia_runtime import paths
from sofia_runtime.journal import journal_files
from sofia_runtime.schemas import RECONCILIATION, SLO_REPORT, TS
from sofia_runtime.snapshot import SnapshotError, current_id

GROUP = "slo"
CHECK = "error_budgets_left"


class SloReportConfig(dg.Config):
    as_of: Optional[str] = Field(None, description="evaluate as of this time (ISO 8601, UTC when no zone); "
                                                   "default now. Use it for a post-mortem of a past window.")


_EVENT_COLUMNS = "runtime_id, seq, ts, kind, payload"


def read_journal(conn: duckdb.DuckDBPyConnection, lo: datetime, hi: datetime) -> pl.DataFrame:
    """audit.events in [lo, hi], plus each runtime's last record, last start/snapshot record and last
    start/stop/standby/lease record before lo: whether it was running, and on which snapshot, when the window
    opened."""
    schema = {"runtime_id": pl.Utf8, "seq": pl.Int64, "ts": TS, "kind": pl.Utf8, "payload": pl.Utf8}
    if not table_exists(conn, "audit", "events"):
        return pl.DataFrame(schema=schema)
    before = (f"SELECT {_EVENT_COLUMNS} FROM audit.events WHERE ts < ? {{kinds}} "
              f"QUALIFY row_number() OVER (PARTITION BY runtime_id ORDER BY seq DESC) = 1")
    prefetch = " UNION ".join(f"({before.format(kinds=kinds)})" for kinds in (
        "", f"AND kind IN {tuple(SNAPSHOT_KINDS)}", f"AND kind IN {tuple(STATE_KINDS)}"))
    sql = (f"SELECT {_EVENT_COLUMNS} FROM audit.events WHERE ts >= ? AND ts <= ? "
           f"UNION ALL ({prefetch}) ORDER BY runtime_id, seq")
    df = conn.sql(sql, params=[lo, hi, lo, lo, lo]).pl()
    return df.cast(schema) if df.height else pl.DataFrame(schema=schema)


def read_reconciliation(conn: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """audit.reconciliation with `ts`: when the item's order or fill record was journaled by one of the account's
    runtimes (null if no journal has it). A runtime's account is the `venue_account` of its last `start` record,
    else its runtime id (as sofia_runtime.reconcile.account_of decides)."""
    if not table_exists(conn, "audit", "reconciliation"):
        return RECONCILIATION.empty().with_columns(pl.lit(None, dtype=TS).alias("ts"))
    journaled = "" if not table_exists(conn, "audit", "events") else """
        LEFT JOIN (
            WITH accounts AS (
                SELECT runtime_id, coalesce(arg_max(coalesce(json_extract_string(payload, '$.venue_account'),
                                                             runtime_id), seq) FILTER (WHERE kind = 'start'),
                                            runtime_id) AS account
                FROM audit.events GROUP BY runtime_id)
            SELECT account, CASE kind WHEN 'order' THEN 'order' ELSE 'fill' END AS item,
                   json_extract_string(payload, CASE kind WHEN 'order' THEN '$.client_order_id'
                                                         ELSE '$.trade_id' END) AS id, min(ts) AS ts
            FROM audit.events JOIN accounts USING (runtime_id) WHERE kind IN ('order', 'fill') GROUP BY ALL
        ) j USING (account, item, id)"""
    ts = "j.ts" if journaled else "NULL::TIMESTAMP"
    df = conn.sql(f"SELECT r.*, {ts} AS ts FROM audit.reconciliation r {journaled}").pl()
    return RECONCILIATION.conform(df, "audit.reconciliation").with_columns(df["ts"].cast(TS))


def _last_seq(path: Path) -> Optional[int]:
    """The seq of the file's last complete record, reading only its tail."""
    with path.open("rb") as f:
        size = f.seek(0, 2)
        for span in (1 << 16, size):
            f.seek(max(0, size - span))
            lines = f.read().split(b"\n")[:-1]  # the piece after the last newline is not a complete record
            if span < size:
                lines = lines[1:]  # the first piece may start mid-record
            for raw in reversed(lines):
                try:
                    return int(json.loads(raw)["seq"])
                except (ValueError, KeyError, TypeError):
                    continue
            if span >= size:
                break
    return None


def runtimes_behind(conn: duckdb.DuckDBPyConnection, as_of: datetime) -> set[str]:
    """Runtimes whose journal on disk has records after the last one ingested, when that one is before as_of."""
    ingested = {} if not table_exists(conn, "audit", "events") else {
        r: (seq, ts) for r, seq, ts in conn.sql("SELECT runtime_id, max(seq), max(ts) FROM audit.events "
                                                "GROUP BY runtime_id").fetchall()}
    behind = set()
    for runtime_id, (seq, ts) in ingested.items():
        for path in reversed(journal_files(paths.audit_dir() / runtime_id)):
            on_disk = _last_seq(path)
            if on_disk is not None:
                if on_disk > seq and ts <= as_of:
                    behind.add(runtime_id)
                break
    return behind


def snapshot_created_at(snapshot_id: str) -> Optional[datetime]:
    """From the snapshot's manifest while it is still kept under <data>/serving, else from its id."""
    manifest = paths.serving_dir() / snapshot_id / "manifest.json"
    try:
        created = datetime.fromisoformat(json.loads(manifest.read_text())["created_at"])
        return created.astimezone(timezone.utc).replace(tzinfo=None) if created.tzinfo else created
    except (OSError, ValueError, KeyError):
        return snapshot_created_from_id(snapshot_id)


def current_snapshot() -> Optional[tuple[str, datetime, str]]:
    try:
        sid = current_id(paths.serving_dir())
        manifest = json.loads((paths.serving_dir() / sid / "manifest.json").read_text())
    except (SnapshotError, OSError, ValueError):
        return None
    created = snapshot_created_at(sid)
    return (sid, created, manifest.get("partition", "?")) if created else None


@dg.asset(key="slo_report", group_name=GROUP, kinds={"duckdb"},
          deps=[dg.AssetKey("audit_events"), dg.AssetKey("reconciliation")],
          check_specs=[dg.AssetCheckSpec(CHECK, asset="slo_report", blocking=False,
                                         description="No SLO has spent its error budget (status exhausted).")],
          description="Per SLI (availability, decision p99, ack p95, reconciliation, snapshot freshness, journal "
                      "durability): measured value, target, good/total over the rolling window, remaining error "
                      "budget, short- and long-window burn rates and status, from the audit journal and "
                      "config/slo.yaml (audit.slo_report, one set of rows per evaluation).")
def slo_report(context: dg.AssetExecutionContext, config: SloReportConfig,
               warehouse: DuckDBResource) -> dg.MaterializeResult:
    slo_config = load_slo_config()
    as_of = parse_as_of(config.as_of)
    lo = as_of - slo_config.longest_window()
    with warehouse.get_connection() as conn:
        events = read_journal(conn, lo, as_of)
        reconciliation = read_reconciliation(conn)
        behind = runtimes_behind(conn, as_of)
        result = compute_report(events, reconciliation, slo_config, as_of, snapshot_created_at, current_snapshot(),
                                behind)
        replace_rows(conn, "audit", SLO_REPORT, result.report, where="evaluated_at = ?", params=[as_of])
    report = result.report
    spent = exhausted(report)
    shown = report.select("sli", "status", "measured", "unit", "target", "good", "total", "remaining_budget",
                          "burn_rate_short", "burn_rate_long")
    by_status = dict(report.group_by("status").len().iter_rows())
    context.log.info("SLOs as of %s: %s", as_of, by_status)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(report.height), "as_of": str(as_of),
            "journal records read": events.height, "statuses": by_status,
            "runtimes not fully ingested": sorted(behind),
            "report": dg.MetadataValue.md(markdown_table(shown)),
            "objectives": dg.MetadataValue.md(markdown_table(report.select("sli", "objective", "detail"))),
            "outages": dg.MetadataValue.md(markdown_table(result.outages, limit=20) if result.outages.height
                                           else "none in the window"),
            "availability by runtime": dg.MetadataValue.md(markdown_table(result.per_runtime, limit=50)
                                                           if result.per_runtime.height else "none in the window"),
        },
        check_results=[dg.AssetCheckResult(
            check_name=CHECK, passed=not spent, description="\n".join(spent) if spent else None,
            metadata={"exhausted": sorted(report.filter(pl.col("status") == "exhausted")["sli"].to_list()),
                      "burning": sorted(report.filter(pl.col("status") == "burning")["sli"].to_list())})])


slo_job = dg.define_asset_job("slo_report_job", selection=[slo_report])
# Availability keeps burning while a crashed runtime stays down, with no new journal record to trigger a run.
slo_schedule = dg.ScheduleDefinition(name="slo_hourly", job=slo_job, cron_schedule="10 * * * *",
                                     execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING,
                                     description="Re-evaluates the SLOs and their error budgets every hour.")
