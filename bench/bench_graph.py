"""Whole graph: every asset (and check) of the code location materialized for one partition of the embedded
market, and a 7-partition backfill, through `sofia_pipelines.materialize.materialize_partitions` (what `make demo`
and `sofia backfill` run) on a fresh SOFIA_DATA_DIR and an ephemeral Dagster instance, each in its own process.

Baseline in the same run: the sum of the steps' own times, from each run's STEP_START/STEP_SUCCESS events; the
difference to the wall time is what orchestration costs (run setup, event log, step launch, IO managers).

    .venv/bin/python bench/bench_graph.py            # one partition × 3 runs, then the 7-partition backfill
    .venv/bin/python bench/bench_graph.py --quick    # one partition, once

The last one-partition run's data folder (warehouse + serving snapshot) is kept in <work>/graph-data for
bench_footprint.py and bench_snapshot.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_WORK, RESULTS_DIR, command, emit, fmt, row, run_child, worker, write_result  # noqa: E402

ONE_PARTITION_LIMIT_S = 30.0
SNAPSHOT_MAX_AGE_H = 48


def graph_data(work: Path) -> Path:
    return work / "graph-data"


def step_times(instance, run_id: str) -> dict[str, float]:
    """Seconds from STEP_START to STEP_SUCCESS (or STEP_FAILURE) per step of a run, from its event log."""
    import dagster as dg

    kinds = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}
    starts, out = {}, {}
    for entry in instance.all_logs(run_id, of_type=kinds):
        if entry.dagster_event.event_type == dg.DagsterEventType.STEP_START:
            starts[entry.step_key] = entry.timestamp
        elif entry.step_key in starts:
            out[entry.step_key] = entry.timestamp - starts[entry.step_key]
    return out


def run_graph(data: Path, n_partitions: int) -> dict:
    """In a worker: materialize the last `n_partitions` days of the embedded market into `data`."""
    os.environ["SOFIA_DATA_DIR"] = str(data)
    for var in ("SOFIA_WAREHOUSE", "SOFIA_SOURCE", "DAGSTER_HOME", "SOFIA_EXECUTOR"):
        os.environ.pop(var, None)
    t0 = time.perf_counter()
    import dagster as dg

    from sofia_pipelines.definitions import defs
    from sofia_pipelines.materialize import materialize_partitions

    import_s = time.perf_counter() - t0
    instance = dg.DagsterInstance.ephemeral()
    keys = [d.isoformat() for d in defs.resources["market_source"].get().available_days()][-n_partitions:]
    per_run = []

    def done(key, result):
        steps = step_times(instance, result.run_id)
        per_run.append({"partition": key, "steps": steps, "success": result.success})
        print(f"  partition {key}: {len(steps)} steps, {sum(steps.values()):.1f} s in steps", flush=True)

    summary = materialize_partitions(defs, keys, instance, log_level="WARNING", on_partition=done)
    steps_total: dict[str, float] = {}
    for r in per_run:
        for k, v in r["steps"].items():
            steps_total[k] = steps_total.get(k, 0.0) + v
    return {"partitions": keys, "wall_s": summary.wall_seconds, "steps_s": sum(steps_total.values()),
            "import_s": import_s, "steps": steps_total, "per_run": per_run, "checks_passed": summary.checks_passed,
            "checks_failed": summary.checks_failed, "success": all(r["success"] for r in per_run)}


def materialize_child(data: Path, n_partitions: int):
    if data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True)
    res = run_child(worker("bench_graph.py", "--worker", data, "--partitions", n_partitions)).check()
    p = res.payload
    if not p["success"] or p["checks_failed"]:
        raise RuntimeError(f"graph run in {data} failed: checks failed {p['checks_failed']}")
    return res


def ensure_graph_data(work: Path) -> Path:
    """A data folder with a published serving snapshot; one partition is materialized (untimed) if missing."""
    data = graph_data(work)
    if not _fresh_snapshot(data / "serving"):
        print(f"no serving snapshot in {data} younger than {SNAPSHOT_MAX_AGE_H} h: materializing one partition first "
              f"(not timed)", flush=True)
        materialize_child(data, 1)
    return data


def _fresh_snapshot(serving: Path) -> bool:
    """CURRENT names a snapshot the runtime will still accept (its default age limit is 72 h)."""
    try:
        manifest = json.loads((serving / (serving / "CURRENT").read_text().strip() / "manifest.json").read_text())
        age = datetime.now(timezone.utc) - datetime.fromisoformat(manifest["created_at"])
    except (OSError, ValueError, KeyError):
        return False
    return age < timedelta(hours=SNAPSHOT_MAX_AGE_H)


def _slowest(steps: dict[str, float], n: int = 6) -> str:
    return ", ".join(f"{k} {v:.1f} s" for k, v in sorted(steps.items(), key=lambda kv: -kv[1])[:n])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one partition, once; no backfill")
    p.add_argument("--runs", type=int, help="runs of the one-partition graph (default 3; quick 1)")
    p.add_argument("--backfill", type=int, default=7, help="partitions of the backfill (0: none; quick: none)")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK)
    p.add_argument("--out", type=Path)
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--partitions", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        emit(run_graph(args.worker, args.partitions))
        return 0

    runs = args.runs or (1 if args.quick else 3)
    backfill = 0 if args.quick else args.backfill
    group = "whole graph"
    cmd = command("bench_graph.py", *(["--quick"] if args.quick else []))
    rows, details = [], {"one_partition": [], "backfill": None}
    print(f"whole graph: one partition × {runs} run(s)" + (f", then a {backfill}-partition backfill" if backfill else ""))
    walls, steps, peaks = [], [], []
    for i in range(runs):
        res = materialize_child(args.work / "graph" / f"run-{i}", 1)
        pl_ = res.payload
        walls.append(pl_["wall_s"])
        steps.append(pl_["steps_s"])
        peaks.append(res.peak_rss_mib)
        details["one_partition"].append({**pl_, "peak_rss_mib": res.peak_rss_mib, "process_wall_s": res.wall_s})
        print(f"  run {i + 1}: partition {pl_['partitions'][0]} wall {pl_['wall_s']:.1f} s, steps {pl_['steps_s']:.1f} s, "
              f"overhead {pl_['wall_s'] - pl_['steps_s']:.1f} s, {len(pl_['steps'])} steps, checks passed "
              f"{pl_['checks_passed']}; import {pl_['import_s']:.1f} s; peak RSS {res.peak_rss_mib:,.0f} MiB", flush=True)
        if i < runs - 1:
            shutil.rmtree(args.work / "graph" / f"run-{i}")
    last = details["one_partition"][-1]
    keep = graph_data(args.work)
    if keep.exists():
        shutil.rmtree(keep)
    shutil.move(str(args.work / "graph" / f"run-{runs - 1}"), keep)
    overheads = [w - s for w, s in zip(walls, steps)]
    rows.append(row(
        f"{group}: one partition", group, walls, "s", cmd, baseline=steps, baseline_unit="s",
        baseline_name="Σ step time", ratio="figure/baseline", target=("figure", "<=", ONE_PARTITION_LIMIT_S),
        target_text="≤ 30 s",
        notes=f"{len(last['steps'])} steps (assets and checks), partition {last['partitions'][0]}; orchestration "
              f"overhead (wall − Σ steps) {fmt(sorted(overheads)[len(overheads) // 2])} s; slowest steps: "
              f"{_slowest(last['steps'])}; importing the definitions {fmt(last['import_s'])} s more; peak RSS "
              f"{fmt(max(peaks))} MiB"))
    if backfill:
        print(f"  backfill of {backfill} partitions (one run per partition)", flush=True)
        res = materialize_child(args.work / "graph" / "backfill", backfill)
        b = res.payload
        details["backfill"] = {**b, "peak_rss_mib": res.peak_rss_mib}
        print(f"  backfill: wall {b['wall_s']:.1f} s, steps {b['steps_s']:.1f} s, overhead "
              f"{b['wall_s'] - b['steps_s']:.1f} s; peak RSS {res.peak_rss_mib:,.0f} MiB", flush=True)
        per_partition = ", ".join(f"{r['partition'][5:]} {sum(r['steps'].values()):.0f} s" for r in b["per_run"])
        rows.append(row(
            f"{group}: {backfill}-partition backfill", group, b["wall_s"], "s", cmd, baseline=b["steps_s"],
            baseline_unit="s", baseline_name="Σ step time", ratio="figure/baseline",
            notes=f"one run; orchestration overhead {fmt(b['wall_s'] - b['steps_s'])} s "
                  f"({fmt(100 * (b['wall_s'] - b['steps_s']) / b['wall_s'])} % of wall); steps per partition: "
                  f"{per_partition}; slowest steps summed: {_slowest(b['steps'])}; peak RSS {fmt(res.peak_rss_mib)} MiB"))
        shutil.rmtree(args.work / "graph" / "backfill", ignore_errors=True)
    out = args.out or RESULTS_DIR / ("quick" if args.quick else "") / "graph.json"
    write_result(out, "graph", rows, args.quick, details)
    return 0


if __name__ == "__main__":
    sys.exit(main())
