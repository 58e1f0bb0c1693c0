"""Writing and reading the DuckDB warehouse. Every write is one transaction: it lands whole or
leaves the previous contents as they were."""

from __future__ import annotations

from datetime import datetime

import duckdb
import polars as pl

from sofia_runtime.schemas import TableSchema, _duckdb_type


def ensure_table(conn: duckdb.DuckDBPyConnection, schema_name: str, table: TableSchema) -> str:
    conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema_name}"')
    qualified = f'"{schema_name}"."{table.name}"'
    conn.execute(f"CREATE TABLE IF NOT EXISTS {qualified} ({table.duckdb_columns()})")
    # a nullable column added to the schema since the table was made: its old rows hold null, which the schema allows
    existing = {r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns "
                                           "WHERE table_schema = ? AND table_name = ?", [schema_name, table.name]).fetchall()}
    for column in (c for c in table.columns if c not in existing and c in table.nullable):
        conn.execute(f'ALTER TABLE {qualified} ADD COLUMN "{column}" {_duckdb_type(table.columns[column])}')
    lacking = [c for c in table.columns if c not in existing and c not in table.nullable]
    if existing and lacking:  # a required column has no value for the stored rows: say so, change nothing
        raise WarehouseSchemaError(
            f"warehouse table {schema_name}.{table.name} was made by an older version: it lacks the required "
            f"column(s) {lacking}. Nothing was written. Its rows are "
            + ("computed from the raw tables: drop it (DROP TABLE " + qualified + ") and re-materialize its asset"
               if schema_name in DERIVED_SCHEMAS else "source data: move them to the new schema by hand"))
    return qualified


DERIVED_SCHEMAS = ("analytics", "marts", "staging")  # recomputable from raw.* and the configuration


class WarehouseSchemaError(RuntimeError):
    """A stored table does not have a column the code requires."""


def replace_window(conn: duckdb.DuckDBPyConnection, schema_name: str, table: TableSchema, df: pl.DataFrame,
                   start: datetime, end: datetime, time_column: str | None = None) -> int:
    """Replace exactly the rows whose time falls in [start, end) with `df`; returns rows written."""
    column = time_column or table.time_column
    df = table.conform(df, f"{schema_name}.{table.name}")
    outside = df.filter((pl.col(column) < start) | (pl.col(column) >= end))
    if outside.height:
        raise ValueError(f"{schema_name}.{table.name}: {outside.height} row(s) outside [{start}, {end}), "
                         f"first at {outside[column][0]}")
    return replace_rows(conn, schema_name, table, df, f'"{column}" >= ? AND "{column}" < ?', [start, end])


def replace_rows(conn: duckdb.DuckDBPyConnection, schema_name: str, table: TableSchema, df: pl.DataFrame,
                 where: str = "TRUE", params: list | None = None) -> int:
    """Replace the rows matching `where` (all rows by default) with `df` in one transaction."""
    df = table.conform(df, f"{schema_name}.{table.name}")
    conn.execute("BEGIN TRANSACTION")
    try:
        qualified = ensure_table(conn, schema_name, table)
        conn.execute(f"DELETE FROM {qualified} WHERE {where}", params or [])
        _insert(conn, qualified, df)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return df.height


def _insert(conn: duckdb.DuckDBPyConnection, qualified: str, df: pl.DataFrame) -> None:
    if df.height:
        conn.register("_sofia_insert", df.to_arrow())
        try:
            cols = ", ".join(f'"{c}"' for c in df.columns)
            conn.execute(f"INSERT INTO {qualified} ({cols}) SELECT {cols} FROM _sofia_insert")
        finally:
            conn.unregister("_sofia_insert")


def table_exists(conn: duckdb.DuckDBPyConnection, schema_name: str, name: str) -> bool:
    return bool(conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [schema_name, name]).fetchall()[0][0])


def read_window(conn: duckdb.DuckDBPyConnection, schema_name: str, table: TableSchema,
                start: datetime | None = None, end: datetime | None = None) -> pl.DataFrame:
    """Rows of a table in [start, end) (all rows when no window), as a frame of the table's schema;
    an empty frame when the table does not exist yet."""
    if not table_exists(conn, schema_name, table.name):
        return table.empty()
    sql = f'SELECT * FROM "{schema_name}"."{table.name}"'
    params: list = []
    if start is not None and end is not None:
        sql += f' WHERE "{table.time_column}" >= ? AND "{table.time_column}" < ?'
        params = [start, end]
    df = conn.sql(sql, params=params).pl()
    return table.conform(df, f"{schema_name}.{table.name}")


def with_day(table: TableSchema) -> TableSchema:
    """The warehouse form of a daily-partitioned analytics table: the same columns after a `day` column."""
    return TableSchema(table.name, {"day": pl.Date, **table.columns}, ("day", *table.keys), table.nullable,
                       table.time_column, table.description)


def replace_day(conn: duckdb.DuckDBPyConnection, schema_name: str, table: TableSchema, df: pl.DataFrame,
                day) -> int:
    """Replace one partition's rows of a daily-partitioned analytics table (`table` without the day column)."""
    stored = with_day(table)
    df = df.with_columns(pl.lit(day, dtype=pl.Date).alias("day")).select(list(stored.columns))
    return replace_rows(conn, schema_name, stored, df, where="day = ?", params=[day])


def read_day(conn: duckdb.DuckDBPyConnection, schema_name: str, table: TableSchema, day) -> pl.DataFrame:
    """One partition's rows of a daily-partitioned analytics table, without the day column."""
    stored = with_day(table)
    if not table_exists(conn, schema_name, table.name):
        return table.empty()
    df = conn.sql(f'SELECT * FROM "{schema_name}"."{table.name}" WHERE day = ?', params=[day]).pl()
    return table.conform(stored.conform(df, f"{schema_name}.{table.name}").drop("day"), f"{schema_name}.{table.name}")
