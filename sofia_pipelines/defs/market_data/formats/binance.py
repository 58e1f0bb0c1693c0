"""Binance public-data archives (https://github.com/binance/binance-public-data), the unzipped CSVs.

    <SYMBOL>-<interval>-<date>.csv    klines, 12 columns, no header in spot archives (a header in newer futures
                                      ones); open_time in ms, or µs in spot archives since 2025 -> raw.candles,
                                      the timeframe from the file name (1mo -> ccxt's 1M)
    <SYMBOL>-trades-<date>.csv        id, price, qty, quote_qty (base_qty: COIN-M), time, is_buyer_maker[, is_best_match]
    <SYMBOL>-aggTrades-<date>.csv     agg_trade_id, price, quantity, first_trade_id, last_trade_id, transact_time,
                                      is_buyer_maker[, is_best_match]     -> raw.trades, side = taker side
                                      (the buyer was the maker: the taker sold); aggregate ids as `a<id>`
    <SYMBOL>-bookTicker-<date>.csv    update_id, best_bid_price, best_bid_qty, best_ask_price, best_ask_qty,
                                      transaction_time, event_time  -> raw.books (ts = transaction, local_ts = event)
    <SYMBOL>-fundingRate-<month>.csv  calc_time, funding_interval_hours, last_funding_rate -> raw.funding
    futures depth                     symbol, timestamp, first_update_id, last_update_id, side (b/a),
                                      update_type (snap/set/delete), price, qty, pu -> raw.books, rebuilt to top
                                      of book every `cadence_ms` (see top_of_book)
Rows name no venue (it is binance) and, but for depth, no symbol: it comes from the hints or the file name. The
market comes from the hints, else the archive's data/spot or data/futures/{um,cm} path, else the dataset:
bookTicker, fundingRate and depth are futures-only, klines and trades have a header in futures archives only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from sofia_pipelines.defs.market_data.formats.csv_stream import (
    ROW, booleans, choice, csv_batches, first_line, in_time_order, last_per_ts, numbers, raw_frame,
)
from sofia_pipelines.defs.market_data.formats.symbols import Instrument, instrument, markets_for
from sofia_pipelines.defs.market_data.formats.timestamps import TimeParser
from sofia_pipelines.defs.market_data.formats.top_of_book import APPLY_ROWS, DEFAULT_CADENCE_MS, TopOfBookRebuild
from sofia_runtime.schemas import SchemaError

VENUE = "binance"
KLINE_COLUMNS = ["open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "count",
                 "taker_buy_volume", "taker_buy_quote_volume", "ignore"]
TRADE_COLUMNS = ["id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match"]
AGG_TRADE_COLUMNS = ["agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id", "transact_time",
                     "is_buyer_maker", "is_best_match"]
BOOK_TICKER_COLUMNS = ["update_id", "best_bid_price", "best_bid_qty", "best_ask_price", "best_ask_qty",
                       "transaction_time", "event_time"]
FUNDING_COLUMNS = ["calc_time", "funding_interval_hours", "last_funding_rate"]
DEPTH_COLUMNS = ["symbol", "timestamp", "first_update_id", "last_update_id", "side", "update_type", "price", "qty",
                 "pu"]
_INTERVAL = r"\d+(?:s|m|h|d|w|mo)"
FILE_NAME = re.compile(rf"^(?P<symbol>[A-Z0-9_]+)-(?P<kind>{_INTERVAL}|trades|aggTrades|bookTicker|fundingRate)"
                       r"-\d{4}-\d{2}(?:-\d{2})?\.csv(?:\.gz)?$")
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?$")


def _name(path: Path) -> re.Match | None:
    return FILE_NAME.match(path.name)


def _headerless_fields(head: bytes) -> int | None:
    """The number of fields of a header-less first row (all numbers or true/false), else None."""
    cells = first_line(head).split(",")
    if all(_NUMBER.match(c) or c.lower() in ("true", "false") for c in cells):
        return len(cells)
    return None


def _instrument(path: Path, hints, default_market: str, raw_symbol: str | None = None,
                row: int | None = None) -> Instrument:
    venue = getattr(hints, "venue", None) or VENUE
    market = getattr(hints, "market", None) or _archive_market(path) or default_market
    if getattr(hints, "symbol", None) and raw_symbol is None:
        return Instrument(venue, hints.symbol, "perp" if ":" in hints.symbol else "spot", False)
    if raw_symbol is None:
        match = _name(path)
        if match is None:
            raise SchemaError(str(path), "the rows do not name the symbol, the hints do not say it and the file "
                                         "name is not Binance's <SYMBOL>-<dataset>-<date>.csv")
        raw_symbol = match["symbol"]
    return instrument(venue, raw_symbol, market, str(path), markets=markets_for(hints, venue), row=row)


def _archive_market(path: Path) -> str | None:
    """The market the archive's own layout names: data/spot/… or data/futures/um|cm/…"""
    parts = {p.lower() for p in path.parts[:-1]}
    if parts & {"futures", "um", "cm"}:
        return "perp"
    return "spot" if "spot" in parts else None


def _with_instrument(df: pl.DataFrame, inst: Instrument) -> pl.DataFrame:
    return df.with_columns(venue=pl.lit(inst.venue), symbol=pl.lit(inst.symbol), market=pl.lit(inst.market))


def _time(parser: TimeParser, df: pl.DataFrame, column: str) -> pl.Series:
    """An epoch column of a batch as Datetime("ms"), its unit told by magnitude once per file."""
    return parser.parse(df[column], column, int(df[ROW][0]) if df.height else 1)


class _Binance:
    generic = False
    header: list[str] = []
    headerless: dict[int, list[str]] = {}  # field count -> columns, for files without a header
    kind: str | None = None  # the dataset as the file name says it, for header-less files

    def __init__(self, name: str):
        self.name = name

    def _layout(self, path: Path, head: bytes) -> tuple[list[str], bool] | None:
        cells = first_line(head).split(",")
        if self._header_matches(cells):
            return cells, True
        match = _name(path)
        if match and self._kind_matches(match["kind"]) and self.headerless:
            fields = _headerless_fields(head)
            if fields in self.headerless:
                return self.headerless[fields], False
        return None

    def _header_matches(self, cells: list[str]) -> bool:
        return cells[: len(self.header)] == self.header

    def _kind_matches(self, kind: str) -> bool:
        return kind == self.kind

    def matches(self, path: Path, head: bytes) -> bool:
        return self._layout(path, head) is not None

    def _default_market(self, path: Path) -> str:
        """Where neither hints nor path say: spot archives of klines and trades have no header, futures
        archives (since 2022) have one."""
        with open(path, "rb") as fh:
            layout = self._layout(path, fh.read(4096))
        return "perp" if layout and layout[1] else "spot"

    def _batches(self, path: Path) -> Iterator[pl.DataFrame]:
        with open(path, "rb") as fh:
            layout = self._layout(path, fh.read(4096))
        if layout is None:
            raise SchemaError(str(path), f"not a {self.name} file: expected the columns {self.header}")
        yield from csv_batches(path, *layout)


class BinanceKlines(_Binance):
    header = KLINE_COLUMNS[:6]
    headerless = {12: KLINE_COLUMNS}

    def _kind_matches(self, kind):
        return re.fullmatch(_INTERVAL, kind) is not None

    def read(self, path: Path, hints) -> Iterator[tuple[str, pl.DataFrame]]:
        origin = str(path)
        match = _name(path)
        timeframe = getattr(hints, "timeframe", None) or (match["kind"] if match else None)
        if timeframe is None:
            raise SchemaError(origin, "the timeframe is in neither the hints nor the file name "
                                      "(<SYMBOL>-<interval>-<date>.csv)")
        timeframe = "1M" if timeframe == "1mo" else timeframe
        inst = _instrument(path, hints, self._default_market(path))
        open_time = TimeParser(origin)  # ms, or µs in spot archives since 2025: the file's magnitude says
        for df in self._batches(path):
            df = numbers(df, ("open", "high", "low", "close", "volume"), origin)
            df = _with_instrument(df.with_columns(_time(open_time, df, "open_time").alias("ts"),
                                                  timeframe=pl.lit(timeframe)), inst)
            yield "candles", raw_frame("candles", df)


class _BinanceTrades(_Binance):
    id_column = price_column = amount_column = time_column = ""
    id_prefix = ""

    def read(self, path: Path, hints) -> Iterator[tuple[str, pl.DataFrame]]:
        origin = str(path)
        inst = _instrument(path, hints, self._default_market(path))
        times = TimeParser(origin)

        def frames():
            for df in self._batches(path):
                df = numbers(df, (self.id_column,), origin, dtype=pl.Int64)
                df = numbers(df, (self.price_column, self.amount_column), origin)
                maker_bought = booleans(df, "is_buyer_maker", origin)
                df = df.with_columns(
                    _time(times, df, self.time_column).alias("ts"),
                    (pl.lit(self.id_prefix) + pl.col(self.id_column).cast(pl.Utf8)).alias("trade_id"),
                    pl.when(maker_bought).then(pl.lit("sell")).otherwise(pl.lit("buy")).alias("side"),
                    pl.col(self.price_column).alias("price"), pl.col(self.amount_column).alias("amount"))
                yield _with_instrument(df, inst)

        for df in in_time_order(frames(), origin):
            yield "trades", raw_frame("trades", df)


class BinanceTrades(_BinanceTrades):
    header = TRADE_COLUMNS[:6]
    headerless = {6: TRADE_COLUMNS[:6], 7: TRADE_COLUMNS}
    kind = "trades"
    id_column, price_column, amount_column, time_column = "id", "price", "qty", "time"

    def _header_matches(self, cells):  # COIN-M futures name the fourth column base_qty
        return len(cells) >= 6 and cells[:3] + cells[4:6] == self.header[:3] + self.header[4:6]


class BinanceAggTrades(_BinanceTrades):
    header = AGG_TRADE_COLUMNS[:7]
    headerless = {7: AGG_TRADE_COLUMNS[:7], 8: AGG_TRADE_COLUMNS}
    kind = "aggTrades"
    id_column, price_column, amount_column, time_column = "agg_trade_id", "price", "quantity", "transact_time"
    id_prefix = "a"  # aggregate ids count differently from trade ids: the two never share a key


class BinanceBookTicker(_Binance):
    header = BOOK_TICKER_COLUMNS

    def read(self, path: Path, hints) -> Iterator[tuple[str, pl.DataFrame]]:
        origin = str(path)
        inst = _instrument(path, hints, "perp")
        names = {"best_bid_price": "bid", "best_bid_qty": "bid_size", "best_ask_price": "ask",
                 "best_ask_qty": "ask_size"}

        transaction, event = TimeParser(origin), TimeParser(origin)

        def frames():
            for df in self._batches(path):
                df = numbers(df, names, origin).rename(names)
                yield _with_instrument(df.with_columns(_time(transaction, df, "transaction_time").alias("ts"),
                                                       _time(event, df, "event_time").alias("local_ts")), inst)

        for df in last_per_ts(in_time_order(frames(), origin)):
            yield "books", raw_frame("books", df)


class BinanceFundingRate(_Binance):
    header = FUNDING_COLUMNS

    def read(self, path: Path, hints) -> Iterator[tuple[str, pl.DataFrame]]:
        origin = str(path)
        inst = _instrument(path, hints, "perp")
        if inst.market != "perp":
            raise SchemaError(origin, f"funding rates are a perp's; {inst.symbol} is {inst.market}")
        calc_time = TimeParser(origin)
        for df in self._batches(path):
            df = numbers(df, ("last_funding_rate",), origin)
            df = df.with_columns(_time(calc_time, df, "calc_time").alias("ts"),
                                 pl.col("last_funding_rate").alias("funding_rate"))
            yield "funding", raw_frame("funding", _with_instrument(df, inst))


class BinanceDepth(_Binance):
    header = DEPTH_COLUMNS

    def __init__(self, name: str = "binance_depth", cadence_ms: int = DEFAULT_CADENCE_MS):
        super().__init__(name)
        self.cadence_ms = cadence_ms

    def read(self, path: Path, hints) -> Iterator[tuple[str, pl.DataFrame]]:
        origin = str(path)
        cadence = getattr(hints, "book_cadence_ms", None) or self.cadence_ms
        books: dict[str, tuple[Instrument, TopOfBookRebuild]] = {}
        times = TimeParser(origin)
        for df in self._batches(path):
            df = numbers(df, ("last_update_id",), origin, dtype=pl.Int64)
            df = df.with_columns(_time(times, df, "timestamp").dt.epoch("ms").alias("timestamp"))
            df = numbers(df, ("price", "qty"), origin)
            df = df.with_columns(
                (choice(df, "side", {"b": "b", "a": "a"}, origin) == "b").alias("is_bid"),
                choice(df, "update_type", {"snap": "snap", "set": "set", "delete": "delete"}, origin)
                .alias("update_type"))
            if df["symbol"].null_count():
                raise SchemaError(origin, "empty where a value is required",
                                  row=int(df.filter(pl.col("symbol").is_null())[ROW][0]), field="symbol")
            out = []
            for (raw_symbol,), part in df.partition_by(["symbol"], as_dict=True, maintain_order=True).items():
                if raw_symbol not in books:
                    books[raw_symbol] = (_instrument(path, hints, "perp", raw_symbol, row=int(part[ROW][0])),
                                         TopOfBookRebuild(cadence_ms=cadence))
                inst, book = books[raw_symbol]
                for chunk in part.iter_slices(APPLY_ROWS):
                    snapshot_id = chunk.select(pl.when(pl.col("update_type") == "snap").then(pl.col("last_update_id")))
                    book.apply(chunk[ROW].to_list(), chunk["timestamp"].to_list(), [None] * chunk.height,
                               chunk["is_bid"].to_list(), chunk["price"].to_list(), chunk["qty"].to_list(),
                               snapshot_id.to_series().to_list(), (chunk["update_type"] == "delete").to_list())
                out.append(book.take(inst.venue, inst.symbol, inst.market))
            out = [frame for frame in out if frame.height]
            if out:
                yield "books", pl.concat(out)
        for inst, book in books.values():
            book.finish()
            last = book.take(inst.venue, inst.symbol, inst.market)
            if last.height:
                yield "books", last
            book.check_rebuilt(origin, inst.venue, inst.symbol, "update_type")


FORMATS = [
    BinanceKlines("binance_klines"),
    BinanceTrades("binance_trades"),
    BinanceAggTrades("binance_agg_trades"),
    BinanceBookTicker("binance_book_ticker"),
    BinanceFundingRate("binance_funding_rate"),
    BinanceDepth(),
]
