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
    (at the same millisecond: book, then trade, then funding)."""

    def __init__(self, books: pl.DataFrame, trades: pl.DataFrame, keep: Iterable[tuple[str, str]] | None = None,
                 funding: pl.DataFrame | None = None):
        funding = funding if funding is not None else pl.DataFrame(
            schema={"venue": pl.Utf8, "symbol": pl.Utf8, "ts": pl.Datetime("ms"), "funding_rate": pl.Float64})
        if keep is not None:
            wanted = pl.DataFrame(list(keep), schema=["venue", "symbol"], orient="row")
            books = books.join(wanted, on=["venue", "symbol"], how="semi")
            trades = trades.join(wanted, on=["venue", "symbol"], how="semi")
            funding = funding.join(wanted, on=["venue", "symbol"], how="semi")
        books, trades = books.sort("ts", maintain_order=True), trades.sort("ts", maintain_order=True)
        funding = funding.sort("ts", maintain_order=True)
        self.funding_rows = [FundingTick(v, s, int(t), float(r)) for v, s, t, r in zip(
            funding["venue"].to_list(), funding["symbol"].to_list(), funding["ts"].dt.epoch("ms").to_list(),
            funding["funding_rate"].to_list())]
        self.book_venue = books["venue"].to_list()
        self.book_symbol = books["symbol"].to_list()
        self.book_ts = books["ts"].dt.epoch("ms").to_numpy()
        self.book_cols = [books[c].to_numpy() for c in ("bid", "ask", "bid_size", "ask_size")]
        self.trade_venue = trades["venue"].to_list()
        self.trade_symbol = trades["symbol"].to_list()
        self.trade_ts = trades["ts"].dt.epoch("ms").to_numpy()
        self.trade_side = trades["side"].to_list()
        self.trade_price = trades["price"].to_numpy()
        self.trade_amount = trades["amount"].to_numpy()
        funding_ts = np.array([f.ts for f in self.funding_rows], dtype=np.int64)
        ts = np.concatenate([self.book_ts, self.trade_ts, funding_ts])
        kinds = np.concatenate([np.full(len(self.book_ts), BOOK, np.int8), np.full(len(self.trade_ts), TRADE, np.int8),
                                np.full(len(funding_ts), FUNDING, np.int8)])
        index = np.concatenate([np.arange(len(self.book_ts)), np.arange(len(self.trade_ts)),
                                np.arange(len(funding_ts))])
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
        book = books.get(self.book_venue[i], self.book_symbol[i])
        bid, ask, bs, asz = (c[i] for c in self.book_cols)
        book.update(int(self.book_ts[i]), float(bid), float(ask), float(bs), float(asz))
        return book

    def trade(self, i: int) -> TradeTick:
        return TradeTick(self.trade_venue[i], self.trade_symbol[i], int(self.trade_ts[i]), self.trade_side[i],
                         float(self.trade_price[i]), float(self.trade_amount[i]))

    def event(self, kind: int, i: int, books: Books):
        """The event object of (kind, index): the book after the update, a trade or a funding charge."""
        if kind == BOOK:
            return self.apply_book(i, books)
        return self.trade(i) if kind == TRADE else self.funding_rows[i]

    def events(self, start: int = 0) -> Iterator[tuple[int, int, int]]:
        """(ts_ms, kind, index) from position `start`."""
        ts, kinds, index = self.ts, self.kinds, self.index
        for p in range(start, len(ts)):
            yield int(ts[p]), int(kinds[p]), int(index[p])
