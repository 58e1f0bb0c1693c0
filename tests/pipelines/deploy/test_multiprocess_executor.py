"""The code location on the multiprocess executor, switched on by configuration alone.

`SOFIA_EXECUTOR=multiprocess` and deploy/executors/multiprocess.yaml, run through Dagster's own CLI against a
persistent instance (the multiprocess executor cannot run on an ephemeral one), exactly as an operator would:

    SOFIA_EXECUTOR=multiprocess dagster asset materialize -m sofia_pipelines.definitions \
        --select raw/funding,raw/fx --partition 2026-10-25 -c deploy/executors/multiprocess.yaml

What runs in parallel, honestly: the raw assets of one day are independent steps, and with `max_concurrent: 2`
both run at once, each in its own process (their source loading and checking overlaps). Their writes go to
the same DuckDB file, which has one writer at a time: they do not write concurrently, they take turns at the
file lock (dagster-duckdb retries a locked connect with backoff). Their blocking Great Expectations checks
then run as steps of their own, each after its asset.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

REPO = Path(__file__).resolve().parents[3]
DAY = "2026-10-25"
TABLES = ("funding", "fx")


@pytest.mark.slow
def test_raw_assets_run_in_parallel_processes_and_land_in_duckdb(data_dir, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "SOFIA_EXECUTOR": "multiprocess", "DAGSTER_HOME": str(home)}
    cmd = [str(Path(sys.executable).with_name("dagster")), "asset", "materialize",
           "-m", "sofia_pipelines.definitions", "--select", ",".join(f"raw/{t}" for t in TABLES),
           "--partition", DAY, "-c", str(REPO / "deploy" / "executors" / "multiprocess.yaml")]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    failures = [line for line in (proc.stdout + proc.stderr).splitlines()
                if "STEP_FAILURE" in line or "Error" in line or "error" in line]
    assert proc.returncode == 0, "\n".join(failures[-30:]) or proc.stderr[-3000:]

    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["dagster/partition"] == DAY
        records = instance.all_logs(run.run_id)

    kind = dg.DagsterEventType
    events = [(r.timestamp, r.dagster_event) for r in records if r.dagster_event]
    run_pid = next(e.pid for _, e in events if e.event_type == kind.RUN_START)
    assert any(e.event_type == kind.ENGINE_EVENT and "multiprocess executor" in (e.message or "") for _, e in events)
    start = {e.step_key: (t, e.pid) for t, e in events if e.event_type == kind.STEP_START}
    end = {e.step_key: t for t, e in events if e.event_type == kind.STEP_SUCCESS}
    raw_steps = [f"raw__{t}" for t in TABLES]
    check_steps = [f"raw__{t}_great_expectations" for t in TABLES]
    assert set(start) == set(end) == set(raw_steps + check_steps)

    # one process per step, none of them the run's own
    pids = [start[s][1] for s in start]
    assert len(set(pids)) == len(pids) and run_pid not in pids
    # the two raw steps ran at the same time
    (a, b) = sorted((start[s][0], end[s]) for s in raw_steps)
    assert b[0] < a[1], f"the raw steps ran one after the other: {a}, {b}"

    checks = [e for _, e in events if e.event_type == kind.ASSET_CHECK_EVALUATION]
    assert len(checks) == len(TABLES) and all(c.event_specific_data.passed for c in checks)
    reported = {e.event_specific_data.materialization.asset_key.path[-1]:
                e.event_specific_data.materialization.metadata["dagster/row_count"].value
                for _, e in events if e.event_type == kind.ASSET_MATERIALIZATION}
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as conn:
        for table in TABLES:
            (rows,) = conn.execute(f"SELECT count(*) FROM raw.{table}").fetchone()
            assert rows > 0 and rows == reported[table], table
