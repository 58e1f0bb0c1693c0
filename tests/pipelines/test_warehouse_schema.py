"""A warehouse table made by an older version of a schema: nullable columns are added, a missing required column is
refused with what to do, and nothing stored changes."""

import duckdb
import polars as pl
import pytest

from sofia_pipelines.warehouse import WarehouseSchemaError, replace_rows
from sofia_runtime.schemas import TableSchema


def test_an_older_table_gains_nullable_columns_and_refuses_a_missing_required_one(tmp_path):
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    conn.execute("CREATE SCHEMA analytics")
    conn.execute("CREATE TABLE analytics.t (k VARCHAR, v DOUBLE)")
    conn.execute("INSERT INTO analytics.t VALUES ('a', 1.0)")
    newer = TableSchema("t", {"k": pl.Utf8, "v": pl.Float64, "note": pl.Utf8}, ("k",), frozenset({"note"}))
    replace_rows(conn, "analytics", newer, pl.DataFrame({"k": ["b"], "v": [2.0], "note": ["x"]}))
    assert conn.execute("SELECT k, v, note FROM analytics.t").fetchall() == [("b", 2.0, "x")]
    required = TableSchema("t", {"k": pl.Utf8, "v": pl.Float64, "note": pl.Utf8, "method": pl.Utf8}, ("k",),
                           frozenset({"note"}))
    with pytest.raises(WarehouseSchemaError, match=r"analytics\.t .* lacks the required column\(s\) \['method'\].*"
                                                   r"DROP TABLE"):
        replace_rows(conn, "analytics", required, pl.DataFrame({"k": ["c"], "v": [3.0], "note": [None],
                                                                "method": ["m"]}))
    assert conn.execute("SELECT k, v, note FROM analytics.t").fetchall() == [("b", 2.0, "x")]
