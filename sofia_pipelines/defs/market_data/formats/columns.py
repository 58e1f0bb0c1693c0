"""Tables named by their columns: OHLCV and funding (freqtrade's Parquet/Feather, CSV with a header) and
Sofia's own raw-table columns (RAW_TABLES) for books, quotes, trades, funding, latency and fx.

    timestamp,open,high,low,close,volume             -> candles (time: ts | timestamp | date | time | datetime)
    timestamp,funding_rate                           -> funding
    ts,bid,ask,bid_size,ask_size                     -> books (a quotes file is a book's top; the last update of
                                                        each millisecond, as for every book format)
    timestamp,id,side,price,amount,cost              -> trades (freqtrade's `id` is the trade id)
    timestamp,trade_id,price,quantity,buyer_maker    -> trades (quantity|qty = amount; buyer maker = taker sold)
    venue,endpoint,ts,latency_ms,ok,error            -> latency
    pair,ts,rate                                     -> fx
Columns a file does not have (venue, symbol, market, timeframe) come from the path (`FileHints`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from sofia_pipelines.defs.market_data.formats import BATCH_ROWS, FileHints, fill_from_hints
from sofia_pipelines.defs.market_data.formats.csv_stream import ROW, csv_batches, last_per_ts
from sofia_pipelines.defs.market_data.formats.timestamps import TimeParser
from sofia_runtime.schemas import SchemaError

TIME_COLUMNS = ("ts", "timestamp", "date", "time", "datetime")
# the columns that say which raw table a file is, most specific first
SIGNATURES = (
    ("latency", {"endpoint", "ok"}),
    ("fx", {"pair", "rate"}),
    ("books", {"bid", "ask"}),
    ("funding", {"funding_rate"}),
    ("candles", {"open", "high", "low", "close"}),
    ("trades", {"price", "amount"}),
)
RENAMES = {"trades": {"id": "trade_id"}}
# other names tape files give the same column (Nautilus/Binance style trades: quantity, qty)
ALIASES = {"quantity": "amount", "qty": "amount"}
# a taker-side flag instead of `side`: the buyer was the maker, so the taker sold
BUYER_MAKER = ("buyer_maker", "is_buyer_maker")


def table_of(columns: list[str]) -> str | None:
    names = {ALIASES.get(c.lower(), c.lower()) for c in columns}
    if not names & set(TIME_COLUMNS):
        return None
    return next((table for table, needed in SIGNATURES if needed <= names), None)


def _time_column(columns: list[str]) -> str:
    return next(c for name in TIME_COLUMNS for c in columns if c.lower() == name)


class _Columns:
    generic = True  # named by column names alone: vendor formats are tried first

    def matches(self, path: Path, head: bytes) -> bool:
        return self._magic(head) and table_of(self.columns(path, head)) is not None

    def read(self, path: Path, hints: FileHints) -> Iterator[tuple[str, pl.DataFrame]]:
        frames = self._frames(path, hints)
        if table_of(self.columns(path, read_head_cached(path))) == "books":
            # raw.books holds one book per millisecond, the key Tardis and Binance books are read to as well: of
            # several updates within one millisecond the last is the book at that millisecond
            yield from (("books", f) for f in last_per_ts((f for _, f in frames), ("venue", "symbol")))
        else:
            yield from frames

    def _frames(self, path: Path, hints: FileHints) -> Iterator[tuple[str, pl.DataFrame]]:
        origin = str(path)
        columns = self.columns(path, read_head_cached(path))
        table = table_of(columns)
        time_col = _time_column(columns)
        parser, rows = TimeParser(origin), 1
        for batch in self.batches(path):
            batch = batch.rename({c: ALIASES.get(c.lower(), c.lower()) for c in batch.columns})
            batch = batch.rename({k: v for k, v in RENAMES.get(table, {}).items() if k in batch.columns})
            if table == "trades" and "side" not in batch.columns:
                batch = _side_from_buyer_maker(batch, origin, rows)
            parsed = [parser.parse(batch[time_col.lower()], time_col, rows).alias("ts")]
            if "local_ts" in batch.columns:
                parsed.append(TimeParser(origin, parser.unit).parse(batch["local_ts"], "local_ts", rows))
            batch = batch.with_columns(parsed)
            if table == "latency":
                batch = batch.with_columns(_booleans(batch["ok"], origin, rows))
            yield table, fill_from_hints(batch, table, hints, origin)
            rows += batch.height


    def times(self, path: Path, hints: FileHints) -> Iterator[tuple[str, pl.Series]]:
        """(table, ts) per batch, reading the time column only: what `available_days` needs."""
        columns = self.columns(path, read_head_cached(path))
        table, time_col = table_of(columns), _time_column(columns)
        parser, rows = TimeParser(str(path)), 1
        for batch in self.batches(path, [time_col]):
            yield table, parser.parse(batch[time_col], time_col, rows)
            rows += batch.height


def _side_from_buyer_maker(batch: pl.DataFrame, origin: str, first_row: int) -> pl.DataFrame:
    """`side` (the taker's) from a buyer-was-maker flag, boolean or text; a file with neither is refused."""
    flag = next((c for c in BUYER_MAKER if c in batch.columns), None)
    if flag is None:
        raise SchemaError(origin, "trades need `side` (buy/sell, the taker's) or a buyer_maker flag", field="side")
    values = _booleans(batch[flag], origin, first_row)
    return batch.with_columns(pl.when(values).then(pl.lit("sell")).otherwise(pl.lit("buy")).alias("side"))


def _booleans(column: pl.Series, origin: str, first_row: int) -> pl.Series:
    """A flag column as booleans, from booleans or text (true/false, 1/0); anything else names its row."""
    values = column if column.dtype == pl.Boolean else column.cast(pl.Utf8).str.strip_chars().str.to_lowercase() \
        .replace_strict({"true": True, "1": True, "false": False, "0": False}, default=None, return_dtype=pl.Boolean)
    bad = values.is_null()
    if bad.any():
        row = int(bad.arg_true()[0])
        raise SchemaError(origin, f"{column[row]!r} is not true or false", row=first_row + row, field=column.name)
    return values


def _arrow_readable(kind: str, path: Path, read):
    """`read()`, with what pyarrow raises for a damaged file (cut short, a byte changed) turned into a SchemaError
    naming the file."""
    try:
        return read()
    except (OSError, pa.ArrowException) as exc:
        raise SchemaError(str(path), f"unreadable {kind} file (damaged or cut short?): {exc}") from exc


def _arrow_batches(kind: str, path: Path, batches: Iterator) -> Iterator[pl.DataFrame]:
    it = iter(_arrow_readable(kind, path, lambda: batches))
    while True:
        batch = _arrow_readable(kind, path, lambda: next(it, None))
        if batch is None:
            return
        yield pl.from_arrow(batch)


class ParquetColumns(_Columns):
    name = "parquet with named columns (freqtrade OHLCV/funding/trades, Sofia raw tables)"

    def _magic(self, head: bytes) -> bool:
        return head[:4] == b"PAR1"

    def columns(self, path: Path, head: bytes) -> list[str]:
        return _arrow_readable("Parquet", path, lambda: pq.read_schema(path).names)

    def batches(self, path: Path, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
        parquet = _arrow_readable("Parquet", path, lambda: pq.ParquetFile(path))
        yield from _arrow_batches("Parquet", path, parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns))


class FeatherColumns(_Columns):
    name = "feather (Arrow IPC) with named columns (freqtrade's own data folder)"

    def _magic(self, head: bytes) -> bool:
        return head[:6] == b"ARROW1"

    def columns(self, path: Path, head: bytes) -> list[str]:
        def read():
            with pa.memory_map(str(path)) as source:
                return pa.ipc.open_file(source).schema.names
        return _arrow_readable("Feather", path, read)

    def batches(self, path: Path, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
        with pa.memory_map(str(path)) as source:
            reader = _arrow_readable("Feather", path, lambda: pa.ipc.open_file(source))
            for i in range(reader.num_record_batches):
                batch = _arrow_readable("Feather", path, lambda: reader.get_batch(i))
                if columns:
                    batch = batch.select(columns)
                for start in range(0, batch.num_rows, BATCH_ROWS):
                    yield pl.from_arrow(batch.slice(start, BATCH_ROWS))


class CsvColumns(_Columns):
    name = "CSV with a header naming the columns (timestamp|date, open … volume; funding_rate; Sofia raw tables)"

    def _magic(self, head: bytes) -> bool:  # `head` of a gzip file is its content: .csv.gz reads too
        return b"\0" not in head and head.lstrip()[:1] not in (b"[", b"{")

    def columns(self, path: Path, head: bytes) -> list[str]:
        first = head.decode("utf-8", errors="replace").lstrip("\ufeff").splitlines()[:1]
        return [c.strip().strip('"') for c in first[0].split(",")] if first else []

    def batches(self, path: Path, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
        # all text: cells that are not numbers are reported by the schema, naming row and field
        header = self.columns(path, read_head_cached(path))
        for frame in csv_batches(path, header, has_header=True, include=columns):
            yield frame.drop(ROW)


def read_head_cached(path: Path) -> bytes:
    from sofia_pipelines.defs.market_data.formats import read_head

    return read_head(path)


FORMATS = [ParquetColumns(), FeatherColumns(), CsvColumns()]
