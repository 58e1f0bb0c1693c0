"""Materializing the graph partition by partition through Dagster's own API, as `make demo` and
`sofia backfill` do. Runs go to the instance under DAGSTER_HOME, so they show in the UI."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import dagster as dg


@dataclass
class AssetSummary:
    partitions: set[str] = field(default_factory=set)
    rows: int = 0
    seconds: float = 0.0


@dataclass
class GraphRunSummary:
    assets: dict[str, AssetSummary] = field(default_factory=lambda: defaultdict(AssetSummary))
    checks_passed: int = 0
    checks_failed: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0
    run_ids: list[str] = field(default_factory=list)


# computed from what the runtimes journal, by sensors and automation, not per market partition
JOURNAL_GROUPS = ("audit", "anomaly", "attribution", "slo")


def graph_assets(defs: dg.Definitions, select: str | None = None) -> tuple[list, dg.AssetSelection]:
    """Every asset and check of the code location, and the selection to run (by default all but the groups that
    follow the runtime's journal rather than the market's days: see `ingest_journal`)."""
    assets = [*defs.assets, *(defs.asset_checks or [])]
    if select:
        selection = dg.AssetSelection.assets(*(dg.AssetKey.from_user_string(k.strip()) for k in select.split(",")))
    else:
        selection = dg.AssetSelection.all() - dg.AssetSelection.groups(*JOURNAL_GROUPS)
    return assets, selection


def ingest_journal(defs: dg.Definitions, instance: dg.DagsterInstance, days: Iterable[str],
                   log_level: str = "WARNING") -> dict:
    """What the journal sensor triggers, run now: ingest each journal day, then reconcile and compute net P&L.
    Returns the reconciliation's metadata and the checks' outcomes."""
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    checks: dict[str, bool] = {}
    for day in days:
        result = defs.resolve_job_def("ingest_journal").execute_in_process(
            partition_key=day, instance=instance, run_config=run_config, raise_on_error=False)
        checks.update({f"{c.check_name}[{day}]": c.passed for c in result.get_asset_check_evaluations()})
    result = defs.resolve_job_def("reconcile_journal").execute_in_process(instance=instance, run_config=run_config,
                                                                         raise_on_error=False)
    checks.update({c.check_name: c.passed for c in result.get_asset_check_evaluations()})
    slo = defs.resolve_job_def("slo_report_job").execute_in_process(instance=instance, run_config=run_config,
                                                                   raise_on_error=False)
    out = {"checks": checks, "success": result.success and slo.success,
           "slo": {c.check_name: c.passed for c in slo.get_asset_check_evaluations()}}
    for event in slo.get_asset_materialization_events():
        out[event.asset_key.to_user_string()] = {k: getattr(v, "value", v)
                                                 for k, v in event.materialization.metadata.items()}
    for event in result.get_asset_materialization_events():
        out[event.asset_key.to_user_string()] = {k: getattr(v, "value", v)
                                                 for k, v in event.materialization.metadata.items()}
    return out


def materialize_partitions(defs: dg.Definitions, partition_keys: Iterable[str], instance: dg.DagsterInstance,
                           select: str | None = None, on_partition=None, log_level: str = "INFO") -> GraphRunSummary:
    """One run per partition, in order; unpartitioned assets in the selection run in each.
    `log_level` is the console's; the run's events are stored in the instance whatever it is."""
    assets, selection = graph_assets(defs, select)
    summary = GraphRunSummary()
    started = time.perf_counter()
    for key in partition_keys:
        result = dg.materialize(assets, instance=instance, partition_key=key, resources=defs.resources,
                                selection=selection, tags={"sofia/launched_by": "sofia-cli"},
                                run_config={"loggers": {"console": {"config": {"log_level": log_level}}}})
        summary.run_ids.append(result.run_id)
        _collect(result, key, summary)
        if on_partition:
            on_partition(key, result)
    summary.wall_seconds = time.perf_counter() - started
    return summary


def _collect(result: dg.ExecuteInProcessResult, partition_key: str, summary: GraphRunSummary) -> None:
    step_seconds: dict[str, float] = {}
    assets_per_step: dict[str, int] = defaultdict(int)
    for mat in result.get_asset_materialization_events():
        assets_per_step[mat.step_key] += 1
    for record in result.get_step_success_events():
        step_seconds[record.step_key] = record.event_specific_data.duration_ms / 1000.0
    for mat in result.get_asset_materialization_events():
        m = mat.event_specific_data.materialization
        name = m.asset_key.to_user_string()
        entry = summary.assets[name]
        entry.partitions.add(m.partition or "-")
        rows = m.metadata.get("dagster/row_count")
        if rows is not None:
            # an unpartitioned asset is rebuilt whole by every run: its rows are the latest run's
            entry.rows = int(rows.value) + (entry.rows if m.partition else 0)
        # a multi-asset step (dbt) shares its time among the assets it materialized
        entry.seconds += step_seconds.get(mat.step_key, 0.0) / assets_per_step[mat.step_key]
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.passed:
            summary.checks_passed += 1
        else:
            summary.checks_failed.append(
                f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name} [{partition_key}]")


def summary_rows(summary: GraphRunSummary) -> Sequence[tuple[str, int, int, float]]:
    return sorted((name, len(s.partitions), s.rows, s.seconds) for name, s in summary.assets.items())
