"""SOFIA_WAREHOUSE moves the warehouse by configuration: a DuckDB file anywhere, or MotherDuck."""

from __future__ import annotations

import duckdb
import pytest

from sofia_pipelines.resources import is_motherduck, warehouse_database, warehouse_resource


def test_default_is_the_data_folders_file(data_dir):
    assert warehouse_database() == str(data_dir / "warehouse.duckdb")
    assert warehouse_resource().database == str(data_dir / "warehouse.duckdb")


def test_a_path_moves_the_file_and_the_assets_write_there(data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SOFIA_WAREHOUSE", "elsewhere/wh.duckdb")
    resource = warehouse_resource()
    # a relative path is taken from the current directory, and its folder is made
    assert resource.database == str(tmp_path / "elsewhere" / "wh.duckdb")
    with resource.get_connection() as conn:
        conn.execute("CREATE TABLE t AS SELECT 42 AS x")
    with duckdb.connect(str(tmp_path / "elsewhere" / "wh.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(42,)]
    assert not (data_dir / "warehouse.duckdb").exists()


def test_motherduck_needs_a_token_from_the_environment(data_dir, monkeypatch):
    monkeypatch.delenv("MOTHERDUCK_TOKEN", raising=False)
    monkeypatch.delenv("motherduck_token", raising=False)
    monkeypatch.setenv("SOFIA_WAREHOUSE", "md:sofia")
    with pytest.raises(ValueError, match=r"SOFIA_WAREHOUSE=md:sofia.*MOTHERDUCK_TOKEN"):
        warehouse_resource()

    monkeypatch.setenv("MOTHERDUCK_TOKEN", "not-a-real-token")
    resource = warehouse_resource()
    assert resource.database == "md:sofia" and is_motherduck(resource.database)
    # the token stays in the environment: the resource's config (shown in the UI) does not carry it
    assert "not-a-real-token" not in repr(resource.connection_config)
    assert not (data_dir / "md:sofia").exists()


def test_object_storage_is_refused_with_the_way_out(data_dir, monkeypatch):
    monkeypatch.setenv("SOFIA_WAREHOUSE", "s3://bucket/warehouse.duckdb")
    with pytest.raises(ValueError, match=r"SOFIA_WAREHOUSE=s3://bucket/warehouse.duckdb.*md:<db>.*Parquet"):
        warehouse_resource()
