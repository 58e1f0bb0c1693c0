"""The chaos drill (feature M): faults injected between the engine and the venue, and `sofia-runtime chaos`, which
runs the runtime through them and judges what it did from the journal and the venue's own record.

Injection, inside the runtime process (the runner installs both when the configuration has a `chaos` section):
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

The drill, a parent process: for each scenario it writes a configuration with the scenario's `chaos` section, runs
`python -m sofia_runtime.cli run` in paper mode (or live, through `chaos_proxy`) as a real subprocess on the
CURRENT snapshot with runtime id `chaos-<scenario>-<stamp>`, arms the faults once the runtime has an order
acknowledged, disarms them after the burst, and stops at the duration. Then, per scenario:
- orders sent: the journal's `order` records;
- duplicates: client order ids the venue created more than once, plus re-sends the venue refused as duplicates
  (must be 0);
- journal intact: `journal.verify` over the runtime's files;
- reconciliation: `reconcile.reconcile` of the journal against the venue's own record, matched rows / all rows
  (must be 100 %);
- auto-pause: a `pause` record by the runtime's own breaker (`runtime-breaker:<id>`), which must fire exactly
  where the scenario expects it; the drill then resumes (clears the pause file) as soon as the faults stop, so
  the next scenario and the rest of this one trade unpaused;
- time to recover, in wall seconds:
  * fault scenarios: from the last fault injected to the first `order_ack` the runtime journaled after it
    (http_5xx: this includes the breaker's pause and the drill's resume right after the burst);
  * stale_data: from the first replayed event past the stale window to the first `order_ack` on the stale venue;
  * kill_restart: from the SIGKILL to the first `decision` of the restarted process (same runtime id).
The verdicts go to a rich table per scenario, a summary, and `<data>/reports/chaos-<stamp>.json`; the command
exits 1 when any verdict fails.

The pause file `<data>/control/pause.json` is shared by every runtime of the data folder, so the drill refuses to
run while another runtime is running there or the folder is already paused.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import functools
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
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


# --- scenarios -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    faults: dict = field(default_factory=dict)  # ChaosConfig fields for FaultyVenue
    proxy: dict | None = None  # live mode: chaos_proxy.ProxyFaults fields instead of `faults`
    burst: float = 0.4  # fraction of the duration the faults stay armed
    until_pause_within: float | None = None  # when a pause is expected: armed until it comes, at most this fraction
    expect_pause_for: frozenset[str] = frozenset()  # strategies for which the breaker must pause
    pause_why: str = ""
    modes: tuple[str, ...] = ("paper", "live")
    kill: bool = False
    stale: bool = False

    def expects_pause(self, strategy: str) -> bool:
        return strategy in self.expect_pause_for


_NO_PAUSE_RETRIES = ("an order goes unknown only when its send and all three look-ups by client id fail "
                     "(0.2^4 = 0.16 %), and the breaker needs 5 order/cancel calls failing in a row")

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("latency", "every venue call 20 ± 15 ms slower", {"latency_ms": 20.0, "jitter_ms": 15.0},
             proxy={"latency_ms": 20.0, "jitter_ms": 15.0}, pause_why="slower calls, none fails"),
    Scenario("timeouts", "20 % of venue calls time out before reaching the venue", {"timeout_rate": 0.2},
             pause_why=_NO_PAUSE_RETRIES),
    Scenario("http_5xx", "a burst of HTTP 503 on every venue call until the breaker trips", {"error_5xx_rate": 1.0},
             proxy={"error_rate": 1.0, "error_status": 503}, burst=0.3, until_pause_within=0.6,
             expect_pause_for=frozenset({"mm_lite"}),
             pause_why="every call fails: mm_lite keeps requoting, so 5 order/cancel calls fail in a row within a "
                       "second; router has one child in flight (the unknown child holds the next back) and "
                       "funding_farmer retries a failed pair only after reconsider_s, so they never reach 5"),
    Scenario("dropped_after_send", "20 % of calls (live: every POST/DELETE) processed, then the connection drops",
             {"drop_after_send_rate": 0.2}, proxy={"drop_after_send_rate": 1.0, "match": r"^(POST|DELETE) "},
             pause_why="the look-up by client id finds the order, so the send counts as a success"),
    Scenario("rate_limits", "20 % of venue calls answered 429, not processed", {"rate_limit_rate": 0.2},
             proxy={"error_rate": 0.2, "error_status": 429}, pause_why=_NO_PAUSE_RETRIES),
    Scenario("stale_data", "one venue's books and trades stop for a stretch of market time", stale=True,
             modes=("paper",), pause_why="stale data blocks orders on that book; it never pauses"),
    Scenario("kill_restart", "SIGKILL mid-run, restart with the same runtime id", kill=True,
             pause_why="a crash is not a venue error"),
    Scenario("refused", "the venue refuses connections for a while (live, at the proxy)", proxy={"refuse": True},
             burst=0.3, modes=("live",),
             pause_why="market-data polls fail (health 503) and at most the router's one child goes unknown"),
)}


def scenarios_for(name: str, mode: str) -> list[Scenario]:
    if name == "all":
        return [s for s in SCENARIOS.values() if mode in s.modes]
    if name not in SCENARIOS:
        raise ValueError(f"--scenario {name!r}: choose one of {', '.join(SCENARIOS)} or all")
    scenario = SCENARIOS[name]
    if mode not in scenario.modes:
        raise ValueError(f"--scenario {name} runs in {'/'.join(scenario.modes)} mode only, not {mode}")
    return [scenario]


def stale_window(duration_s: float, speed: float, stale_after_s: float) -> tuple[float, float]:
    """(stale_from_s, stale_for_s) in market seconds: from a quarter into the run for 40 % of it at `speed`; at
    full speed (0) the pace is unknown, so 2 market minutes in for 10 minutes (a replay at full speed covers
    several market minutes a second)."""
    if speed > 0:
        return 0.25 * duration_s * speed, max(0.4 * duration_s * speed, 3 * stale_after_s)
    return 120.0, max(600.0, 3 * stale_after_s)


# --- the verdict ---------------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    scenario: str
    runtime_id: str
    mode: str
    strategy: str
    summary: str = ""
    orders_sent: int = 0
    acknowledged: int = 0
    recovered_acks: int = 0
    unknown: int = 0
    not_sent: int = 0
    rejected: int = 0
    fills: int = 0
    injected: dict = field(default_factory=dict)
    duplicates: int = 0
    duplicate_detail: list = field(default_factory=list)
    journal_intact: bool = False
    journal_problem: str | None = None
    reconciliation_pct: float | None = None
    reconciliation_rows: int = 0
    reconciliation_problems: list = field(default_factory=list)
    auto_pause_expected: bool = False
    auto_pause: bool = False
    pause_reason: str | None = None
    pause_after_s: float | None = None  # first injected fault -> the breaker's pause record
    resumed_by_drill: bool = False
    recovery_s: float | None = None
    recovery_definition: str = ""
    exit_codes: list = field(default_factory=list)
    stale: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    failures: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "passed": self.passed}


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def read_fault_log(control_dir: Path) -> list[dict]:
    path = control_dir / "faults.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def judge(scenario: Scenario, verdict: Verdict, records: list[dict], venue_record, faults: list[dict],
          *, kill_at: float | None = None, restart_seq: int | None = None, stale_after_s: float = 5.0,
          proxy_faults: list[tuple[float, str, str]] = (), live_duplicates: dict | None = None) -> Verdict:
    """Fill `verdict` from the runtime's journal `records`, `venue_record(account, venue, view)` and the fault
    logs; a failed check appends its reason to `verdict.failures`."""
    from sofia_runtime.reconcile import journal_views, reconcile

    fail = verdict.failures.append
    kinds = Counter(r["kind"] for r in records)
    orders = {r["payload"]["client_order_id"]: r["payload"] for r in records if r["kind"] == "order"}
    acks = [r for r in records if r["kind"] == "order_ack"]
    rejected = [r["payload"] for r in records if r["kind"] == "order_rejected"]
    verdict.orders_sent = kinds["order"]
    verdict.acknowledged = len(acks)
    verdict.recovered_acks = sum(1 for r in acks if r["payload"].get("recovered"))
    verdict.unknown = kinds["order_unknown"]
    verdict.not_sent = sum(1 for p in rejected if p["status"] == "not_sent")
    verdict.rejected = len(rejected) - verdict.not_sent
    verdict.fills = kinds["fill"]
    injected = Counter(f["kind"] for f in faults if f["kind"] not in ("stale_start", "stale_end"))
    injected.update(kind for _, kind, _ in proxy_faults if kind != "refused_connections_end")
    verdict.injected = dict(sorted(injected.items()))
    if verdict.orders_sent == 0:
        fail("no order was sent: the drill proved nothing")

    # duplicates: at the venue, and re-sends it refused
    views = journal_views(records)
    resent = [p["client_order_id"] for p in rejected if "duplicate" in str(p.get("error", "")).lower()]
    if live_duplicates is not None:
        verdict.duplicates = len(live_duplicates) + len(resent)
        verdict.duplicate_detail = [f"venue order {oid} ({why})" for oid, why in sorted(live_duplicates.items())]
    else:
        per_client: Counter[str] = Counter()
        for account, view in views.items():
            for venue in sorted({o["venue"] for o in view.orders.values()}):
                rec = venue_record(account, venue, view)
                per_client.update(o["clientOrderId"] for o in rec.orders.values())
        twice = {cid: n for cid, n in per_client.items() if n > 1}
        verdict.duplicates = sum(n - 1 for n in twice.values()) + len(resent)
        verdict.duplicate_detail = [f"{cid} created {n} times at the venue" for cid, n in sorted(twice.items())]
    verdict.duplicate_detail += [f"{cid} re-sent, refused by the venue as a duplicate" for cid in resent]
    if verdict.duplicates:
        fail(f"{verdict.duplicates} duplicate order(s): {verdict.duplicate_detail[:3]}")

    # reconciliation
    rows = reconcile(views, venue_record)
    verdict.reconciliation_rows = len(rows)
    matched = sum(1 for r in rows if r["status"] == "matched")
    verdict.reconciliation_pct = round(100.0 * matched / len(rows), 4) if rows else None
    verdict.reconciliation_problems = [r for r in rows if r["status"] != "matched"][:20]
    if rows and matched != len(rows):
        fail(f"reconciliation {verdict.reconciliation_pct:.2f} %: {len(rows) - matched} row(s) not matched, first: "
             f"{verdict.reconciliation_problems[0]}")

    # auto-pause by the runtime's own breaker
    breaker = f"runtime-breaker:{verdict.runtime_id}"
    pauses = [r for r in records if r["kind"] == "pause" and r["payload"].get("paused_by") == breaker]
    verdict.auto_pause = bool(pauses)
    verdict.pause_reason = pauses[0]["payload"]["reason"] if pauses else None
    fault_times = [f["ts"] for f in faults if f["kind"] not in ("stale_start", "stale_end")]
    fault_times += [t for t, _, _ in proxy_faults]
    if pauses and fault_times:
        verdict.pause_after_s = round(_epoch(pauses[0]["ts"]) - min(fault_times), 3)
    if verdict.auto_pause != verdict.auto_pause_expected:
        fail(f"auto-pause {'fired' if verdict.auto_pause else 'did not fire'}, expected "
             f"{'a pause' if verdict.auto_pause_expected else 'none'} ({scenario.pause_why})")

    # time to recover
    if scenario.kill:
        verdict.recovery_definition = "SIGKILL -> first decision of the restarted process"
        later = [r for r in records if restart_seq is not None and r["seq"] > restart_seq and r["kind"] == "decision"]
        if kill_at is not None and later:
            verdict.recovery_s = round(_epoch(later[0]["ts"]) - kill_at, 3)
    elif scenario.stale:
        verdict.recovery_definition = "stale venue's data back -> first order_ack on that venue"
        start = next((f for f in faults if f["kind"] == "stale_start"), None)
        end = next((f for f in faults if f["kind"] == "stale_end"), None)
        venue = (start or {}).get("venue")
        blocked = sum(1 for r in records if r["kind"] == "decision"
                      and str(r["payload"].get("reason", "")).startswith("stale data"))
        verdict.stale = {"venue": venue, "market_from": (start or {}).get("market_from"),
                         "market_to": (start or {}).get("market_to"), "dropped_events": (end or {}).get("dropped"),
                         "blocked_stale_decisions": blocked}
        if start is None or end is None:
            fail("the stale window did not start and end within the run (lengthen --duration)")
        else:
            verdict.injected["stale_events_dropped"] = end["dropped"]
            guard_from, guard_to = start["market_from"] + int(stale_after_s * 1000), start["market_to"]
            on_stale = [cid for cid, o in orders.items() if o["venue"] == venue
                        and guard_from <= o["market_ts"] < guard_to]
            verdict.stale["orders_on_stale_book"] = len(on_stale)
            if on_stale:
                fail(f"{len(on_stale)} order(s) sent on {venue} while its data was stale: {on_stale[:3]}")
            back = [r for r in acks if _epoch(r["ts"]) >= end["ts"]
                    and orders.get(r["payload"]["client_order_id"], {}).get("venue") == venue]
            if back:
                verdict.recovery_s = round(_epoch(back[0]["ts"]) - end["ts"], 3)
    else:
        verdict.recovery_definition = "last injected fault -> next order_ack"
        if not fault_times:
            fail("no fault was injected")
        else:
            last = max(fault_times)
            after = [r for r in acks if _epoch(r["ts"]) >= last]
            if after:
                verdict.recovery_s = round(_epoch(after[0]["ts"]) - last, 3)
    if verdict.recovery_s is None and not any("stale window" in f or "no fault" in f for f in verdict.failures):
        stop = next((r["payload"] for r in reversed(records) if r["kind"] == "stop"), {})
        hint = (" (the strategy was done: give it more to do, e.g. a larger --order)"
                if stop.get("reason") == "strategy done" else "")
        fail(f"did not recover: nothing matched '{verdict.recovery_definition}' before the run ended{hint}")
    return verdict


# --- the drill -----------------------------------------------------------------------------------------------------


class JournalTail:
    """New complete records of one runtime's journal files since the last poll."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.offsets: dict[Path, int] = {}

    def poll(self) -> list[dict]:
        out = []
        for path in sorted(self.dir.glob("*.jsonl")):
            offset = self.offsets.get(path, 0)
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read()
            cut = data.rfind(b"\n") + 1
            if cut:
                self.offsets[path] = offset + cut
                out += [json.loads(line) for line in data[:cut].splitlines() if line.strip()]
        return out


def other_runtimes(run_dir: Path) -> list[str]:
    """Runtime ids whose lock in `<data>/run` is held by a live process."""
    import fcntl

    held = []
    for lock in sorted(run_dir.glob("*.lock")):
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            held.append(lock.stem)
        finally:
            os.close(fd)
    return held


class DrillError(RuntimeError):
    """The drill cannot run (bad arguments, a runtime that refuses to start, a paused or busy data folder)."""


@dataclass
class DrillOptions:
    scenario: str = "all"
    duration_s: float = 20.0
    strategy: str | None = None
    speed: float | None = None
    mode: str = "paper"
    venue: str | None = None
    venue_url: str | None = None
    order: str | None = None
    config: Path | None = None
    seed: int = 0


class _Proc:
    """A `sofia-runtime run` subprocess with its output in files."""

    def __init__(self, args: list[str], env: dict, out_dir: Path, n: int):
        self.out, self.err = out_dir / f"run-{n}.out", out_dir / f"run-{n}.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "sofia_runtime.cli", "run", *args], stdout=out, stderr=err, env=env)

    def poll(self):
        return self.popen.poll()

    def stderr_tail(self, n: int = 1500) -> str:
        return self.err.read_text()[-n:] if self.err.exists() else ""


class Drill:
    def __init__(self, opts: DrillOptions, announce=print):
        from sofia_runtime import paths

        self.opts, self.announce = opts, announce
        self.data = paths.data_dir()
        self.pause_path = paths.pause_file()
        if opts.duration_s < 1.0:
            raise DrillError(f"--duration {opts.duration_s:g} s is too short for a burst and a recovery (>= 1 s)")
        if opts.mode not in ("paper", "live"):
            raise DrillError(f"--mode {opts.mode!r}: paper or live")
        self.strategy = opts.strategy or ("mm_lite" if opts.mode == "paper" else "router")
        try:
            self.scenarios = scenarios_for(opts.scenario, opts.mode)
        except ValueError as exc:
            raise DrillError(str(exc)) from None
        if opts.mode == "live":
            if self.strategy == "mm_lite":
                raise DrillError("mm_lite is paper-only; a live drill needs --strategy router --order \"buy ...\"")
            if not opts.venue or not opts.venue_url:
                raise DrillError("--mode live needs --venue (the ccxt id) and --venue-url (the venue's http URL the "
                                 "chaos proxy relays to)")
            from sofia_runtime.chaos_proxy import parse_upstream
            try:
                parse_upstream(opts.venue_url)
            except ValueError as exc:
                raise DrillError(str(exc)) from None
        if self.strategy == "router" and not opts.order:
            raise DrillError('the router needs --order, e.g. --order "buy 0.01 BTC/USDT"')
        self.base_config = self._base_config()
        self.stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")

    def _base_config(self) -> dict:
        import yaml

        path = self.opts.config or (self.data / "runtime.yaml")
        if self.opts.config is not None and not path.exists():
            raise DrillError(f"configuration file {path} does not exist")
        if not path.exists():
            return {}
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise DrillError(f"{path}: the configuration must be a mapping, got {type(loaded).__name__}")
        # a drill runs one plain runtime per scenario: not a blue-green slot, its own ids and faults
        return {k: v for k, v in loaded.items() if k not in ("chaos", "slot", "deployment", "runtime_id")}

    # --- one scenario ---------------------------------------------------------------------------------------
    def _write_config(self, scenario: Scenario, rid: str, workdir: Path, proxy_url: str | None):
        import yaml

        from sofia_runtime.config import load_config

        chaos = {"scenario": scenario.name, "seed": self.opts.seed}
        if not (self.opts.mode == "live" and scenario.proxy is not None):
            chaos.update(scenario.faults)
        cfg = dict(self.base_config)
        if proxy_url is not None:
            cfg["venue_urls"] = {**(cfg.get("venue_urls") or {}), self.opts.venue: proxy_url}
        path = workdir / "runtime.yaml"
        cfg["chaos"] = chaos
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        flags = {"strategy": self.strategy, "mode": self.opts.mode, "venue": self.opts.venue,
                 "speed": self.opts.speed, "duration_s": self.opts.duration_s, "runtime_id": rid}
        try:
            effective = load_config(path, **flags)
        except Exception as exc:  # pydantic's message names the field
            raise DrillError(f"the drill's configuration {path} is invalid: {exc}") from None
        if scenario.stale:
            venue = self.opts.venue or self._first_venue()
            frm, length = stale_window(self.opts.duration_s, effective.speed, effective.limits.stale_after_s)
            cfg["chaos"].update({"stale_venue": venue, "stale_from_s": frm, "stale_for_s": length})
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            effective = load_config(path, **flags)
        if self.opts.mode == "live":
            from sofia_runtime.runner import RefusedToStart, check_can_start
            try:
                check_can_start(effective)
            except RefusedToStart as exc:
                raise DrillError(f"{exc} (the drill never turns live trading on: allow_live must come from your "
                                 f"configuration, the keys from the environment)") from None
        return path, effective

    def _first_venue(self) -> str:
        import polars as pl

        from sofia_runtime import paths
        from sofia_runtime.snapshot import SnapshotError, current_id
        try:
            markets = paths.serving_dir() / current_id(paths.serving_dir()) / "markets.parquet"
            return sorted(pl.read_parquet(markets, columns=["venue"])["venue"].unique())[0]
        except (SnapshotError, OSError, IndexError) as exc:
            raise DrillError(f"cannot pick a venue for stale_data from the CURRENT snapshot: {exc}") from None

    def _run_args(self, rid: str, config: Path, duration_s: float) -> list[str]:
        args = ["--strategy", self.strategy, "--mode", self.opts.mode, "--runtime-id", rid, "--config", str(config),
                "--port", "0", "--duration", f"{duration_s:.3f}s"]
        for flag, value in (("--speed", self.opts.speed), ("--venue", self.opts.venue), ("--order", self.opts.order)):
            if value is not None:
                args += [flag, str(value)]
        return args

    def run_scenario(self, scenario: Scenario, proxy=None) -> Verdict:
        from sofia_runtime import control
        from sofia_runtime.chaos_proxy import NO_FAULTS, ProxyFaults

        rid = f"chaos-{scenario.name}-{self.stamp}"
        workdir = self.data / "chaos" / rid
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "armed").unlink(missing_ok=True)
        config, effective = self._write_config(scenario, rid, workdir, proxy.url if proxy else None)
        env = {**os.environ, "SOFIA_DATA_DIR": str(self.data), CONTROL_ENV: str(workdir), "PYTHONUNBUFFERED": "1"}
        D = self.opts.duration_s
        use_proxy = self.opts.mode == "live" and scenario.proxy is not None
        has_faults = bool(scenario.faults) or use_proxy
        verdict = Verdict(scenario.name, rid, self.opts.mode, self.strategy, scenario.summary,
                          auto_pause_expected=scenario.expects_pause(self.strategy))
        proxy_log_from = len(proxy.proxy.fault_log) if use_proxy else 0
        until_pause = scenario.until_pause_within is not None and verdict.auto_pause_expected
        burst = scenario.until_pause_within if until_pause else scenario.burst
        self.announce(f"chaos {scenario.name}: {scenario.summary} - runtime {rid}")

        procs = [_Proc(self._run_args(rid, config, D), env, workdir, 1)]
        tail = JournalTail(self.data / "audit" / rid)
        t0 = time.monotonic()
        started = first_ack = armed = disarmed = None
        breaker_paused = False
        kill_at = restart_seq = None
        last_seq = 0
        deadline = t0 + D + 45.0

        def arm(on: bool) -> None:
            if use_proxy:
                proxy.set_faults(ProxyFaults(**scenario.proxy) if on else NO_FAULTS)
            elif on:
                (workdir / "armed").touch()
            else:
                (workdir / "armed").unlink(missing_ok=True)

        def resume_breaker() -> bool:
            state = control.read_pause(self.pause_path)
            if state.paused and state.paused_by == f"runtime-breaker:{rid}":
                return control.clear_pause(self.pause_path)
            return False

        try:
            while True:
                now = time.monotonic()
                for rec in tail.poll():
                    last_seq = rec["seq"]
                    if rec["kind"] == "start" and started is None:
                        started = now
                    elif rec["kind"] == "order_ack" and first_ack is None:
                        first_ack = now
                    elif rec["kind"] == "pause" and rec["payload"].get("paused_by") == f"runtime-breaker:{rid}":
                        breaker_paused = True
                proc = procs[-1]
                if proc.poll() is not None:
                    if proc.poll() == 2:
                        raise DrillError(f"the runtime refused to start: {proc.stderr_tail()}")
                    break
                if now > deadline:
                    proc.popen.terminate()
                    try:
                        proc.popen.wait(15)
                    except Exception:
                        proc.popen.kill()
                    verdict.failures.append(f"the runtime did not stop within {D + 45:.0f} s")
                    break
                ready = first_ack is not None or (started is not None and now - started > 0.3 * D)
                if has_faults and armed is None and ready and now - (first_ack or started) >= 0.1 * D:
                    arm(True)
                    armed = now
                if armed is not None and disarmed is None and (
                        now - armed >= burst * D or (until_pause and breaker_paused)):
                    arm(False)
                    disarmed = now
                if breaker_paused and (disarmed is not None or not has_faults):
                    verdict.resumed_by_drill |= resume_breaker()
                if scenario.kill and kill_at is None and first_ack is not None and now - first_ack >= 0.4 * D:
                    proc.popen.kill()
                    proc.popen.wait()
                    kill_at = time.time()
                    for rec in tail.poll():
                        last_seq = rec["seq"]
                    restart_seq = last_seq
                    remaining = max(1.0, D - (time.monotonic() - (started or t0)))
                    procs.append(_Proc(self._run_args(rid, config, remaining), env, workdir, 2))
                time.sleep(0.02)
        finally:
            arm(False)
            for proc in procs:
                if proc.poll() is None:
                    proc.popen.kill()
                    proc.popen.wait()
            if breaker_paused or control.read_pause(self.pause_path).paused:
                verdict.resumed_by_drill |= resume_breaker()

        verdict.exit_codes = [p.poll() for p in procs]
        expected_codes = [-9, 0] if scenario.kill else [0]
        if scenario.kill and kill_at is None:
            verdict.failures.append("the runtime ended before the drill could kill it (lengthen --duration)")
        elif verdict.exit_codes != expected_codes:
            verdict.failures.append(f"runtime exit codes {verdict.exit_codes}, expected {expected_codes}: "
                                    f"{procs[-1].stderr_tail(600)}")
        if has_faults and armed is None:
            verdict.notes.append("the faults were never armed: the runtime ended first")
        if control.read_pause(self.pause_path).paused:
            verdict.notes.append(f"the data folder is still paused: {control.read_pause(self.pause_path)}")
        proxy_faults = list(proxy.proxy.fault_log[proxy_log_from:]) if use_proxy else []
        return self._judge(scenario, verdict, workdir, effective, kill_at, restart_seq, proxy_faults)

    def _judge(self, scenario, verdict, workdir, effective, kill_at, restart_seq, proxy_faults) -> Verdict:
        from sofia_runtime.journal import JournalError, journal_files, read_records, verify
        from sofia_runtime.reconcile import paper_venue_record

        files = journal_files(self.data / "audit" / verdict.runtime_id)
        problem = verify(files) if files else "no journal files"
        verdict.journal_intact = problem is None
        verdict.journal_problem = None if problem is None else str(problem)
        if problem is not None:
            verdict.failures.append(f"journal broken: {problem}")
        try:
            records = [rec for _, _, rec in read_records(files, in_progress=True)]
        except JournalError as exc:
            verdict.failures.append(f"journal unreadable: {exc}")
            records = []
        live_dups = None
        if self.opts.mode == "live":
            from sofia_runtime.reconcile import journal_views

            fetched: dict[str, tuple] = {}
            since = int(_epoch(records[0]["ts"]) * 1000) if records else None
            for view in journal_views(records).values():
                for venue in sorted({o["venue"] for o in view.orders.values()}):
                    fetched[venue] = live_venue_record(venue, view, self.opts.venue_url, os.environ, since)
            live_dups = {oid: why for _, unexplained in fetched.values() for oid, why in unexplained.items()}

            def venue_record(account, venue, view):
                return fetched[venue][0]
        else:
            def venue_record(account, venue, view):
                return paper_venue_record(self.data / "paper_venue" / account / f"{venue}.jsonl")
        return judge(scenario, verdict, records, venue_record, read_fault_log(workdir), kill_at=kill_at,
                     restart_seq=restart_seq, stale_after_s=effective.limits.stale_after_s,
                     proxy_faults=proxy_faults,
                     live_duplicates=live_dups)

    # --- all of them ------------------------------------------------------------------------------------------
    def run(self) -> list[Verdict]:
        from sofia_runtime import control

        state = control.read_pause(self.pause_path)
        if state.paused:
            raise DrillError(f"the data folder is paused by {state.paused_by} ({state.reason}): the drill would "
                             f"measure nothing; resume first (sofia-runtime resume)")
        busy = other_runtimes(self.data / "run")
        if busy:
            raise DrillError(f"runtimes are running on {self.data}: {', '.join(busy)}. The drill's breaker pause "
                             f"(pause.json) is shared and would pause them too: stop them or use another "
                             f"SOFIA_DATA_DIR")
        verdicts = []
        proxy = None
        if self.opts.mode == "live":
            from sofia_runtime.chaos_proxy import ProxyThread
            proxy = ProxyThread(self.opts.venue_url, seed=self.opts.seed)
        try:
            for scenario in self.scenarios:
                verdicts.append(self.run_scenario(scenario, proxy))
        finally:
            if proxy is not None:
                proxy.close()
        return verdicts

    def write_report(self, verdicts: list[Verdict]) -> Path:
        from sofia_runtime import paths

        report = {"stamp": self.stamp, "mode": self.opts.mode, "strategy": self.strategy,
                  "duration_s": self.opts.duration_s, "speed": self.opts.speed, "seed": self.opts.seed,
                  "passed": all(v.passed for v in verdicts), "scenarios": [v.as_dict() for v in verdicts]}
        out = paths.reports_dir() / f"chaos-{self.stamp}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(json.dumps(report, indent=2, default=str))
        os.replace(tmp, out)
        return out


def live_venue_record(venue: str, view, base_url: str, env, since_ms: int | None = None) -> tuple:
    """(VenueRecord, unexplained) for a live venue: each journaled order looked up by client order id, the trades
    of their symbols since `since_ms` (the runtime's start); `unexplained` maps venue order ids among those trades
    that no journaled client id resolves to (a duplicate, or other trading on the account meanwhile: run a live
    drill on an account of its own) to a description."""
    from sofia_runtime.exchange.live import LiveVenue, keys_from_env
    from sofia_runtime.reconcile import VenueRecord

    try:
        key, secret = keys_from_env(venue, env)
    except ValueError as exc:
        return VenueRecord(error=str(exc)), {}

    async def fetch():
        client = LiveVenue(venue, key, secret, base_url=base_url)
        record, unexplained = VenueRecord(), {}
        try:
            orders = [o for o in view.orders.values() if o["venue"] == venue]
            for o in orders:
                found = await client.find_order(o["client_order_id"], o["symbol"])
                if found:
                    found = dict(found, clientOrderId=o["client_order_id"])
                    if found.get("type") == "market":
                        # ccxt puts a market order's average fill price in `price`; the order had none (its
                        # fills' prices are reconciled one by one)
                        found["price"] = None
                    record.orders[str(found["id"])] = found
            for symbol in sorted({o["symbol"] for o in orders}):
                for t in await client.fetch_my_trades(symbol, since_ms):
                    record.trades[str(t["id"])] = dict(t, clientOrderId=None)
                    if str(t["order"]) not in record.orders:
                        unexplained[str(t["order"])] = f"trade {t['id']} of an order no journaled client id names"
        except base.ExchangeError as exc:
            record.error = str(exc)
        finally:
            await client.close()
        return record, unexplained

    return asyncio.run(fetch())


# --- output --------------------------------------------------------------------------------------------------------


def print_verdicts(verdicts: list[Verdict], report: Path | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()

    def ok(flag: bool) -> str:
        return "[green]ok[/green]" if flag else "[red]FAIL[/red]"

    for v in verdicts:
        table = Table(title=f"chaos {v.scenario} ({v.runtime_id}): {'PASS' if v.passed else 'FAIL'}",
                      title_justify="left")
        for col in ("check", "result", "expected", ""):
            table.add_column(col)
        faults = ", ".join(f"{k} {n}" for k, n in v.injected.items()) or "none"
        recon = "n/a" if v.reconciliation_pct is None else f"{v.reconciliation_pct:.2f} % of {v.reconciliation_rows}"
        table.add_row("faults injected", faults, "", "")
        table.add_row("orders sent", f"{v.orders_sent} ({v.acknowledged} acked, {v.recovered_acks} recovered, "
                      f"{v.unknown} unknown, {v.not_sent} not sent, {v.rejected} rejected), {v.fills} fills",
                      "> 0", ok(v.orders_sent > 0))
        table.add_row("duplicates", str(v.duplicates), "0", ok(v.duplicates == 0))
        table.add_row("journal intact", "yes" if v.journal_intact else f"no: {v.journal_problem}", "yes",
                      ok(v.journal_intact))
        table.add_row("reconciliation", recon, "100 %", ok(v.reconciliation_pct in (None, 100.0)))
        paused = "no" if not v.auto_pause else (f"yes, {v.pause_after_s:.3f} s after the first fault"
                                                 if v.pause_after_s is not None else "yes")
        table.add_row("auto-pause", paused + (", resumed by the drill" if v.resumed_by_drill else ""),
                      "yes" if v.auto_pause_expected else "no", ok(v.auto_pause == v.auto_pause_expected))
        table.add_row("time to recover", "-" if v.recovery_s is None else f"{v.recovery_s:.3f} s",
                      v.recovery_definition, ok(v.recovery_s is not None))
        if v.stale:
            table.add_row("stale data", ", ".join(f"{k} {val}" for k, val in v.stale.items()), "", "")
        console.print(table)
        for reason in v.failures:
            console.print(f"  [red]FAIL[/red] {reason}")
        for note in v.notes:
            console.print(f"  note: {note}")
    summary = Table(title="chaos drill summary", title_justify="left")
    for col in ("scenario", "orders", "faults", "duplicates", "journal", "reconciliation", "auto-pause (expected)",
                "recovery", "verdict"):
        summary.add_column(col)
    for v in verdicts:
        summary.add_row(v.scenario, str(v.orders_sent), str(sum(v.injected.values())), str(v.duplicates),
                        "intact" if v.journal_intact else "BROKEN",
                        "n/a" if v.reconciliation_pct is None else f"{v.reconciliation_pct:.2f} %",
                        f"{'yes' if v.auto_pause else 'no'} ({'yes' if v.auto_pause_expected else 'no'})",
                        "-" if v.recovery_s is None else f"{v.recovery_s:.3f} s",
                        "[green]PASS[/green]" if v.passed else "[red]FAIL[/red]")
    console.print(summary)
    if report is not None:
        console.print(f"verdicts written to {report}")


def run_drill(opts: DrillOptions) -> int:
    """`sofia-runtime chaos`: 0 when every verdict passes, 1 when one fails, 2 when the drill cannot run."""
    try:
        drill = Drill(opts)
        verdicts = drill.run()
    except DrillError as exc:
        print(f"sofia-runtime chaos: {exc}", file=sys.stderr)
        return 2
    report = drill.write_report(verdicts)
    print_verdicts(verdicts, report)
    return 0 if all(v.passed for v in verdicts) else 1
