"""Fault injection inside the runtime process (the runner installs both when the configuration has a `chaos`
section):
- `FaultyVenue` wraps any venue. Each call of create_order, cancel_order, fetch_order, find_order,
  fetch_open_orders, fetch_balance and fetch_my_trades (and a live venue's fetch_order_book and poll_trades)
  draws from a seeded RNG: an added delay (latency_ms ± jitter_ms), then at most one of: a timeout
  (RequestTimeout, the request never reaches the venue), an HTTP 5xx (ExchangeNotAvailable, not processed), a
  rate limit (RateLimitExceeded, not processed), or a connection dropped after the request was sent (the venue
  processes it, the caller gets NetworkError: the order exists and the engine does not know). Every other
  attribute is the wrapped venue's (`inner`).
- `stale_market_data` stops the replayed books and trades of one venue for a while (market time), and freezes
  that venue's books as they were, so the engine, the strategy and the stale-data limit all see old data.
When `SOFIA_CHAOS_DIR` is set (the drill sets it), FaultyVenue injects only while `<dir>/armed` exists, and each
fault (and the stale window's start and end) is logged to `<dir>/faults.jsonl` (wall time, venue, call, kind);
without it the faults are on for the whole run. The stale window is set in market time and is never armed.
In live mode the network faults (latency, dropped responses, 5xx and 429 answers, refused connections) come from
`chaos_proxy` in front of the venue instead, so they go through ccxt's own error handling.

This module never imports the drill: the runner imports it, the drill reads what it logs.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import functools
import json
import os
import random
import time
from collections import Counter
from pathlib import Path

from sofia_runtime.config import ChaosConfig
from sofia_runtime.exchange import base
from sofia_runtime.marketdata import BOOK, FUNDING, Book

CONTROL_ENV = "SOFIA_CHAOS_DIR"
LIVE_POLLS = ("fetch_order_book", "poll_trades")


# --- injection (inside the runtime) -------------------------------------------------------------------------------


class FaultLog:
    """`<control dir>/faults.jsonl`, one line per injected fault, appended with O_APPEND (a line is one write)."""

    def __init__(self, control_dir: Path | None):
        self.path = control_dir / "faults.jsonl" if control_dir is not None else None

    def write(self, kind: str, **fields) -> None:
        if self.path is None:
            return
        line = json.dumps({"ts": time.time(), "pid": os.getpid(), "kind": kind, **fields}, separators=(",", ":"))
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


def _control_dir_from_env() -> Path | None:
    value = os.environ.get(CONTROL_ENV)
    return Path(value) if value else None


class FaultyVenue:
    """A venue with faults in front of it; see the module docstring. `injected` counts the faults by kind."""

    def __init__(self, venue, cfg: ChaosConfig, seed: int | None = None, control_dir: Path | None | str = "env"):
        self.inner = venue
        self.cfg = cfg
        rates = {"timeout_rate": cfg.timeout_rate, "error_5xx_rate": cfg.error_5xx_rate,
                 "rate_limit_rate": cfg.rate_limit_rate, "drop_after_send_rate": cfg.drop_after_send_rate}
        if sum(rates.values()) > 1.0 + 1e-12:
            raise ValueError(f"chaos: the fault rates add up to {sum(rates.values()):g} > 1 ({rates}); "
                             f"at most one fault is drawn per call")
        self.rng = random.Random(cfg.seed if seed is None else seed)
        self.control_dir = _control_dir_from_env() if control_dir == "env" else (
            Path(control_dir) if control_dir is not None else None)
        self.log = FaultLog(self.control_dir)
        self.injected: Counter[str] = Counter()
        self.calls = 0

    def __getattr__(self, name):
        if name == "inner":  # not set yet (copy, unpickling): never recurse
            raise AttributeError(name)
        attr = getattr(self.inner, name)
        if name in LIVE_POLLS:  # a live venue's market-data and trade polls draw faults too
            return functools.partial(self._call, name)
        return attr

    def __repr__(self) -> str:
        return f"FaultyVenue({self.inner!r}, scenario={self.cfg.scenario!r})"

    @property
    def armed(self) -> bool:
        return self.control_dir is None or (self.control_dir / "armed").exists()

    def _inject(self, kind: str, method: str, **fields) -> None:
        self.injected[kind] += 1
        self.log.write(kind, venue=getattr(self.inner, "name", "?"), method=method, **fields)

    async def _call(self, method: str, *args, **kwargs):
        call = getattr(self.inner, method)
        self.calls += 1
        if not self.armed:
            return await call(*args, **kwargs)
        cfg, name = self.cfg, getattr(self.inner, "name", "?")
        if cfg.latency_ms or cfg.jitter_ms:
            delay_ms = max(0.0, cfg.latency_ms + self.rng.uniform(-cfg.jitter_ms, cfg.jitter_ms))
            await asyncio.sleep(delay_ms / 1000.0)
            self._inject("latency", method, delay_ms=round(delay_ms, 3))
        u = self.rng.random()
        edge = cfg.timeout_rate
        if u < edge:
            self._inject("timeout", method)
            raise base.RequestTimeout(f"chaos: {name} {method} timed out before reaching the venue")
        edge += cfg.error_5xx_rate
        if u < edge:
            self._inject("http_5xx", method)
            raise base.ExchangeNotAvailable(f"chaos: {name} {method} answered 503 Service Unavailable, not processed")
        edge += cfg.rate_limit_rate
        if u < edge:
            self._inject("rate_limit", method)
            raise base.RateLimitExceeded(f"chaos: {name} {method} answered 429 Too Many Requests, not processed")
        dropped = u < edge + cfg.drop_after_send_rate
        try:
            result = await call(*args, **kwargs)
        except base.ExchangeError as exc:
            if not dropped:
                raise
            self._inject("dropped_after_send", method, hidden=f"{type(exc).__name__}: {exc}")
            raise base.NetworkError(f"chaos: connection to {name} dropped after {method} was sent") from None
        if dropped:
            self._inject("dropped_after_send", method)
            raise base.NetworkError(f"chaos: connection to {name} dropped after {method} was sent; no response")
        return result

    async def create_order(self, symbol, type, side, amount, price=None, params=None):
        return await self._call("create_order", symbol, type, side, amount, price, params)

    async def cancel_order(self, id, symbol, params=None):
        return await self._call("cancel_order", id, symbol, params)

    async def fetch_order(self, id, symbol, params=None):
        return await self._call("fetch_order", id, symbol, params)

    async def find_order(self, client_order_id, symbol):
        return await self._call("find_order", client_order_id, symbol)

    async def fetch_open_orders(self, symbol=None):
        return await self._call("fetch_open_orders", symbol)

    async def fetch_balance(self):
        return await self._call("fetch_balance")

    async def fetch_my_trades(self, symbol=None, since=None):
        return await self._call("fetch_my_trades", symbol, since)

    async def close(self) -> None:
        await self.inner.close()


def _restore(book: Book, saved: Book | None) -> None:
    source = saved if saved is not None else Book(book.venue, book.symbol)
    for f in dataclasses.fields(Book):
        setattr(book, f.name, getattr(source, f.name))


async def stale_market_data(events, cfg: ChaosConfig, control_dir: Path | None | str = "env"):
    """The replay without `cfg.stale_venue`'s books and trades from market time start + stale_from_s for
    stale_for_s (start: the first event this process replays). The replay applies a book update before the engine
    sees it, so a dropped update is undone: the venue's books stay as the last update that got through, and the
    engine, the strategies and the stale-data limit see them age. Funding charges are the venue's, not market
    data, and pass. The paper venue of that venue sees no books or trades meanwhile: its resting orders do not
    fill while the data is stale."""
    control = _control_dir_from_env() if control_dir == "env" else (Path(control_dir) if control_dir else None)
    log = FaultLog(control)
    window: tuple[int, int] | None = None
    delivered: dict[tuple[str, str], Book] = {}
    dropped = 0
    phase = "before"
    async for kind, obj in events:
        ts = obj.ts
        if window is None:
            start = ts + int(cfg.stale_from_s * 1000)
            window = (start, start + int(cfg.stale_for_s * 1000))
        if phase == "during" and ts >= window[1]:
            phase = "after"
            log.write("stale_end", venue=cfg.stale_venue, market_ts=ts, dropped=dropped,
                      market_from=window[0], market_to=window[1])
        if kind != FUNDING and obj.venue == cfg.stale_venue:
            if window[0] <= ts < window[1]:
                if phase == "before":
                    phase = "during"
                    log.write("stale_start", venue=cfg.stale_venue, market_ts=ts, market_from=window[0],
                              market_to=window[1])
                dropped += 1
                if kind == BOOK:
                    _restore(obj, delivered.get((obj.venue, obj.symbol)))
                continue
            if kind == BOOK:
                delivered[(obj.venue, obj.symbol)] = copy.copy(obj)
        yield kind, obj


def read_fault_log(control_dir: Path) -> list[dict]:
    path = control_dir / "faults.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
