"""The whole code location through Dagster's own API: every asset and check for the embedded market."""

from __future__ import annotations

from datetime import date

import subprocess
import sys

import duckdb
import dagster as dg
import pytest

from sofia_pipelines.materialize import ingest_journal, materialize_partitions
from sofia_runtime import paths
from sofia_runtime.snapshot import load_current

pytestmark = pytest.mark.slow

SIM_DAYS = [f"2026-10-{d}" for d in range(25, 32)]


@pytest.fixture
def code_location(data_dir):
    from sofia_pipelines.definitions import defs
    from sofia_pipelines.resources import market_source_resource, warehouse_resource

    # the module-level resources were bound at import; point them at this test's data folder
    return dg.Definitions.merge(
        dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks, sensors=defs.sensors,
                       schedules=defs.schedules, jobs=defs.jobs),
        dg.Definitions(resources={**defs.resources, "warehouse": warehouse_resource(),
                                  "market_source": market_source_resource()}),
    )


def test_backfill_all_seven_partitions_then_trade_the_snapshot_and_reconcile(code_location, data_dir):
    instance = dg.DagsterInstance.ephemeral()
    summary = materialize_partitions(code_location, SIM_DAYS, instance)

    assert summary.checks_failed == []
    assert summary.checks_passed > 0
    with duckdb.connect(str(paths.warehouse_path()), read_only=True) as conn:
        days = conn.execute("SELECT count(DISTINCT CAST(ts AS DATE)) FROM raw.candles").fetchone()[0]
        assert days == 7
        for table in ("candles", "books", "trades", "funding", "latency", "fx"):
            assert conn.execute(f"SELECT count(*) FROM raw.{table}").fetchone()[0] > 0, table
        assert conn.execute("SELECT count(*) FROM marts.mart_hourly_liquidity").fetchone()[0] > 0
    for name, asset in summary.assets.items():
        if name.startswith("raw/"):
            assert len(asset.partitions) == 7, name

    snapshot = load_current(paths.serving_dir())
    assert snapshot.manifest["partition"] == SIM_DAYS[-1]
    for table in ("route_table", "fee_table", "fill_model", "session_schedule", "funding_opportunities",
                  "inventory_targets", "risk_limits", "markets", "tax_rules", "replay_books", "replay_trades"):
        assert snapshot.tables[table].height > 0, table
    assert snapshot.tables["replay_books"]["ts"].dt.date().unique().to_list() == [date(2026, 10, 31)]

    # the paper runtimes on that snapshot, as `make demo` runs them, then their journals back into Dagster
    procs = [subprocess.Popen([sys.executable, "-m", "sofia_runtime.cli", "run", "--strategy", strategy, "--speed", "0",
                               "--duration", "8s", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for strategy in ("mm_lite", "funding_farmer")]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    days = sorted({f.stem for f in paths.audit_dir().glob("*/*.jsonl")})
    outcome = ingest_journal(code_location, instance, days)
    assert outcome["success"]
    assert all(outcome["checks"].values()), outcome["checks"]
    assert outcome["reconciliation"]["reconciliation_rate"] == 1.0
    with duckdb.connect(str(paths.warehouse_path()), read_only=True) as conn:
        runtimes = {r[0] for r in conn.execute("SELECT DISTINCT runtime_id FROM audit.events").fetchall()}
        assert runtimes == {"mm_lite-paper", "funding_farmer-paper"}
        fills = conn.execute("SELECT count(*) FROM audit.fills").fetchone()[0]
        assert fills == conn.execute("SELECT count(*) FROM audit.events WHERE kind = 'fill'").fetchone()[0] > 0
        assert conn.execute("SELECT count(*) FROM audit.reconciliation WHERE status <> 'matched'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM audit.net_pnl_days").fetchone()[0] > 0
