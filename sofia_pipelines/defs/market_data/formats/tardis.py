"""Tardis.dev CSV datasets (https://docs.tardis.dev/downloadable-csv-files), plain or gzipped.

Every file starts `exchange,symbol,timestamp,local_timestamp` (epoch µs: exchange time, receive time); the
columns after those name the dataset:
    trades               id, side (taker side: buy/sell), price, amount                  -> raw.trades; a
                         venue that gives no id (an empty cell) gets `t<µs>-<n>`, stable across reads
    book_snapshot_N      asks[i].price, asks[i].amount, bids[i].price, bids[i].amount     -> raw.books (level 0)
    quotes               ask_amount, ask_price, bid_price, bid_amount                     -> raw.books
                         (rows with an empty side are a one-sided book: no top of book, passed over)
    incremental_book_L2  is_snapshot, side (bid/ask), price, amount (0 removes the level) -> raw.books, rebuilt
                         to top of book every `cadence_ms` (see top_of_book)
    derivative_ticker    funding_timestamp, funding_rate, …, index_price, mark_price      -> raw.funding: per
                         funding time, the last rate seen at or before it (the rate charged then)
Tardis exchange ids and symbols become ccxt ids and unified symbols (formats.symbols). Files are in receive
order; rows are put in exchange-time order within a window (csv_stream.in_time_order) and books keep the last
update of each millisecond (raw.books is keyed by ms).
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
    table = pl.DataFrame(rows, schema={c: pl.Utf8 for c in ("exchange", "symbol", "venue", "_unified", "market")},
                         orient="row")
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
        yield from csv_batches(path, header_of(path), has_header=True, include=include)


class TardisTrades(_Tardis):
    def _tail_matches(self, tail):
        return tail[:4] == ["id", "side", "price", "amount"]

    def read(self, path: Path, hints) -> Iterator[tuple[str, pl.DataFrame]]:
        origin, cache = str(path), {}

        seen: dict[tuple, int] = {}

        def frames():
            for df in self._batches(path, [*COMMON, "id", "side", "price", "amount"]):
                df = numbers(_times(df, origin), ("price", "amount"), origin)
                side = choice(df, "side", {"buy": "buy", "sell": "sell"}, origin)  # "unknown" has no taker side
                df = df.with_columns(side.alias("side"), _trade_ids(df, seen).alias("trade_id"))
                yield _instruments(df, origin, hints, cache)

        for df in in_time_order(frames(), origin, series=("venue", "symbol")):
            yield "trades", raw_frame("trades", df)


def _trade_ids(df: pl.DataFrame, seen: dict[tuple, int]) -> pl.Series:
    """The venue's trade ids; where a venue gives none (Tardis leaves the cell empty), `t<µs>-<n>`: the n-th
    id-less trade of that exchange time, so a file read twice gives the same keys. `seen` carries the counts of
    the last exchange time into the next batch."""
    ids = df["id"]
    if not ids.null_count():
        return ids
    keys = ["exchange", "symbol", "timestamp"]
    missing = df.filter(pl.col("id").is_null()).select(*keys, ROW)
    missing = missing.with_columns(pl.int_range(pl.len()).over(keys).alias("n"))
    offsets = pl.DataFrame([(*k, n) for k, n in seen.items()], schema={"exchange": pl.Utf8, "symbol": pl.Utf8,
                           "timestamp": pl.Int64, "offset": pl.Int64}, orient="row")
    missing = missing.join(offsets, on=keys, how="left").with_columns(
        (pl.col("n") + pl.col("offset").fill_null(0)).alias("n"))
    last = missing["timestamp"].max()
    seen.clear()
    for exchange, symbol, timestamp, n in missing.filter(pl.col("timestamp") == last).group_by(keys).agg(
            pl.col("n").max()).iter_rows():
        seen[(exchange, symbol, timestamp)] = n + 1
    derived = missing.select(ROW, ("t" + pl.col("timestamp").cast(pl.Utf8) + "-" + pl.col("n").cast(pl.Utf8))
                             .alias("derived"))
    return df.select(ROW, "id").join(derived, on=ROW, how="left", maintain_order="left").select(
        pl.coalesce("id", "derived")).to_series().alias("trade_id")


class TardisBookSnapshot(_Tardis):
    """book_snapshot_5, book_snapshot_25 …: level 0 of each side is the top of book."""

    def _tail_matches(self, tail):
        return tail[:4] == ["asks[0].price", "asks[0].amount", "bids[0].price", "bids[0].amount"]

    def read(self, path: Path, hints) -> Iterator[tuple[str, pl.DataFrame]]:
        names = {"asks[0].price": "ask", "asks[0].amount": "ask_size", "bids[0].price": "bid",
                 "bids[0].amount": "bid_size"}
        yield from _top_of_book(self, path, hints, names)


class TardisQuotes(_Tardis):
    def _tail_matches(self, tail):
        return tail[:4] == ["ask_amount", "ask_price", "bid_price", "bid_amount"]

    def read(self, path: Path, hints) -> Iterator[tuple[str, pl.DataFrame]]:
        names = {"ask_price": "ask", "ask_amount": "ask_size", "bid_price": "bid", "bid_amount": "bid_size"}
        yield from _top_of_book(self, path, hints, names)


def _top_of_book(fmt: _Tardis, path: Path, hints, names: dict[str, str]) -> Iterator[tuple[str, pl.DataFrame]]:
    """Rows whose best bid and ask are both there. A side whose price and amount are both empty is a one-sided
    book (Tardis leaves them empty when there are no asks, or no bids): it has no top of book and is passed
    over; a file of nothing else is refused."""
    origin, cache = str(path), {}
    counts = {"rows": 0, "two_sided": 0}
    sides = [pl.all_horizontal(pl.col(p).is_null(), pl.col(a).is_null())
             for p, a in (("asks[0].price", "asks[0].amount"), ("bids[0].price", "bids[0].amount"),
                          ("ask_price", "ask_amount"), ("bid_price", "bid_amount")) if p in names]

    def frames():
        for df in fmt._batches(path, [*COMMON, *names]):
            counts["rows"] += df.height
            df = df.filter(~pl.any_horizontal(sides))
            counts["two_sided"] += df.height
            yield _instruments(_times(numbers(df, names, origin), origin).rename(names), origin, hints, cache)

    series = ("venue", "symbol")
    for df in last_per_ts(in_time_order(frames(), origin, series=series), series=series):
        yield "books", raw_frame("books", df)
    if counts["rows"] and not counts["two_sided"]:
        raise SchemaError(origin, f"all {counts['rows']} rows have an empty side: no top of book")


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
                    # Tardis: a snapshot row after a delta starts a new book (one snapshot may span messages)
                    snapshot_id = chunk.select(pl.when(pl.col("is_snapshot")).then(True))
                    book.apply(chunk[ROW].to_list(), (us // 1000).to_list(), (local // 1000).to_list(),
                               chunk["is_bid"].to_list(), chunk["price"].to_list(), chunk["amount"].to_list(),
                               snapshot_id.to_series().to_list())
                out.append(book.take(venue, symbol, market))
            out = [frame for frame in out if frame.height]
            if out:
                yield "books", pl.concat(out)
        for (venue, symbol, market), book in books.items():
            book.finish()
            last = book.take(venue, symbol, market)
            if last.height:
                yield "books", last
            book.check_rebuilt(origin, venue, symbol, "is_snapshot")


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
            in_force = (rated.filter(pl.col("timestamp") <= pl.col("funding_timestamp"))
                        .group_by("venue", "symbol", "funding_timestamp", maintain_order=True)
                        .agg(pl.col("funding_rate", "mark_price", "index_price").last()))
            for venue, symbol, fts, rate, mark, index in in_force.iter_rows():
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
