"""The one daily partitioning of the whole graph."""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta

import dagster as dg

PARTITION_START = os.environ.get("SOFIA_PARTITION_START", "2017-01-01")

daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITION_START, timezone="UTC")


def partition_window(partition_key: str) -> tuple[datetime, datetime]:
    """[start, end) of a daily partition as naive UTC datetimes."""
    start = datetime.combine(date.fromisoformat(partition_key), datetime.min.time())
    return start, start + timedelta(days=1)
