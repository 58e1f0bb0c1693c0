"""deploy/dagster.yaml as it is, on a real PostgreSQL server started for the test: the instance loads with its
storage, run queue and concurrency limits, a materialization through it lands in Postgres, and a second
process-level instance (what the webserver or the daemon would open) reads it back."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest

REPO = Path(__file__).resolve().parents[3]
DAY = "2026-10-25"


@pytest.mark.slow
def test_production_instance_stores_runs_in_postgres(postgres_server, resources, data_dir, tmp_path, monkeypatch):
    pytest.importorskip("dagster_postgres", reason="dagster-postgres is not installed (pyproject pins it)")
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    from sofia_pipelines.defs.market_data.assets import raw_fx

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    for key, value in postgres_server.env().items():
        monkeypatch.setenv(key, value)

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        concurrency = instance.get_concurrency_config()
        queue = concurrency.run_queue_config
        assert queue.max_concurrent_runs == 8
        assert {"key": "dagster/code_location", "value": "sofia", "limit": 1} in queue.tag_concurrency_limits
        assert concurrency.pool_config.default_pool_limit == 1
        assert concurrency.pool_config.pool_granularity.value == "op"

        result = dg.materialize([raw_fx], instance=instance, resources=resources, partition_key=DAY)
        assert result.success
        run_id = result.run_id

    import psycopg2

    conn = psycopg2.connect(host=postgres_server.host, port=postgres_server.port, user=postgres_server.user,
                            password=postgres_server.password, dbname=postgres_server.db)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT status FROM runs WHERE run_id = %s", [run_id])
            assert cur.fetchall() == [("SUCCESS",)]
            cur.execute("SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
                        [run_id, "ASSET_MATERIALIZATION"])
            assert cur.fetchall() == [(1,)]
            cur.execute("SELECT asset_key FROM asset_keys")
            assert '["raw", "fx"]' in {row[0] for row in cur.fetchall()}
    finally:
        conn.close()

    # a fresh instance from the same file sees the run and the day's materialization, with its row count
    with dg.DagsterInstance.from_config(str(home)) as reader:
        assert reader.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
        event = reader.get_latest_materialization_event(dg.AssetKey(["raw", "fx"]))
        assert event.run_id == run_id and event.asset_materialization.partition == DAY
        reported = event.asset_materialization.metadata["dagster/row_count"].value
    with duckdb.connect(str(data_dir / "warehouse.duckdb"), read_only=True) as wh:
        (rows,) = wh.execute("SELECT count(*) FROM raw.fx").fetchone()
    assert rows == reported > 0
