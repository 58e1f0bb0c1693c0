"""Top-of-book snapshots at a fixed cadence, rebuilt from L2 level updates (Tardis `incremental_book_L2`,
Binance futures depth archives).

The row at grid time g (a multiple of the cadence) is the book after every update with ts <= g. Rows are
emitted from the first grid time at or after the first update, for as long as the last update is no older
than `max_staleness_ms` (a feed gap is not papered over with a stale book), and only where the book has a bid
and an ask that do not cross. Deltas before the first snapshot are passed over (Tardis documents them:
updates buffered before the venue's snapshot after a reconnect); a file with no snapshot at all is refused, as a
book built from deltas alone is not the venue's book.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import polars as pl

from sofia_pipelines.defs.market_data.formats.csv_stream import raw_frame
from sofia_runtime.schemas import TS, SchemaError

DEFAULT_CADENCE_MS = 1_000
DEFAULT_MAX_STALENESS_MS = 60_000
APPLY_ROWS = 50_000  # updates turned into Python values at a time


@dataclass
class TopOfBookRebuild:
    cadence_ms: int = DEFAULT_CADENCE_MS
    max_staleness_ms: int = DEFAULT_MAX_STALENESS_MS
    bids: dict[float, float] = field(default_factory=dict)
    asks: dict[float, float] = field(default_factory=dict)
    _bid_heap: list[float] = field(default_factory=list)  # negated prices; stale entries dropped lazily
    _ask_heap: list[float] = field(default_factory=list)
    _clock: int | None = None  # the latest update time seen (exchange times jitter; the grid never goes back)
    _local: int | None = None
    _next_grid: int | None = None
    _snapshot_id: object = None  # the snapshot being read, None between snapshots
    seen_snapshot: bool = False
    orphan_row: int | None = None  # the first delta before any snapshot (a 1-based data row), passed over
    orphans: int = 0
    both_sides_seen: bool = False
    rows: list[tuple] = field(default_factory=list)  # (grid ms, local ms | None, bid, bid_size, ask, ask_size)

    def __post_init__(self):
        if self.cadence_ms <= 0 or self.max_staleness_ms < self.cadence_ms:
            raise ValueError(f"cadence {self.cadence_ms} ms must be positive and at most the staleness limit "
                             f"{self.max_staleness_ms} ms")

    def apply(self, rows: list[int], ts: list[int], local: list[int | None], is_bid: list[bool], price: list[float],
              amount: list[float], snapshot_id: list, delete: list[bool] | None = None) -> None:
        """Apply updates in file order (`rows` are their data rows); `snapshot_id[i]` is None for a delta, else
        the id of the snapshot the row belongs to (a new id clears the book)."""
        cadence = self.cadence_ms
        for i in range(len(ts)):
            sid = snapshot_id[i]
            if sid is None and not self.seen_snapshot:
                self.orphans += 1
                self.orphan_row = self.orphan_row or rows[i]
                continue
            t = ts[i] if self._clock is None else max(ts[i], self._clock)
            while self._next_grid is not None and t > self._next_grid:
                if self._next_grid - self._clock > self.max_staleness_ms:
                    self._next_grid = (t // cadence + 1) * cadence if t % cadence else t
                    break
                self._emit(self._next_grid)
                self._next_grid += cadence
            if sid is not None:
                if sid != self._snapshot_id:
                    self._clear()
                    self._snapshot_id = sid
                self.seen_snapshot = True
            else:
                self._snapshot_id = None
            book, heap, key = (self.bids, self._bid_heap, -price[i]) if is_bid[i] else \
                (self.asks, self._ask_heap, price[i])
            if amount[i] == 0 or (delete is not None and delete[i]):
                book.pop(price[i], None)
            else:
                if price[i] not in book:
                    heapq.heappush(heap, key)
                    if len(heap) > 4 * len(book) + 1024:  # drop entries of removed levels: memory stays bounded
                        heap[:] = [-p for p in book] if is_bid[i] else list(book)
                        heapq.heapify(heap)
                        heapq.heappush(heap, key)
                book[price[i]] = amount[i]
            self._clock, self._local = t, local[i]
            if self._next_grid is None:
                self._next_grid = -(-t // cadence) * cadence

    def finish(self) -> None:
        """Emit the grid time that closes the last interval with updates."""
        if self._next_grid is not None and self._clock is not None:
            self._emit(self._next_grid)
            self._next_grid = None

    def take(self, venue: str, symbol: str, market: str) -> pl.DataFrame:
        """The rows emitted since the last call, as raw.books rows."""
        rows, self.rows = self.rows, []
        df = pl.DataFrame(rows, schema={"ts": pl.Int64, "local_ts": pl.Int64, "bid": pl.Float64,
                                        "bid_size": pl.Float64, "ask": pl.Float64, "ask_size": pl.Float64},
                          orient="row")
        df = df.with_columns(pl.col("ts").cast(TS), pl.col("local_ts").cast(TS), venue=pl.lit(venue),
                             symbol=pl.lit(symbol), market=pl.lit(market))
        return raw_frame("books", df)

    def check_rebuilt(self, origin: str, venue: str, symbol: str, snapshot_field: str) -> None:
        """At the end of a file: a book that never had a snapshot, or never both sides, gave no rows, and that is
        an error, not a quiet nothing."""
        if not self.seen_snapshot:
            raise SchemaError(origin, f"{self.orphans} book updates of {venue} {symbol} and no snapshot: the top of "
                                      "book cannot be rebuilt from deltas alone", row=self.orphan_row,
                              field=snapshot_field)
        if not self.both_sides_seen:
            raise SchemaError(origin, f"the rebuilt book of {venue} {symbol} never had both a bid and an ask "
                                      f"(bids: {len(self.bids)} levels, asks: {len(self.asks)}): no top of book")

    def _clear(self) -> None:
        self.bids.clear()
        self.asks.clear()
        self._bid_heap.clear()
        self._ask_heap.clear()

    def _emit(self, grid: int) -> None:
        bid, ask = self._best(self.bids, self._bid_heap, -1.0), self._best(self.asks, self._ask_heap, 1.0)
        if bid is None or ask is None:
            return
        self.both_sides_seen = True
        if bid < ask:
            self.rows.append((grid, self._local, bid, self.bids[bid], ask, self.asks[ask]))

    @staticmethod
    def _best(book: dict[float, float], heap: list[float], sign: float) -> float | None:
        while heap and sign * heap[0] not in book:
            heapq.heappop(heap)
        return sign * heap[0] if heap else None
