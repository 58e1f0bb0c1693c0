"""File formats the files source reads, and the registry that tells them apart.

A format is an object with
    name: str
    matches(path, head) -> bool      decided from the file's first bytes (`head`, up to HEAD_BYTES) and, only
                                     where the format itself carries no column names, from the file name
    read(path, hints) -> Iterator[tuple[str, pl.DataFrame]]
                                     yields (raw table name, frame with that raw table's columns) in bounded
                                     batches, covering the file's rows in order (the source numbers rows by
                                     them); `check_raw_frame` is applied by the source, not by the format
    times(path, hints) -> Iterator[tuple[str, pl.Series]]   optional: (table, ts) reading the time column only
Formats whose rows do not name venue, symbol, market or timeframe take them from `hints`, which the source
works out from the path (`files.hints_from_path`). The modules listing formats (`_MODULES`: columns,
ccxt_json, tardis, binance) each expose `FORMATS: list[Format]`; one with `generic = True` (named by column
names alone) is tried after the others.
"""

from __future__ import annotations

import gzip
import importlib
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import polars as pl

from sofia_runtime.schemas import RAW_TABLES, SchemaError

HEAD_BYTES = 4096
BATCH_ROWS = 250_000  # rows per yielded frame: bounded memory on multi-GB files
IGNORED_SUFFIXES = (".md",)  # README.md, SOURCE.md: documentation beside the data


@dataclass(frozen=True)
class FileHints:
    """What the path says about a file's rows: None where the path does not say it."""

    venue: str | None = None
    symbol: str | None = None  # ccxt unified: BTC/USDT, BTC/USDT:USDT
    market: str | None = None  # "spot" or "perp"
    timeframe: str | None = None  # ccxt style: "1m", "5m", "1h", "8h", "1d"
    kind: str | None = None  # what the file name says it holds: "candles", "funding", "mark", "trades" …
    # ccxt load_markets() dumps found in DIR, by venue: they turn a vendor's symbol into ccxt's
    markets: Mapping | None = field(default=None, compare=False, repr=False)

    def require(self, origin: str, *names: str) -> None:
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise SchemaError(origin, f"the file's rows do not name {missing} and the path does not say them "
                                      "(expected e.g. <venue>_<BASE>_<QUOTE>[_<SETTLE>]_<timeframe>.parquet)")


class Format(Protocol):
    name: str

    def matches(self, path: Path, head: bytes) -> bool: ...

    def read(self, path: Path, hints: FileHints) -> Iterator[tuple[str, pl.DataFrame]]: ...


_MODULES = ("columns", "ccxt_json", "tardis", "binance")


def registered() -> list[Format]:
    """Every known format, most specific first (a format's module that is absent is simply not there yet)."""
    formats: list[Format] = []
    for module in _MODULES:
        try:
            mod = importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{module}":
                raise
            continue
        formats.extend(mod.FORMATS)
    # vendor formats (tardis, binance) are more specific than the generic column formats: try them first
    return sorted(formats, key=lambda f: getattr(f, "generic", False))


def is_ignored(path: Path) -> bool:
    """Documentation and hidden files beside the data: listed, never read."""
    return path.name.startswith(".") or path.suffix.lower() in IGNORED_SUFFIXES


def read_head(path: Path) -> bytes:
    """The first HEAD_BYTES of the file; of a gzip file, of its content."""
    with open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as fh:
                return fh.read(HEAD_BYTES)
        except (OSError, EOFError, zlib.error) as exc:
            raise SchemaError(str(path), f"unreadable gzip file: {exc}") from exc
    return head


def fill_from_hints(df: pl.DataFrame, table: str, hints: FileHints, origin: str) -> pl.DataFrame:
    """Add the venue, symbol, market and timeframe columns the table needs and the rows do not name, from the
    path; a perp's market follows from its symbol (BTC/USDT:USDT)."""
    wanted = [c for c in ("venue", "symbol", "timeframe") if c in RAW_TABLES[table].columns and c not in df.columns]
    hints.require(origin, *wanted)
    df = df.with_columns(pl.lit(getattr(hints, c)).alias(c) for c in wanted)
    if "market" in RAW_TABLES[table].columns and "market" not in df.columns:
        market = pl.lit(hints.market) if hints.market else \
            pl.when(pl.col("symbol").str.contains(":")).then(pl.lit("perp")).otherwise(pl.lit("spot"))
        df = df.with_columns(market.alias("market"))
    return df


def format_of(path: Path) -> Format:
    """The one format that reads `path`; an error naming the file and what was expected otherwise."""
    head = read_head(path)
    formats = registered()
    for fmt in formats:
        if fmt.matches(path, head):
            return fmt
    raise SchemaError(str(path), "not a file in a known format; expected one of "
                                 f"{[f.name for f in formats]} (see README, Sources)")
