"""Tardis.dev CSV datasets (https://docs.tardis.dev/downloadable-csv-files), plain or gzipped.

Every file starts `exchange,symbol,timestamp,local_timestamp` (epoch µs: exchange time, receive time); the
columns after those name the dataset:
    trades               id, side (taker side: buy/sell), price, amount                  -> raw.trades
    book_snapshot_N      asks[i].price, asks[i].amount, bids[i].price, bids[i].amount     -> raw.books (level 0)
    quotes               ask_amount, ask_price, bid_price, bid_amount                     -> raw.books
    incremental_book_L2  is_snapshot, side (bid/ask), price, amount (0 removes the level) -> raw.books, rebuilt
                         to top of book every `cadence_ms` (see top_of_book)
    derivative_ticker    funding_timestamp, funding_rate, …, index_price, mark_price      -> raw.funding: per
                         funding time, the last rate seen at or before it (the rate charged then)
Tardis exchange ids and symbols become ccxt ids and unified symbols (formats.symbols).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl

from sofia_pipelines.defs.market_data.formats.csv_stream import (
    ROW, booleans, choice, csv_batches, epoch_us, first_line, header_of, in_time_order, last_per_ts, numbers,
    raw_frame,
)
from sofia_pipelines.defs.market_data.formats.symbols import instrument, markets_for, tardis_venue
from sofia_pipelines.defs.market_data.formats.top_of_book import APPLY_ROWS, DEFAULT_CADENCE_MS, TopOfBookRebuild
from sofia_runtime.schemas import SchemaError

COMMON = ("exchange", "symbol", "timestamp", "local_timestamp")
TIMES = ("timestamp", "local_timestamp")


def _instruments(df: pl.DataFrame, origin: str, hints, cache: dict) -> pl.DataFrame:
    """Add venue, symbol (unified) and market from each row's Tardis exchange id and symbol."""
    pairs = df.select("exchange", "symbol", ROW).unique(["exchange", "symbol"], keep="first")
    rows = []
    for exchange, raw_symbol, row in pairs.iter_rows():
        key = (exchange, raw_symbol)
        if key not in cache:
            if exchange is None or raw_symbol is None:
                raise SchemaError(origin, "empty where a value is required", row=row,
                                  field="exchange" if exchange is None else "symbol")
            venue, market = tardis_venue(exchange, origin, row)
            cache[key] = instrument(venue, raw_symbol, market, origin, markets=markets_for(hints, venue), row=row)
        inst = cache[key]
        rows.append((exchange, raw_symbol, inst.venue, inst.symbol, inst.market))
    table = pl.DataFrame(rows, schema=["exchange", "symbol", "venue", "_unified", "market"], orient="row")
    return (df.join(table, on=["exchange", "symbol"], how="left", maintain_order="left")
            .drop("symbol").rename({"_unified": "symbol"}))


def _times(df: pl.DataFrame, origin: str) -> pl.DataFrame:
    df = numbers(df, TIMES, origin, dtype=pl.Int64)
    return df.with_columns(epoch_us("timestamp").alias("ts"), epoch_us("local_timestamp").alias("local_ts"))


class _Tardis:
    generic = False

    def __init__(self, name: str, table: str):
        self.name, self.table = name, table

    def _tail_matches(self, tail: list[str]) -> bool:
        raise NotImplementedError

    def matches(self, path: Path, head: bytes) -> bool:
        columns = first_line(head).split(",")
        return tuple(columns[:4]) == COMMON and self._tail_matches(columns[4:])

    def _batches(self, path: Path, include: list[str] | None = None) -> Iterator[pl.DataFrame]:
        columns = header_of(path)
        for frame in csv_batches(path, columns, has_header=True):
            yield frame if include is None else frame.select([*include, ROW])


class TardisTrades(_Tardis):
    def _tail_matches(self, tail):
        return tail[:4] == ["id", "side", "price", "amount"]

    def read(self, path: Path, hints) -> Iterator[tuple[str, pl.DataFrame]]:
        origin, cache = str(path), {}

        def frames():
            for df in self._batches(path, [*COMMON, "id", "side", "price", "amount"]):
                df = numbers(_times(df, origin), ("price", "amount"), origin)
                if df["id"].null_count():
                    raise SchemaError(origin, "empty trade id", row=int(df.filter(pl.col("id").is_null())[ROW][0]),
                                      field="id")
                side = choice(df, "side", {"buy": "buy", "sell": "sell"}, origin)
                yield _instruments(df.with_columns(side.alias("side"), pl.col("id").alias("trade_id")),
                                   origin, hints, cache)

        for df in in_time_order(frames(), origin, series=("venue", "symbol")):
            yield "trades", raw_frame("trades", df)


class TardisBookSnapshot(_Tardis):
    """book_snapshot_5, book_snapshot_25 …: level 0 of each side is the top of book."""

    def _tail_matches(self, tail):
        return tail[:4] == ["asks[0].price", "asks[0].amount", "bids[0].price", "bids[0].amount"]

    def read(self, path: Path, hints) -> Iterator[tuple[str, pl.DataFrame]]:
        origin, cache = str(path), {}
        names = {"asks[0].price": "ask", "asks[0].amount": "ask_size", "bids[0].price": "bid",
                 "bids[0].amount": "bid_size"}
        yield from _books(origin, (_instruments(_times(numbers(df, names, origin), origin).rename(names),
                                                origin, hints, cache)
                                   for df in self._batches(path, [*COMMON, *names])))


class TardisQuotes(_Tardis):
    def _tail_matches(self, tail):
        return tail[:4] == ["ask_amount", "ask_price", "bid_price", "bid_amount"]

    def read(self, path: Path, hints) -> Iterator[tuple[str, pl.DataFrame]]:
        origin, cache = str(path), {}
        names = {"ask_price": "ask", "ask_amount": "ask_size", "bid_price": "bid", "bid_amount": "bid_size"}
        yield from _books(origin, (_instruments(_times(numbers(df, names, origin), origin).rename(names),
                                                origin, hints, cache)
                                   for df in self._batches(path, [*COMMON, *names])))


def _books(origin: str, frames) -> Iterator[tuple[str, pl.DataFrame]]:
    series = ("venue", "symbol")
    for df in last_per_ts(in_time_order(frames, origin, series=series), series=series):
        yield "books", raw_frame("books", df)


class TardisIncrementalBook(_Tardis):
    def __init__(self, name: str = "tardis_incremental_book_L2", cadence_ms: int = DEFAULT_CADENCE_MS):
        super().__init__(name, "books")
        self.cadence_ms = cadence_ms

    def _tail_matches(self, tail):
        return tail[:4] == ["is_snapshot", "side", "price", "amount"]

    def read(self, path: Path, hints) -> Iterator[tuple[str, pl.DataFrame]]:
        origin, cache = str(path), {}
        cadence = getattr(hints, "book_cadence_ms", None) or self.cadence_ms
        books: dict[tuple[str, str, str], TopOfBookRebuild] = {}
        for df in self._batches(path, [*COMMON, "is_snapshot", "side", "price", "amount"]):
            df = numbers(numbers(df, TIMES, origin, dtype=pl.Int64), ("price", "amount"), origin)
            df = df.with_columns(booleans(df, "is_snapshot", origin).alias("is_snapshot"),
                                 (choice(df, "side", {"bid": "bid", "ask": "ask"}, origin) == "bid").alias("is_bid"))
            df = _instruments(df, origin, hints, cache)
            out = []
            for (venue, symbol, market), part in df.partition_by(["venue", "symbol", "market"], as_dict=True,
                                                                 maintain_order=True).items():
                book = books.setdefault((venue, symbol, market), TopOfBookRebuild(cadence_ms=cadence))
                for chunk in part.iter_slices(APPLY_ROWS):
                    us, local = chunk["timestamp"], chunk["local_timestamp"]
                    # the rows of one snapshot share their receive time; a new one clears the book
                    snapshot_id = chunk.select(pl.when(pl.col("is_snapshot")).then(pl.col("local_timestamp")))
                    bad = book.apply((us // 1000).to_list(), (local // 1000).to_list(), chunk["is_bid"].to_list(),
                                     chunk["price"].to_list(), chunk["amount"].to_list(),
                                     snapshot_id.to_series().to_list())
                    if bad is not None:
                        raise SchemaError(origin, "book update before any snapshot (is_snapshot=true): the top of "
                                                  "book cannot be rebuilt from deltas alone",
                                          row=int(chunk[ROW][bad]), field="is_snapshot")
                out.append(book.take(venue, symbol, market))
            out = [frame for frame in out if frame.height]
            if out:
                yield "books", pl.concat(out)
        for (venue, symbol, market), book in books.items():
            book.finish()
            last = book.take(venue, symbol, market)
            if last.height:
                yield "books", last
            book.check_two_sided(origin, venue, symbol)


class TardisDerivativeTicker(_Tardis):
    def _tail_matches(self, tail):
        return {"funding_timestamp", "funding_rate", "mark_price", "index_price"} <= set(tail)

    def read(self, path: Path, hints) -> Iterator[tuple[str, pl.DataFrame]]:
        origin, cache = str(path), {}
        fields = ("funding_timestamp", "funding_rate", "mark_price", "index_price")
        pending: dict[tuple[str, str, int], tuple] = {}  # per funding time: the last row seen at or before it
        latest = None
        named_funding = False
        for df in self._batches(path, [*COMMON, *fields]):
            df = numbers(df, TIMES, origin, dtype=pl.Int64)
            df = numbers(df, ("funding_timestamp",), origin, dtype=pl.Int64, required=False)
            df = numbers(df, ("funding_rate", "mark_price", "index_price"), origin, required=False)
            df = _instruments(df, origin, hints, cache)
            batch_latest = df["timestamp"].max()
            latest = batch_latest if latest is None else max(latest, batch_latest)
            rated = df.filter(pl.col("funding_timestamp").is_not_null() & pl.col("funding_rate").is_not_null())
            named_funding = named_funding or rated.height > 0
            in_force = rated.filter(pl.col("timestamp") <= pl.col("funding_timestamp"))
            for venue, symbol, fts, rate, mark, index in in_force.select(
                    "venue", "symbol", "funding_timestamp", "funding_rate", "mark_price", "index_price").iter_rows():
                pending[(venue, symbol, fts)] = (rate, mark, index)
            charged = sorted(k for k in pending if k[2] <= latest)
            if charged:
                yield "funding", _funding(charged, pending)
        if not named_funding:
            raise SchemaError(origin, "no row names a funding_timestamp with a funding_rate (this venue's ticker "
                                      "carries no funding schedule)", field="funding_timestamp")
        # what is left in `pending` is funding times after the file's last row: their rate was still a forecast


def _funding(keys: list[tuple[str, str, int]], pending: dict) -> pl.DataFrame:
    rows = [(v, s, fts, *pending.pop((v, s, fts))) for v, s, fts in keys]
    df = pl.DataFrame(rows, schema={"venue": pl.Utf8, "symbol": pl.Utf8, "ts": pl.Int64, "funding_rate": pl.Float64,
                                    "mark_price": pl.Float64, "index_price": pl.Float64}, orient="row")
    return raw_frame("funding", df.with_columns(epoch_us("ts").alias("ts")))


FORMATS = [
    TardisTrades("tardis_trades", "trades"),
    TardisBookSnapshot("tardis_book_snapshot", "books"),
    TardisQuotes("tardis_quotes", "books"),
    TardisIncrementalBook(),
    TardisDerivativeTicker("tardis_derivative_ticker", "funding"),
]
