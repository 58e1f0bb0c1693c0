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
    checks_failed: list[str] = field(default_factory=list)  # checks of ERROR severity
    checks_warned: list[str] = field(default_factory=list)  # WARN checks that failed, with their description
    wall_seconds: float = 0.0
    run_ids: list[str] = field(default_factory=list)
    failed_runs: list[str] = field(default_factory=list)  # run id, partition and the failed steps' errors
    skipped: list[str] = field(default_factory=list)  # selected assets not run, with why


# computed from what the runtimes journal, by sensors and automation, not per market partition
JOURNAL_GROUPS = ("audit", "anomaly", "attribution", "slo")


def graph_assets(defs: dg.Definitions, select: str | None = None) -> tuple[list, dg.AssetSelection]:
    """Every asset and check of the code location, and the selection to run (by default all but the groups that
    follow the runtime's journal rather than the market's days: see `ingest_journal`)."""
    assets = [*defs.assets, *(defs.asset_checks or [])]
    if select:
        selection = dg.AssetSelection.all() if select.strip() == "*" else dg.AssetSelection.assets(
            *(dg.AssetKey.from_user_string(k.strip()) for k in select.split(",") if k.strip()))
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


@dataclass(frozen=True)
class PlannedRun:
    """One run of a backfill: these asset keys, for one partition (None: unpartitioned)."""
    keys: tuple[dg.AssetKey, ...]
    partition: str | None
    what: str  # "market day", "journal day", "unpartitioned"


def existing_journal_days() -> list[str]:
    """The days some runtime journaled, from the journal files' names (<audit>/<runtime>/<day>.jsonl)."""
    from sofia_runtime import paths

    return sorted({f.stem for f in paths.audit_dir().glob("*/*.jsonl")})


def plan_runs(defs: dg.Definitions, selection: dg.AssetSelection, partition_keys: Sequence[str],
              journal_days: Sequence[str] | None = None) -> tuple[list[PlannedRun], list[str]]:
    """Any selection as runs Dagster accepts (one partitions definition per run): the market-partitioned assets
    once per requested day; assets of another partitioning (the journal's days) once per day that exists for it;
    unpartitioned assets once, after the groups they read from and before those that read them (in every run of
    a group they both read from and feed). Returns the runs in order and what was skipped, with why."""
    from sofia_pipelines.partitions import daily_partitions

    graph = defs.resolve_asset_graph()
    keys = [k for k in selection.resolve(graph) if graph.get(k).is_materializable]
    groups: dict[object, list[dg.AssetKey]] = defaultdict(list)
    for key in sorted(keys, key=lambda k: k.to_user_string()):
        groups[graph.get(key).partitions_def].append(key)
    unpartitioned = groups.pop(None, [])
    journal_days = list(existing_journal_days() if journal_days is None else journal_days)
    skipped: list[str] = []

    def upstream_of(group_keys) -> set[dg.AssetKey]:
        return set(dg.AssetSelection.assets(*group_keys).upstream().resolve(graph)) - set(group_keys)

    # partitioned groups in dependency order (the market's days first when neither reads the other)
    ordered = sorted(groups, key=lambda pd: pd != daily_partitions)
    for i in range(len(ordered)):
        for j in range(i + 1, len(ordered)):
            if set(groups[ordered[j]]) & upstream_of(groups[ordered[i]]):
                ordered[i], ordered[j] = ordered[j], ordered[i]
    # each unpartitioned asset runs once, in the slot after the last group it reads from, when that is before
    # the first group reading it; otherwise (it reads from and feeds the same days) in each run of that group
    slots: dict[int, list[dg.AssetKey]] = defaultdict(list)  # -1: before every group, i: after ordered[i]
    merged: dict[int, list[dg.AssetKey]] = defaultdict(list)
    upstream_groups = [upstream_of(groups[pd]) for pd in ordered]
    for key in unpartitioned:
        above = upstream_of([key])
        after = max((i for i, pd in enumerate(ordered) if set(groups[pd]) & above), default=-1)
        first_feed = min((i for i in range(len(ordered)) if key in upstream_groups[i]), default=len(ordered))
        (slots[after] if after < first_feed else merged[first_feed]).append(key)

    runs: list[PlannedRun] = []
    if slots[-1]:
        runs.append(PlannedRun(tuple(slots[-1]), None, "unpartitioned"))
    for i, pd in enumerate(ordered):
        group = groups[pd]
        if pd == daily_partitions:
            days, what = list(partition_keys), "market day"
        else:
            days, what = [d for d in journal_days if pd.has_partition_key(d)], "journal day"
            outside = sorted(set(journal_days) - set(days))
            if outside:
                skipped.append(f"journal day(s) {', '.join(outside)} are not partitions of "
                               f"{', '.join(k.to_user_string() for k in group)}")
            if not days:
                skipped.append(f"{len(group)} asset(s) partitioned by journal day "
                               f"({', '.join(k.to_user_string() for k in group)}): no journal day exists "
                               f"(no runtime has journaled yet)")
        for day in days:
            runs.append(PlannedRun(tuple(group + merged[i]), day, what))
        if merged[i] and not days:  # the days it was to run with: none, so once on its own
            runs.append(PlannedRun(tuple(merged[i]), None, "unpartitioned"))
        if slots[i]:
            runs.append(PlannedRun(tuple(slots[i]), None, "unpartitioned"))
    return runs, skipped


def materialize_partitions(defs: dg.Definitions, partition_keys: Iterable[str], instance: dg.DagsterInstance,
                           select: str | None = None, on_partition=None, log_level: str = "INFO",
                           journal_days: Sequence[str] | None = None) -> GraphRunSummary:
    """One run per partition, in order; unpartitioned assets in the selection run in each.
    With `select` (any set of asset keys), the runs of `plan_runs`: one per partition per partitions definition,
    unpartitioned assets once. `log_level` is the console's; the run's events are stored in the instance whatever
    it is. A failed run is reported in the summary (`failed_runs`), never raised halfway through a backfill."""
    assets, selection = graph_assets(defs, select)
    summary = GraphRunSummary()
    started = time.perf_counter()
    if select:
        runs, summary.skipped = plan_runs(defs, selection, list(partition_keys), journal_days)
        planned = [(dg.AssetSelection.assets(*run.keys), run.partition) for run in runs]
    else:
        planned = [(selection, key) for key in partition_keys]
    for run_selection, key in planned:
        result = dg.materialize(assets, instance=instance, partition_key=key, resources=defs.resources,
                                selection=run_selection, tags={"sofia/launched_by": "sofia-cli"}, raise_on_error=False,
                                run_config={"loggers": {"console": {"config": {"log_level": log_level}}}})
        summary.run_ids.append(result.run_id)
        if not result.success:
            summary.failed_runs.append(f"run {result.run_id} [{key or 'unpartitioned'}]: " + ("; ".join(
                f"{e.step_key}: {_root_error(e.event_specific_data.error)}"
                for e in result.all_events if e.is_step_failure) or "failed"))
        _collect(result, key or "-", summary)
        if on_partition:
            on_partition(key or "unpartitioned", result)
    summary.wall_seconds = time.perf_counter() - started
    return summary


def _root_error(error) -> str:
    """The original exception's message, not Dagster's wrapper around it."""
    while error.cause is not None:
        error = error.cause
    return (error.message.strip().splitlines() or ["?"])[0]


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
        name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name} [{partition_key}]"
        if evaluation.passed:
            summary.checks_passed += 1
        elif evaluation.severity == dg.AssetCheckSeverity.WARN:  # says what could not be computed, and why
            summary.checks_warned.append(f"{name}: {evaluation.description or 'no reason given'}")
        else:
            summary.checks_failed.append(name)


def summary_rows(summary: GraphRunSummary) -> Sequence[tuple[str, int, int, float]]:
    return sorted((name, len(s.partitions), s.rows, s.seconds) for name, s in summary.assets.items())
