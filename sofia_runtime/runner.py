"""`sofia-runtime run`: one runtime process, from configuration to a clean stop.

It takes the runtime's lock (one process per runtime id), opens and verifies its journal, loads the CURRENT
serving snapshot, builds the venues and the strategy, recovers from the journal, serves health and metrics,
then feeds market data to the engine until the duration, the end of the replayed day, the strategy's end or a
signal, and stops cleanly (resting orders cancelled, a `stop` record).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl

from sofia_runtime import liveness, paths
from sofia_runtime.config import RuntimeConfig
from sofia_runtime.engine import Engine
from sofia_runtime.exchange.paper import MarketSpec, PaperVenue
from sofia_runtime.fees import FeeSchedule
from sofia_runtime.health import ServerThread, make_app
from sofia_runtime.journal import Journal, JournalError, decimals
from sofia_runtime.lease import TradingLease
from sofia_runtime.marketdata import Books, ReplayFeed
from sofia_runtime.snapshot import Snapshot, SnapshotError, SnapshotWatcher, load_current
from sofia_runtime.tradable import (instrument_refusals, nothing_to_trade, refusal_map, requested_instruments,
                                    snapshot_readiness)

REFERENCE_SYMBOL = "BTC/USDT"  # prices a non-USD quote currency in USD


class RefusedToStart(RuntimeError):
    """The runtime will not start; the message says why and what to change."""


def make_strategy(cfg: RuntimeConfig):
    if cfg.strategy == "mm_lite":
        from sofia_runtime.strategies.mm_lite import MmLite
        return MmLite(cfg)
    if cfg.strategy == "funding_farmer":
        from sofia_runtime.strategies.funding_farmer import FundingFarmer
        return FundingFarmer(cfg)
    from sofia_runtime.strategies.router import RouterStrategy
    return RouterStrategy(cfg)


def check_can_start(cfg: RuntimeConfig, env=os.environ) -> None:
    if cfg.mode != "live":
        return
    if cfg.strategy == "mm_lite":
        raise RefusedToStart("mm_lite is a paper-only strategy (a maker-only scalper for testing the stack); "
                             "it refuses --mode live. Run it with --mode paper.")
    from sofia_runtime.exchange.live import live_preconditions, stream_method_for

    missing = live_preconditions(cfg.mode, cfg.allow_live, env, cfg.venue or "")
    if not cfg.venue:
        missing.insert(0, "--venue is not given (live trades on one named venue)")
    if cfg.market_data == "websocket" and cfg.venue and stream_method_for(cfg.venue) is None:
        missing.append(f"market_data is websocket but ccxt has no websocket order book stream for {cfg.venue}")
    if missing:
        raise RefusedToStart("live trading refused: " + "; ".join(missing))


class RuntimeLock:
    """An OS file lock per runtime id: a second process with the same id refuses to start."""

    def __init__(self, runtime_id: str):
        self.path = liveness.lock_path(runtime_id)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip()
            os.close(self.fd)
            raise RefusedToStart(f"runtime {runtime_id} is already running (pid {holder or '?'}); "
                                 f"stop it or pass another --runtime-id") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        os.close(self.fd)


def status_file(runtime_id: str) -> Path:
    return paths.data_dir() / "run" / f"{runtime_id}.json"


def starting_balances(cfg: RuntimeConfig, snapshot: Snapshot, venue: str) -> dict[str, Decimal]:
    if cfg.starting_balances:
        return {k: Decimal(repr(v)) for k, v in cfg.starting_balances.items()}
    rows = snapshot.tables["inventory_targets"].filter(pl.col("venue") == venue)
    return {r["asset"]: Decimal(repr(r["target"])).quantize(Decimal("1e-8")).normalize()
            for r in rows.iter_rows(named=True)}


def build_paper_venues(cfg: RuntimeConfig, snapshot: Snapshot, books: Books, clock) -> dict[str, PaperVenue]:
    markets = snapshot.tables["markets"]
    latency = snapshot.tables["replay_latency"].filter((pl.col("endpoint") == "private_rest") & pl.col("ok"))
    fees = FeeSchedule(snapshot.tables["fee_table"])
    venues = {}
    for i, name in enumerate(sorted(markets["venue"].unique())):
        if cfg.venue and name != cfg.venue:
            continue
        specs = {r["symbol"]: MarketSpec.from_row(r) for r in markets.filter(pl.col("venue") == name).iter_rows(named=True)}
        samples = latency.filter(pl.col("venue") == name)["latency_ms"].to_numpy()
        venues[name] = PaperVenue(name, specs, fees, samples,
                                  paths.data_dir() / "paper_venue" / cfg.venue_account / f"{name}.jsonl",
                                  starting_balances(cfg, snapshot, name),
                                  books=lambda symbol, name=name: books.get(name, symbol), clock=clock, seed=i)
    if not venues:
        raise RefusedToStart(f"venue {cfg.venue!r} is not in the snapshot's markets "
                             f"({sorted(markets['venue'].unique())})")
    return venues


async def paced(feed: ReplayFeed, books: Books, start: int, speed: float, engine: Engine,
                yield_every: int = 256, market_now_ms: int | None = None) -> AsyncIterator[tuple[int, object]]:
    """The replay at `speed` market seconds per wall second (0: as fast as the engine goes). `market_now_ms`: the
    market time of this wall instant (following a market in real time), else the first event's."""
    if start >= len(feed):
        return
    wall0 = time.monotonic()
    market0 = market_now_ms if market_now_ms is not None else int(feed.ts[start])
    count = 0
    for ts, kind, i in feed.events(start):
        if speed > 0:
            while True:
                due = wall0 + (ts - market0) / 1000.0 / speed
                wait = due - time.monotonic()
                if wait <= 0 or engine.stopping.is_set():
                    break
                await asyncio.sleep(min(wait, 0.1))
        count += 1
        if count % yield_every == 0:  # behind schedule or at full speed: the pause check and health still run
            await asyncio.sleep(0)
        if engine.stopping.is_set():
            return
        yield kind, feed.event(kind, i, books)


async def _every(seconds: float, fn, engine: Engine) -> None:
    while not engine.stopping.is_set():
        try:
            await fn()
        except Exception as exc:  # a failing housekeeping task is recorded, never fatal to trading
            engine._error("housekeeping", f"{getattr(fn, '__name__', fn)}: {type(exc).__name__}: {exc}")
        await asyncio.sleep(seconds)


async def run_runtime(cfg: RuntimeConfig, announce=print) -> int:
    check_can_start(cfg)
    runtime_id = cfg.resolved_runtime_id
    lock = RuntimeLock(runtime_id)
    try:
        return await _run_locked(cfg, runtime_id, announce)
    finally:
        status_file(runtime_id).unlink(missing_ok=True)
        lock.release()


async def _run_locked(cfg: RuntimeConfig, runtime_id: str, announce) -> int:
    max_age = timedelta(hours=cfg.snapshot_max_age_h)
    try:
        snapshot = load_current(paths.serving_dir(), max_age)
    except SnapshotError as exc:
        raise RefusedToStart(f"no snapshot to trade on: {exc}") from exc
    readiness = snapshot_readiness(snapshot.tables)
    if not readiness.ok:
        raise RefusedToStart(f"snapshot {snapshot.snapshot_id} has nothing to trade: " + "; ".join(readiness.refusals))
    try:
        journal = Journal(paths.audit_dir(), runtime_id)
    except JournalError as exc:
        raise RefusedToStart(str(exc)) from exc
    journal.start_group_commit(GROUP_COMMIT_S)
    books = Books()
    strategy = make_strategy(cfg)
    engine = Engine(cfg, snapshot, journal, {}, strategy, pause_path=paths.pause_file(), live=cfg.mode == "live")
    engine.books = books
    lease = TradingLease(paths.control_dir(), cfg.resolved_deployment, cfg.slot, runtime_id) if cfg.slot else None
    started = False
    app = make_app(engine, max_age, lambda: started)
    server = ServerThread(app, cfg.bind, cfg.port)
    port = server.start()
    try:
        journal.append_durable("start", decimals({
            "pid": os.getpid(), "mode": cfg.mode, "strategy": cfg.strategy, "snapshot_id": snapshot.snapshot_id,
            "partition": snapshot.manifest["partition"], "port": port, "venue_account": cfg.venue_account,
            "slot": cfg.slot, "deployment": cfg.resolved_deployment if cfg.slot else None,
            "config": cfg.model_dump(mode="json"), "journal_recovered": journal.recovered}))
        status_file(runtime_id).write_text(json.dumps({"runtime_id": runtime_id, "pid": os.getpid(), "port": port,
                                                       "strategy": cfg.strategy, "mode": cfg.mode, "slot": cfg.slot,
                                                       "deployment": cfg.resolved_deployment}))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, engine.stopping.set)
        venues = _build_venues(cfg, snapshot, books, engine)
        engine.attach_venues(venues)
        instruments = _tradable_instruments(cfg, snapshot, engine, strategy, readiness.warnings)
        feed = None
        if cfg.mode != "live":  # built before waiting for a lease, so a standby takes over without this delay
            keep = instruments | {(v, REFERENCE_SYMBOL) for v in venues}
            if cfg.source == "replay":  # read from the snapshot's files: only the rows and columns replayed
                market = {name: snapshot.scan(name) for name in ("replay_books", "replay_trades", "replay_funding")}
            else:
                market = simulated_today()
            feed = ReplayFeed(market["replay_books"], market["replay_trades"], keep=keep,
                              funding=market["replay_funding"])
            del market
        if lease is not None:
            started = True  # a standby is healthy: ready to take over
            if not await _wait_for_lease(engine, lease, announce):
                journal.append_durable("stop", {"reason": "stopped as standby", "market_ts": 0})
                journal.close()
                return 0
            if cfg.mode != "live":  # the shared paper account as the other slot left it
                venues = _build_venues(cfg, snapshot, books, engine)
                engine.attach_venues(venues)
        await engine.recover(partner_dirs(cfg))
        await engine.journal_balances()
        await engine.check_pause()
        tasks = [asyncio.create_task(_every(cfg.pause_poll_s, engine.check_pause, engine)),
                 asyncio.create_task(_every(0.05, _paper_venue_syncer(engine), engine)),
                 asyncio.create_task(_every(5.0, _snapshot_watcher(engine, max_age), engine)),
                 asyncio.create_task(_every(1.0, engine.resolve_unknown, engine)),
                 asyncio.create_task(_every(HEARTBEAT_S, _heartbeat(engine), engine))]
        if cfg.mode == "live":
            from sofia_runtime.exchange.live import live_events

            tasks.append(asyncio.create_task(_every(2.0, engine.refresh_open_orders, engine)))
            # market events drive the check when replaying; live, a venue gone quiet sends none
            tasks.append(asyncio.create_task(_every(1.0, engine.cancel_stale_quotes, engine)))
            symbols = sorted(s for v, s in instruments if v == cfg.venue)
            events = live_events(venues[cfg.venue], symbols, books, engine, cfg.market_data,
                                 stream_retry_s=cfg.stream_retry_s)
            announce(f"runtime {runtime_id}: {cfg.strategy} in live mode on {cfg.venue}, {len(symbols)} symbols, "
                     f"market data: {cfg.market_data}; health on http://127.0.0.1:{port}/api/health")
        elif cfg.source == "simulator":  # today's simulated market from now on, in real time
            now_ms = int(time.time() * 1000)
            start = feed.position_after(max(engine.last_market_ms, now_ms))
            events = paced(feed, books, start, 1.0, engine, market_now_ms=now_ms)
            announce(f"runtime {runtime_id}: {cfg.strategy} in paper mode on the embedded simulator's market for "
                     f"today, {len(instruments)} instruments, in real time from position {start:,} of {len(feed):,}; "
                     f"health on http://127.0.0.1:{port}/api/health")
        else:
            start = feed.position_after(engine.last_market_ms) if engine.last_market_ms else 0
            events = paced(feed, books, start, cfg.speed, engine)
            if cfg.chaos is not None and cfg.chaos.stale_venue:
                from sofia_runtime.chaos.inject import stale_market_data

                events = stale_market_data(events, cfg.chaos)
            announce(f"runtime {runtime_id}: {cfg.strategy} in {cfg.mode} mode on snapshot {snapshot.snapshot_id}, "
                     f"{len(instruments)} instruments, replay {len(feed) - start:,} events from position {start:,} "
                     f"at speed {cfg.speed or 'max'}; health on http://127.0.0.1:{port}/api/health")
        started = True
        reason = "replay finished"
        out_of_time = False

        def time_is_up() -> None:  # stop between two events, never in the middle of sending an order
            nonlocal out_of_time
            out_of_time = True
            engine.stopping.set()

        timer = loop.call_later(cfg.duration_s, time_is_up) if cfg.duration_s else None
        await engine.run(events)
        if timer is not None:
            timer.cancel()
        if out_of_time:
            reason = f"duration {cfg.duration_s:g} s reached"
        elif engine.handover_to:
            reason = f"handover to {engine.handover_to}"
        elif engine.stopping.is_set():
            reason = "signal"
        elif strategy.done:
            reason = "strategy done"
        engine.stopping.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await engine.shutdown(reason)
        if lease is not None:
            journal.append_durable("handover" if engine.handover_to else "lease_released",
                                   {"deployment": cfg.resolved_deployment, "slot": cfg.slot, "token": lease.token,
                                    "to": engine.handover_to, "market_ts": engine.now_ms})
            lease.release()  # only now: every order of this slot is journaled and closed
        for v in engine.paper_venues:
            v.sync()
        for v in venues.values():
            await v.close()
        journal.close()
        c = engine.counters
        announce(f"runtime {runtime_id} stopped ({reason}): {c['decisions']:,} decisions, {c['passed']:,} passed, "
                 f"{c['orders']:,} orders, {c['fills']:,} fills; journal {journal.dir}")
        return 0
    finally:
        server.stop()


def _tradable_instruments(cfg: RuntimeConfig, snapshot: Snapshot, engine: Engine, strategy,
                          warnings: list[str]) -> set[tuple[str, str]]:
    """The strategy's instruments less those the snapshot lacks an input for; the refused ones are journaled (one
    `instrument_refused` record) and shown in the status. None left: the runtime refuses to start."""
    wanted = strategy.instruments(engine)
    needs_replay = cfg.mode != "live" and cfg.source == "replay"
    refused = instrument_refusals(snapshot.tables, wanted | requested_instruments(cfg, snapshot.tables, engine.venues),
                                  cfg.strategy, needs_replay)
    engine.not_tradable = refused
    instruments = wanted - set(refused)
    engine.instruments = instruments
    if refused:
        engine.journal.append_durable("instrument_refused", {"not_tradable": refusal_map(refused),
                                                             "trading": sorted(f"{v} {s}" for v, s in instruments)})
    if not instruments:
        reason = nothing_to_trade(cfg.strategy, refused, warnings)
        engine.journal.append_durable("stop", decimals({"reason": f"refused to start: {reason}", "market_ts": 0,
                                                         "counters": dict(engine.counters), "net_pnl_usd": 0.0,
                                                         "fees_usd": 0.0}))
        engine.journal.close()
        raise RefusedToStart(reason)
    return instruments


def simulated_today() -> dict:
    """The embedded simulator's books, trades and funding for the current UTC day, named as the snapshot's
    replay tables (the simulator is seeded per day, so a restarted runtime sees the same market)."""
    from datetime import datetime, timezone

    from sofia_runtime.simulator import MarketSimulator

    today = datetime.now(timezone.utc).date()
    day = MarketSimulator(end=today + timedelta(days=1), days=1).day(today)
    return {f"replay_{name}": day[name] for name in ("books", "trades", "funding")}


def _build_venues(cfg: RuntimeConfig, snapshot: Snapshot, books: Books, engine: Engine) -> dict:
    venues = _plain_venues(cfg, snapshot, books, engine)
    if cfg.chaos is not None:
        from sofia_runtime.chaos.inject import FaultyVenue

        venues = {name: FaultyVenue(v, cfg.chaos, seed=cfg.chaos.seed + i) for i, (name, v) in enumerate(venues.items())}
    return venues


def _plain_venues(cfg: RuntimeConfig, snapshot: Snapshot, books: Books, engine: Engine) -> dict:
    if cfg.mode == "live":
        from sofia_runtime.exchange.live import LiveVenue, keys_from_env

        key, secret = keys_from_env(cfg.venue, os.environ)
        # the engine re-sends after a lookup by client order id (create_order_once); the adapter sends once
        return {cfg.venue: LiveVenue(cfg.venue, key, secret, base_url=cfg.venue_urls.get(cfg.venue),
                                     ws_url=cfg.venue_ws_urls.get(cfg.venue), retries=0)}
    return build_paper_venues(cfg, snapshot, books, lambda: engine.now_ms)


def partner_dirs(cfg: RuntimeConfig) -> list[Path]:
    """The other slot's journal: the same venue account, so its fills are part of this slot's positions."""
    if not cfg.slot:
        return []
    other = "green" if cfg.slot == "blue" else "blue"
    return [paths.audit_dir() / f"{cfg.resolved_deployment}-{other}"]


async def _wait_for_lease(engine: Engine, lease: TradingLease, announce) -> bool:
    """As a standby: healthy, trading nothing, until the lease is free (the active slot handed over or died)."""
    engine.role = "standby"
    engine.journal.append_durable("standby", {"deployment": lease.deployment, "slot": lease.slot})
    announce(f"runtime {engine.runtime_id}: standby for {lease.deployment}, waiting for the trading lease")
    while not lease.try_acquire():
        if engine.stopping.is_set():
            return False
        await asyncio.sleep(0.01)
    engine.role = "active"
    engine.order_guard = lease.check
    engine.journal.append_durable("lease_acquired", {"deployment": lease.deployment, "slot": lease.slot,
                                                     "token": lease.token})
    return True


GROUP_COMMIT_S = 0.005  # the journal is durable at most this long after a write, orders at once
HEARTBEAT_S = 30.0  # a quiet runtime still journals that it is alive (the availability SLI reads it)


def _heartbeat(engine: Engine):
    async def heartbeat() -> None:
        engine.journal.append("heartbeat", {"market_ts": engine.now_ms, "open_orders": len(engine.open),
                                            "paused": engine.state.paused})
    return heartbeat


def _paper_venue_syncer(engine: Engine):
    async def sync() -> None:
        for v in engine.paper_venues:
            v.sync()
    return sync


def _snapshot_watcher(engine: Engine, max_age: timedelta):
    watcher = SnapshotWatcher(paths.serving_dir(), max_age)
    watcher.snapshot = engine.snapshot

    async def watch() -> None:
        before = watcher.snapshot
        snap = watcher.poll()
        engine.snapshot_error = watcher.last_error
        if snap is not None and snap is not before:
            engine.use_snapshot(snap)
            engine.journal.append("snapshot", {"snapshot_id": snap.snapshot_id, "partition": snap.manifest["partition"],
                                               "market_ts": engine.now_ms})
    return watch

