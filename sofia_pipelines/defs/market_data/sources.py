"""The one interface every market-data source implements, and the choice of source by spec."""

from __future__ import annotations

from datetime import date, datetime
from typing import Protocol

import numpy as np
import polars as pl

from sofia_runtime.schemas import RAW_TABLES, SchemaError

PRICE_COLUMNS = {
    "candles": ("open", "high", "low", "close"),
    "books": ("bid", "ask"),
    "trades": ("price", "amount"),
    "fx": ("rate",),
}


class MarketSource(Protocol):
    name: str

    def provides(self) -> frozenset[str]:
        """The raw tables this source has."""

    def load(self, table: str, start: datetime, end: datetime) -> pl.DataFrame:
        """Rows of `table` with ts in [start, end), conforming to RAW_TABLES[table]."""

    def available_days(self) -> list[date]:
        """The UTC days this source has data for."""


def source_from_spec(spec: str) -> MarketSource:
    """`simulated`, `files:DIR` or `ccxt:VENUE[,VENUE…]` (the value of SOFIA_SOURCE)."""
    kind, _, arg = spec.partition(":")
    if kind == "simulated" and not arg:
        from sofia_runtime.simulator import MarketSimulator

        return MarketSimulator()
    if kind == "files" and arg:
        from sofia_pipelines.defs.market_data.files import FilesSource

        return FilesSource(arg)
    if kind == "ccxt" and arg:
        from sofia_pipelines.defs.market_data.ccxt_source import CcxtSource

        return CcxtSource([v.strip() for v in arg.split(",") if v.strip()])
    raise ValueError(f"SOFIA_SOURCE={spec!r} is not a source; use 'simulated', 'files:DIR' or 'ccxt:VENUE[,VENUE…]'")


def series_order(schema) -> list[str]:
    """The columns that name one series (venue, symbol …) followed by time: the order rows are kept in."""
    return [k for k in schema.keys if k not in ("ts", "trade_id")] + ["ts"]


def check_raw_frame(table: str, df: pl.DataFrame, origin: str, row_offset: int = 1) -> pl.DataFrame:
    """Conform `df` to the raw table and refuse what would poison the warehouse: non-finite or
    non-positive prices, duplicate keys, time going backwards within a series. Errors name the
    origin, the row (counting from `row_offset`) and the field."""
    schema = RAW_TABLES[table]
    df = schema.conform(df, origin)
    for column in PRICE_COLUMNS.get(table, ()):
        values = df[column].to_numpy()
        bad = ~np.isfinite(values) | (values <= 0)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise SchemaError(origin, f"price {values[row]!r} is not a finite positive number",
                              row=row + row_offset, field=column)
    if table == "funding":
        rates = df["funding_rate"].to_numpy()
        if not np.isfinite(rates).all():
            row = int(np.flatnonzero(~np.isfinite(rates))[0])
            raise SchemaError(origin, f"funding rate {rates[row]!r} is not finite", row=row + row_offset,
                              field="funding_rate")
    series = series_order(schema)[:-1]
    indexed = df.with_row_index("_row")
    dup = indexed.filter(~pl.struct(list(schema.keys)).is_first_distinct())
    if dup.height:
        first = dup[0]
        raise SchemaError(origin, f"duplicate row for key {dict(zip(schema.keys, first.select(schema.keys).row(0)))}",
                          row=int(first["_row"][0]) + row_offset, field=schema.keys[-1])
    backwards = indexed.filter((pl.col("ts") < pl.col("ts").shift(1).over(series)).fill_null(False))
    if backwards.height:
        raise SchemaError(origin, f"out of order: {backwards['ts'][0]} comes after a later time",
                          row=int(backwards["_row"][0]) + row_offset, field="ts")
    return df
