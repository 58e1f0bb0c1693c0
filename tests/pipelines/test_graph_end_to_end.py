"""The whole code location through Dagster's own API: every asset and check for the embedded market."""

from __future__ import annotations

from datetime import date

import duckdb
import dagster as dg
import pytest

from sofia_pipelines.materialize import materialize_partitions
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


def test_backfill_all_seven_partitions_then_read_the_snapshot(code_location, data_dir):
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
