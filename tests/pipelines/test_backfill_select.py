"""`sofia backfill --select` with any set of assets: grouped by partitions definition, one run per partition per
group, unpartitioned assets once in dependency order, journal-partitioned ones for the journal days that exist."""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg
import pytest

from sofia_pipelines.materialize import materialize_partitions, plan_runs
from sofia_pipelines.partitions import daily_partitions
from sofia_runtime import paths
from sofia_runtime.journal import Journal

journal_days = dg.DailyPartitionsDefinition(start_date="2026-01-01", timezone="UTC", end_offset=1)  # as audit's
LOG: list[tuple[str, str | None]] = []


def _record(context) -> dg.MaterializeResult:
    LOG.append((context.asset_key.to_user_string(), context.partition_key if context.has_partition_key else None))
    return dg.MaterializeResult(metadata={"dagster/row_count": 1})


@dg.asset(partitions_def=daily_partitions)
def raw_candles(context):
    return _record(context)


@dg.asset
def fee_rules(context):  # unpartitioned, read by a daily asset: once, before the days
    return _record(context)


@dg.asset(deps=[raw_candles])
def markets(context):  # unpartitioned, reads the days and feeds them: in every day's run
    return _record(context)


@dg.asset(partitions_def=daily_partitions, deps=[raw_candles, fee_rules, markets])
def route_table(context):
    return _record(context)


@dg.asset(partitions_def=journal_days)
def audit_events(context):
    return _record(context)


@dg.asset(deps=[audit_events, route_table])
def reconciliation(context):  # unpartitioned, reads both partitionings: once, after them
    return _record(context)


@dg.asset_check(asset=route_table, blocking=True, partitions_def=daily_partitions)
def route_table_ok(context):
    return dg.AssetCheckResult(passed=True)


@pytest.fixture
def code_location():
    LOG.clear()
    return dg.Definitions(assets=[raw_candles, fee_rules, markets, route_table, audit_events, reconciliation],
                          asset_checks=[route_table_ok])


EVERY = "raw_candles,fee_rules,markets,route_table,audit_events,reconciliation"


def test_every_asset_is_grouped_by_partitions_definition(code_location, data_dir):
    journal = Journal(paths.audit_dir(), "mm_lite-paper")  # a real journal file: its day is the journal's partition
    journal.append_durable("start", {"pid": 1})
    journal.close()
    today = datetime.now(timezone.utc).date().isoformat()

    summary = materialize_partitions(code_location, ["2026-10-30", "2026-10-31"], dg.DagsterInstance.ephemeral(),
                                     select=EVERY, log_level="WARNING")
    assert summary.failed_runs == [] and summary.skipped == []
    assert LOG.index(("fee_rules", None)) == 0 and LOG.count(("fee_rules", None)) == 1
    for day in ("2026-10-30", "2026-10-31"):
        i = LOG.index(("raw_candles", day))
        # an unpartitioned asset in a partitioned run sees the run's partition key
        assert LOG[i:i + 3] == [("raw_candles", day), ("markets", day), ("route_table", day)]
    assert LOG[-2:] == [("audit_events", today), ("reconciliation", None)]
    assert len(LOG) == 1 + 3 * 2 + 2 and len(summary.run_ids) == 1 + 2 + 1 + 1
    assert summary.checks_passed == 2
    assert summary.assets["route_table"].partitions == {"2026-10-30", "2026-10-31"}


def test_no_journal_day_is_said_not_silently_dropped(code_location, data_dir):
    summary = materialize_partitions(code_location, ["2026-10-31"], dg.DagsterInstance.ephemeral(),
                                     select="audit_events,reconciliation", log_level="WARNING")
    assert summary.skipped == ["1 asset(s) partitioned by journal day (audit_events): no journal day exists "
                               "(no runtime has journaled yet)"]
    assert LOG == [("reconciliation", None)]


def test_a_failed_run_is_reported_and_the_backfill_goes_on(data_dir):
    @dg.asset(partitions_def=daily_partitions)
    def flaky(context):
        if context.partition_key == "2026-10-30":
            raise ValueError("raw/candles: no file for 2026-10-30")
        return _record(context)

    LOG.clear()
    summary = materialize_partitions(dg.Definitions(assets=[flaky]), ["2026-10-30", "2026-10-31"],
                                     dg.DagsterInstance.ephemeral(), select="flaky", log_level="CRITICAL")
    assert len(summary.failed_runs) == 1 and "[2026-10-30]" in summary.failed_runs[0]
    assert "no file for 2026-10-30" in summary.failed_runs[0]
    assert LOG == [("flaky", "2026-10-31")]


def test_the_code_locations_every_asset_plans_into_runs_dagster_accepts():
    from sofia_pipelines.definitions import defs

    graph = defs.resolve_asset_graph()
    every = {k for k in dg.AssetSelection.all().resolve(graph) if graph.get(k).is_materializable}
    runs, skipped = plan_runs(defs, dg.AssetSelection.all(), ["2026-10-31"], journal_days=["2026-12-01"])
    assert skipped == []
    for run in runs:
        partitioned = {graph.get(k).partitions_def for k in run.keys} - {None}
        assert len(partitioned) <= 1 and (run.partition is None) == (not partitioned), run
    assert {k for r in runs for k in r.keys} == every
    assert {r.what for r in runs} == {"unpartitioned", "market day", "journal day"}
    assert dg.AssetKey("serving_snapshot") in next(r for r in runs if r.what == "market day").keys
