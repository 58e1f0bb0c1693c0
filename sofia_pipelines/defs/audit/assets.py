"""The runtime's audit journal back in Dagster (feature G): records, fills and balances per journal day,
reconciliation against the venues' own records, net P&L on the fills; the chain and the reconciliation are
blocking checks. A sensor notices new journal records and materializes them."""

import json
import os
from datetime import date, datetime, timedelta, timezone

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from sofia_pipelines.defs.audit.compute import (INGESTED_HEADS, all_journal_files, balances_frame, events_frame,
                                                fills_frame, heads_frame, journal_files_for_day, journal_problems,
                                                live_venue_record, net_pnl_frames, reconciliation_frame)
from sofia_pipelines.metadata import markdown_table, preview
from sofia_pipelines.partitions import partition_window
from sofia_pipelines.warehouse import read_window, replace_rows, replace_window, table_exists
from sofia_runtime import liveness, paths
from sofia_runtime.reconcile import account_of, paper_venue_record
from sofia_runtime.schemas import (AUDIT_EVENTS, BALANCES, FILLS, NET_PNL_DAYS, NET_PNL_QUARTERS, RAW_TABLES,
                                   RECONCILIATION, TAX_RULES)
from sofia_runtime.tax import rules_from_table

GROUP = "audit"
# The journal is written by wall-clock day, today included, unlike the market data's completed days.
journal_days = dg.DailyPartitionsDefinition(start_date=os.environ.get("SOFIA_JOURNAL_START", "2026-01-01"),
                                            timezone="UTC", end_offset=1)


@dg.asset(key="audit_events", partitions_def=journal_days, group_name=GROUP, kinds={"duckdb"},
          description="Every record of every runtime's journal file for the day (audit.events), as written: "
                      "seq, ts, kind, canonical payload, prev_hash, hash, file and line.")
def audit_events(context: dg.AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
    start, end = partition_window(context.partition_key)
    files = journal_files_for_day(paths.audit_dir(), start.date())
    runtimes = {f.parent.name for f in files}
    with warehouse.get_connection() as conn:
        heads = read_window(conn, "audit", INGESTED_HEADS)
    # verified before anything is written: a journal that fails keeps the rows ingested before
    broken = [m for kind, m in journal_problems(paths.audit_dir(), heads, _running, runtimes) if kind == "broken"]
    if broken:
        raise dg.Failure(description=f"journal refused, nothing ingested for {context.partition_key}: "
                                     + "; ".join(broken), metadata={"problems": broken})
    events = events_frame(files)
    with warehouse.get_connection() as conn:
        replace_window(conn, "audit", AUDIT_EVENTS, events, start, end)
        ingested = heads_frame(paths.audit_dir(), datetime.now(timezone.utc).replace(tzinfo=None))
        ingested = ingested.filter(pl.col("runtime_id").is_in(sorted(runtimes)))
        kept = heads.filter(~pl.col("runtime_id").is_in(sorted(runtimes)))
        replace_rows(conn, "audit", INGESTED_HEADS, pl.concat([kept, ingested]))
    kinds = events.group_by("kind").len().sort("len", descending=True)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(events.height), "files": [str(f) for f in files],
        "runtimes": sorted(events["runtime_id"].unique().to_list()),
        "records by kind": dg.MetadataValue.md(markdown_table(kinds))})


@dg.asset(key="fills", partitions_def=journal_days, group_name=GROUP, kinds={"duckdb"}, deps=[audit_events],
          description="The day's fills as the runtimes journaled them (audit.fills), money as exact decimals.")
def fills(context: dg.AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
    start, end = partition_window(context.partition_key)
    with warehouse.get_connection() as conn:
        events = read_window(conn, "audit", AUDIT_EVENTS, start, end)
        frame = fills_frame(events)
        replace_window(conn, "audit", FILLS, frame, start, end)
        balances = balances_frame(events)
        replace_window(conn, "audit", BALANCES, balances, start, end)
    return dg.MaterializeResult(metadata={"dagster/row_count": dg.MetadataValue.int(frame.height),
                                          "balances rows": balances.height, "preview": preview(frame)})


def _venue_record(account, venue, view):
    if view.mode == "live":
        return live_venue_record(venue, view, os.environ)
    return paper_venue_record(paths.data_dir() / "paper_venue" / account / f"{venue}.jsonl")


@dg.asset(key="reconciliation", group_name=GROUP, kinds={"duckdb"}, deps=[fills],
          automation_condition=dg.AutomationCondition.eager(),
          description="Every runtime order and fill matched against the venue's own record (the paper venue's "
                      "record file; a live venue's fetch_order / fetch_my_trades): matched, missing at the venue, "
                      "missing in the journal, or mismatched with the fields named.")
def reconciliation(warehouse: DuckDBResource) -> dg.MaterializeResult:
    with warehouse.get_connection() as conn:
        events = read_window(conn, "audit", AUDIT_EVENTS)
        result = reconciliation_frame(events, _venue_record)
        replace_rows(conn, "audit", RECONCILIATION, result)
    matched = result.filter(pl.col("status") == "matched").height
    rate = matched / result.height if result.height else 1.0
    breaks = result.filter(pl.col("status") != "matched")
    summary = result.group_by("account", "item", "status").len().sort("account", "item", "status")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(result.height), "matched": matched,
        "reconciliation_rate": dg.MetadataValue.float(rate), "breaks": breaks.height,
        "summary": dg.MetadataValue.md(markdown_table(summary)),
        "first breaks": dg.MetadataValue.md(markdown_table(breaks.head(20)) if breaks.height else "none")})


@dg.asset_check(asset=reconciliation, blocking=True,
                description="Every order and fill of every runtime matches the venue's record (100 %).")
def reconciliation_complete(warehouse: DuckDBResource) -> dg.AssetCheckResult:
    with warehouse.get_connection() as conn:
        result = read_window(conn, "audit", RECONCILIATION)
    breaks = result.filter(pl.col("status") != "matched")
    rate = 1.0 - breaks.height / result.height if result.height else 1.0
    first = breaks.row(0, named=True) if breaks.height else None
    return dg.AssetCheckResult(
        passed=breaks.is_empty(), metadata={"reconciliation_rate": rate, "breaks": breaks.height},
        description=None if first is None else
        f"{breaks.height} break(s); first: {first['account']} {first['item']} {first['id']} at {first['venue']}: "
        f"{first['status']} ({first['detail']})")


@dg.asset_check(asset=audit_events, blocking=True, partitions_def=journal_days,
                description="Every runtime's hash chain verifies across all its journal files (a changed byte, a "
                            "deleted or reordered record is named with file and line).")
def journal_chain_intact(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource) -> dg.AssetCheckResult:
    files = all_journal_files(paths.audit_dir())
    with warehouse.get_connection() as conn:
        heads = read_window(conn, "audit", INGESTED_HEADS)
    problems = [m for _, m in journal_problems(paths.audit_dir(), heads, _running)]
    return dg.AssetCheckResult(passed=not problems, description="; ".join(problems) if problems else None,
                               metadata={"files": len(files), "problems": len(problems)})


def _running(runtime_id: str) -> bool:
    """The runtime holds its lock: a torn last line may be a record it is writing."""
    return liveness.lock_holder(runtime_id) is not None


def _usd_try(fx: pl.DataFrame):
    fx = fx.filter(pl.col("pair") == "USD/TRY").sort("ts")
    if fx.is_empty():
        raise ValueError("net_pnl: raw.fx has no USD/TRY rate to state taxes in TRY; materialize raw/fx first")
    times, rates = fx["ts"].to_list(), fx["rate"].to_list()

    def rate(ts: datetime):
        from bisect import bisect_right
        from decimal import Decimal

        i = max(bisect_right(times, ts) - 1, 0)  # the last rate known at the time, else the first
        return Decimal(repr(rates[i]))
    return rate


@dg.asset(key="net_pnl", group_name=GROUP, kinds={"duckdb"}, deps=[fills, dg.AssetKey("tax_rules")],
          automation_condition=dg.AutomationCondition.eager(),
          description="Realized P&L of the runtimes' fills through the Turkish tax model: gross -> fees -> "
                      "transaction tax -> withholding -> profit tax -> net, per venue account (a runtime, or both "
                      "slots of a blue-green deployment) by day and quarter.")
def net_pnl(warehouse: DuckDBResource) -> dg.MaterializeResult:
    with warehouse.get_connection() as conn:
        fills_all = read_window(conn, "audit", FILLS)
        starts = conn.sql("SELECT runtime_id, kind, payload FROM audit.events WHERE kind = 'start'").pl() \
            if table_exists(conn, "audit", "events") else pl.DataFrame()
        # the two slots of a blue-green deployment trade one account: their fills are one ledger
        accounts = account_of({"runtime_id": r["runtime_id"], "kind": r["kind"], "payload": json.loads(r["payload"])}
                              for r in starts.iter_rows(named=True))
        fills_all = fills_all.with_columns(pl.col("runtime_id").replace(accounts))
        rules = rules_from_table(read_window(conn, "analytics", TAX_RULES)) \
            if table_exists(conn, "analytics", "tax_rules") else []
        fx = read_window(conn, "raw", RAW_TABLES["fx"])
        days, quarters = net_pnl_frames(fills_all, rules, _usd_try(fx)) if fills_all.height else \
            (NET_PNL_DAYS.empty(), NET_PNL_QUARTERS.empty())
        replace_rows(conn, "audit", NET_PNL_DAYS, days)
        replace_rows(conn, "audit", NET_PNL_QUARTERS, quarters)
    return dg.MaterializeResult(metadata={"dagster/row_count": dg.MetadataValue.int(days.height),
                                          "fills": fills_all.height, "quarters": dg.MetadataValue.md(
                                              markdown_table(quarters.select("account", "year", "quarter", "gross_usdt",
                                                                             "fees_usdt", "net_usdt"))
                                              if quarters.height else "no realized P&L yet")})


ingest_journal_job = dg.define_asset_job("ingest_journal", selection=[audit_events, fills],
                                         partitions_def=journal_days)
reconcile_job = dg.define_asset_job("reconcile_journal",
                                    selection=dg.AssetSelection.assets(reconciliation, net_pnl, "profit_attribution"))


def journal_cursor() -> dict[str, int]:
    return {str(p): p.stat().st_size for p in all_journal_files(paths.audit_dir())}


def changed_days(before: dict[str, int], now: dict[str, int]) -> list[str]:
    return sorted({os.path.basename(p).removesuffix(".jsonl") for p, size in now.items() if before.get(p) != size})


@dg.sensor(job=ingest_journal_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Watches <data>/audit for new journal records and re-ingests each day whose files grew; "
                       "reconciliation and net P&L follow as soon as the fills change (eager automation).")
def journal_sensor(context: dg.SensorEvaluationContext):
    before = json.loads(context.cursor) if context.cursor else {}
    now = journal_cursor()
    days = changed_days(before, now)
    if not days:
        return dg.SkipReason("no new journal records")
    stamp = sum(now.values())
    for day in days:
        yield dg.RunRequest(run_key=f"ingest:{day}:{stamp}", partition_key=day)
    context.update_cursor(json.dumps(now))
