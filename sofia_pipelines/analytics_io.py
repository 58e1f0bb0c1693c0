"""What the daily analytics assets share: the trailing window they read and how they read marts."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import polars as pl

from sofia_pipelines.partitions import partition_window
from sofia_pipelines.warehouse import table_exists

LOOKBACK_DAYS = 7


def trailing_window(partition_key: str, days: int = LOOKBACK_DAYS) -> tuple[datetime, datetime]:
    """The partition's day and the days before it, [start, end): analytics for day D use what was known by D's end."""
    start, end = partition_window(partition_key)
    return start - timedelta(days=days - 1), end


def read_mart(conn: duckdb.DuckDBPyConnection, name: str, start: datetime, end: datetime) -> pl.DataFrame:
    if not table_exists(conn, "marts", name):
        raise LookupError(f"marts.{name} does not exist yet: materialize the dbt assets for this partition first")
    return conn.sql(f"SELECT * FROM marts.{name} WHERE hour >= ? AND hour < ?", params=[start, end]).pl()
