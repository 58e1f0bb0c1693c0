"""The one interface every market-data source implements, and the choice of source by spec."""

from __future__ import annotations

from datetime import date, datetime
from typing import Protocol

import numpy as np
import polars as pl

from sofia_runtime.schemas import RAW_TABLES, SchemaError

# The row rules of the raw tables, one definition: `check_raw_frame` refuses a frame that breaks one before
# anything is written, and the Great Expectations suite (expectations.py) checks the same rules on what is stored.
PRICE_CEILING = 1e12  # finite and below this: catches inf and garbage such as an epoch time in a price column
PRICE_COLUMNS = {
    "candles": ("open", "high", "low", "close"),
    "books": ("bid", "ask"),
    "trades": ("price", "amount"),
    "fx": ("rate",),
}
# (a, b, or_equal): column a >= b (or > b) on every row
ORDERED_PAIRS = {
    "candles": (("high", "open", True), ("high", "close", True), ("open", "low", True), ("close", "low", True)),
    "books": (("ask", "bid", False),),
}
NON_NEGATIVE = {"candles": ("volume",)}
# A perp's funding rate per interval beyond ±5 % means bad data (a percentage stored as a fraction), not a
# market: venues cap it at ±0.75 %–4 % (Hyperliquid 4 % an hour); real rates do exceed 1 % (Binance BTCUSDT's
# first funding, 2019-10-09, was -3.75 %).
FUNDING_RATE_BOUND = 0.05
TRADE_SIDES = ("buy", "sell")
# ccxt's timeframes: a count and a unit (s, m, h, d, w, M = month); staging turns them into bar seconds
TIMEFRAME_PATTERN = r"^[1-9][0-9]*[smhdwM]$"
LATENCY_CEILING_MS = 600_000


def _first_bad(df: pl.DataFrame, good: pl.Expr) -> int | None:
    bad = df.select((~good).fill_null(True).arg_true().first()).item()
    return None if bad is None else int(bad)


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
    non-positive prices, a candle's high below its low or open/close outside [low, high], negative volume,
    a crossed book, a trade side other than buy/sell, an out-of-bounds funding rate or latency, duplicate
    keys, time going backwards within a series. Errors name the origin, the row (counting from
    `row_offset`) and the field."""
    schema = RAW_TABLES[table]
    df = schema.conform(df, origin, row_offset)

    def refuse(good: pl.Expr, field: str, message) -> None:
        row = _first_bad(df, good)
        if row is not None:
            raise SchemaError(origin, message(df.row(row, named=True)), row=row + row_offset, field=field)

    for column in PRICE_COLUMNS.get(table, ()):
        refuse(pl.col(column).is_between(0, PRICE_CEILING, closed="none"), column,
               lambda r, c=column: f"price {r[c]!r} is not a finite positive number")
    for a, b, or_equal in ORDERED_PAIRS.get(table, ()):
        good = pl.col(a) >= pl.col(b) if or_equal else pl.col(a) > pl.col(b)
        refuse(good, a, lambda r, a=a, b=b, e=or_equal: f"{a} {r[a]!r} is {'below' if e else 'not above'} "
                                                        f"{b} {r[b]!r}")
    for column in NON_NEGATIVE.get(table, ()):
        refuse(pl.col(column).is_between(0, float("inf")), column,
               lambda r, c=column: f"{c} {r[c]!r} is negative or not a number")
    if table == "funding":
        refuse(pl.col("funding_rate").is_between(-FUNDING_RATE_BOUND, FUNDING_RATE_BOUND), "funding_rate",
               lambda r: f"funding rate {r['funding_rate']!r} is not finite or beyond ±{FUNDING_RATE_BOUND:.0%}")
    if table == "candles":
        refuse(pl.col("timeframe").str.contains(TIMEFRAME_PATTERN), "timeframe",
               lambda r: f"timeframe {r['timeframe']!r} is not a ccxt timeframe (1m, 5m, 1h, 8h, 1d …)")
    if table == "trades":
        refuse(pl.col("side").is_in(TRADE_SIDES), "side", lambda r: f"side {r['side']!r} is not buy or sell")
    if table == "latency":
        refuse(~pl.col("ok") | pl.col("latency_ms").is_between(0, LATENCY_CEILING_MS), "latency_ms",
               lambda r: f"latency {r['latency_ms']!r} ms of a successful probe is not in [0, {LATENCY_CEILING_MS}]")
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
