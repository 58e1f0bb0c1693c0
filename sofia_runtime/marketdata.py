"""Market data for the engine: top-of-book state per venue and symbol, and the replay of the snapshot's day.

Times are integer milliseconds since the epoch (market time). `ReplayFeed` merges the snapshot's
`replay_books` and `replay_trades` into one time-ordered stream (a book before a trade at the same
millisecond) and can start part-way through the day, which is how a restarted runtime continues where it
stopped instead of trading the same tape twice.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import polars as pl

BOOK, TRADE, FUNDING = 0, 1, 2
BOOK_VALUES = ("bid", "ask", "bid_size", "ask_size")


@dataclass(slots=True)
class Book:
    venue: str
    symbol: str
    ts: int = 0
    bid: float = math.nan
    ask: float = math.nan
    bid_size: float = 0.0
    ask_size: float = 0.0
    # EWMA of squared log-returns of mid per second; vol() reports it per minute like the fill model
    _var_per_s: float = 0.0
    _last_mid: float = math.nan
    _last_ts: int = 0
    updates: int = 0

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) / 2.0

    @property
    def spread(self) -> float:
        return self.ask - self.bid

    @property
    def valid(self) -> bool:
        return self.updates > 0 and self.bid > 0 and self.ask > self.bid

    def update(self, ts: int, bid: float, ask: float, bid_size: float, ask_size: float, halflife: int = 30) -> None:
        self.ts, self.bid, self.ask, self.bid_size, self.ask_size = ts, bid, ask, bid_size, ask_size
        mid = (bid + ask) / 2.0
        if self.updates and mid > 0 and self._last_mid > 0 and ts > self._last_ts:
            r = math.log(mid / self._last_mid)
            alpha = 1.0 - 0.5 ** (1.0 / halflife)
            self._var_per_s += alpha * (r * r / ((ts - self._last_ts) / 1000.0) - self._var_per_s)
        self._last_mid, self._last_ts = mid, ts
        self.updates += 1

    def vol(self) -> float:
        """Per-minute standard deviation of log mid returns."""
        return math.sqrt(self._var_per_s * 60.0)

    def age_s(self, now_ms: int) -> float:
        return (now_ms - self.ts) / 1000.0 if self.updates else math.inf


@dataclass
class Books:
    by_key: dict[tuple[str, str], Book] = field(default_factory=dict)

    def get(self, venue: str, symbol: str) -> Book:
        key = (venue, symbol)
        book = self.by_key.get(key)
        if book is None:
            book = self.by_key[key] = Book(venue, symbol)
        return book


@dataclass(frozen=True, slots=True)
class TradeTick:
    venue: str
    symbol: str
    ts: int
    side: str  # taker side
    price: float
    amount: float


@dataclass(frozen=True, slots=True)
class FundingTick:
    venue: str
    symbol: str
    ts: int
    rate: float  # paid by longs to shorts when positive, per the venue's interval


class ReplayFeed:
    """The snapshot's day of books, trades and funding charges as one stream of (kind, index) in time order
    (at the same millisecond: book, then trade, then funding).

    The frames may be lazy (a snapshot's tables scanned from their files): only the columns the replay needs are
    read. The feed keeps numbers in columns, not objects per row: venue and symbol as a code into `keys`, a
    trade's side as a code into `sides`."""

    def __init__(self, books: pl.DataFrame | pl.LazyFrame, trades: pl.DataFrame | pl.LazyFrame,
                 keep: Iterable[tuple[str, str]] | None = None, funding: pl.DataFrame | pl.LazyFrame | None = None):
        funding = funding if funding is not None else pl.DataFrame(
            schema={"venue": pl.Utf8, "symbol": pl.Utf8, "ts": pl.Datetime("ms"), "funding_rate": pl.Float64})
        books = books.lazy().select("venue", "symbol", "ts", *BOOK_VALUES)
        trades = trades.lazy().select("venue", "symbol", "ts", "side", "price", "amount")
        funding = funding.lazy().select("venue", "symbol", "ts", "funding_rate")
        if keep is not None:
            pairs = sorted(set(keep))
        else:
            pairs = sorted(set().union(*(f.select("venue", "symbol").unique().collect().iter_rows()
                                         for f in (books, trades, funding))))
        venues, symbols = sorted({v for v, _ in pairs}), sorted({s for _, s in pairs})
        self.keys = [(v, s) for v in venues for s in symbols]  # code -> (venue, symbol)
        key = (pl.col("venue").replace_strict({v: i for i, v in enumerate(venues)}, default=None,
                                              return_dtype=pl.Int32) * len(symbols)
               + pl.col("symbol").replace_strict({s: i for i, s in enumerate(symbols)}, default=None,
                                                 return_dtype=pl.Int32))
        wanted = [venues.index(v) * len(symbols) + symbols.index(s) for v, s in pairs]

        def rows(frame: pl.LazyFrame, *columns) -> pl.DataFrame:
            frame = frame.with_columns(key=key)
            if keep is not None:
                frame = frame.filter(pl.col("key").is_in(wanted))
            return frame.sort("ts", maintain_order=True).select(pl.col("ts").dt.epoch("ms"), "key", *columns).collect()

        f = rows(funding, "funding_rate")
        self.funding_rows = [FundingTick(*self.keys[k], t, r) for t, k, r in f.iter_rows()]
        b = rows(books, *BOOK_VALUES)
        self.book_ts, self.book_key = b["ts"].to_numpy(), b["key"].to_numpy()
        self.book_bid, self.book_ask, self.book_bid_size, self.book_ask_size = (b[c].to_numpy() for c in BOOK_VALUES)
        del b
        self.sides = sorted(trades.select(pl.col("side").unique()).collect()["side"].to_list())
        t = rows(trades, pl.col("side").replace_strict({s: i for i, s in enumerate(self.sides)},
                                                        return_dtype=pl.Int8), "price", "amount")
        self.trade_ts, self.trade_key, self.trade_side = t["ts"].to_numpy(), t["key"].to_numpy(), t["side"].to_numpy()
        self.trade_price, self.trade_amount = t["price"].to_numpy(), t["amount"].to_numpy()
        del t
        funding_ts = f["ts"].to_numpy()
        ts = np.concatenate([self.book_ts, self.trade_ts, funding_ts])
        kinds = np.concatenate([np.full(len(self.book_ts), BOOK, np.int8), np.full(len(self.trade_ts), TRADE, np.int8),
                                np.full(len(funding_ts), FUNDING, np.int8)])
        index = np.concatenate([np.arange(len(self.book_ts), dtype=np.int32),
                                np.arange(len(self.trade_ts), dtype=np.int32),
                                np.arange(len(funding_ts), dtype=np.int32)])
        order = np.lexsort((kinds, ts))
        self.ts, self.kinds, self.index = ts[order], kinds[order], index[order]

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def start_ms(self) -> int:
        return int(self.ts[0]) if len(self.ts) else 0

    @property
    def end_ms(self) -> int:
        return int(self.ts[-1]) if len(self.ts) else 0

    def position_after(self, ts_ms: int) -> int:
        """Index of the first event strictly after `ts_ms`."""
        return int(np.searchsorted(self.ts, ts_ms, side="right"))

    def apply_book(self, i: int, books: Books) -> Book:
        book = books.get(*self.keys[self.book_key[i]])
        book.update(int(self.book_ts[i]), float(self.book_bid[i]), float(self.book_ask[i]),
                    float(self.book_bid_size[i]), float(self.book_ask_size[i]))
        return book

    def trade(self, i: int) -> TradeTick:
        venue, symbol = self.keys[self.trade_key[i]]
        return TradeTick(venue, symbol, int(self.trade_ts[i]), self.sides[self.trade_side[i]],
                         float(self.trade_price[i]), float(self.trade_amount[i]))

    def event(self, kind: int, i: int, books: Books):
        """The event object of (kind, index): the book after the update, a trade or a funding charge."""
        if kind == BOOK:
            return self.apply_book(i, books)
        return self.trade(i) if kind == TRADE else self.funding_rows[i]

    def events(self, start: int = 0, chunk: int = 4096) -> Iterator[tuple[int, int, int]]:
        """(ts_ms, kind, index) from position `start`."""
        ts, kinds, index = self.ts, self.kinds, self.index
        for a in range(start, len(ts), chunk):
            yield from zip(ts[a:a + chunk].tolist(), kinds[a:a + chunk].tolist(), index[a:a + chunk].tolist())
