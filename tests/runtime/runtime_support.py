"""Support for the runtime's tests: a small hand-made serving snapshot in a data folder of the test's own, and
helpers to run `sofia-runtime` as a real process and read back what it journaled (the `runtime_data` fixture in
conftest.py puts them together).

The snapshot: venues binance and okx, BTC/USDT (spot) and BTC/USDT:USDT (perp) on each, MARKET_HOURS hours of
books every 10 s and public trades from a seeded random walk (a fixed day in the past; the snapshot itself is
created now, so it is fresh).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from sofia_runtime.journal import journal_files, read_records
from sofia_runtime.schemas import REPLAY_TABLES, SERVING_TABLES
from sofia_runtime.snapshot import write_snapshot

# How long a test waits for a condition before calling it a hang. Deadlines catch hangs only: the suite runs on
# loaded 2-core machines, where a healthy process can take many times its quiet-machine time. Speed is measured
# by the benchmarks (bench/), never asserted here.
HANG_S = 60.0
JOURNAL_KEY = "test-journal-key-5e0c"  # signs the runtimes' checkpoints (live trading requires one)
CONTROL_TOKEN = "test-control-token-91ad"  # the bearer token of state-changing endpoints (slots require one)

VENUES = ("binance", "okx")
SPOT, PERP = "BTC/USDT", "BTC/USDT:USDT"
SYMBOLS = {SPOT: "spot", PERP: "perp"}
DAY = date(2026, 11, 20)
DAY_START = datetime(2026, 11, 20)
MARKET_HOURS = 3
BOOK_EVERY_S = 10
FEES = {"spot": (0.0002, 0.0005), "perp": (0.0001, 0.0004)}  # (maker, taker)
FILL_PARAMS = {"intensity_a": 0.05, "decay_k": 0.8, "vol_ref": 0.0005, "vol_exponent": 0.5}
CLI = [sys.executable, "-m", "sofia_runtime.cli"]


def _books_and_trades(seed: int = 7) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Top of book every BOOK_EVERY_S seconds and two or three public trades in between, per venue and symbol.
    Mid is a random walk around 60,000 (about 3 bps per 10 s), the spread 2-4 bps, sizes 0.5-3 BTC."""
    rng = np.random.default_rng(seed)
    n = MARKET_HOURS * 3600 // BOOK_EVERY_S
    books, trades = [], []
    for v, venue in enumerate(VENUES):
        for symbol, market in SYMBOLS.items():
            start = 60_000.0 + 15.0 * v + (20.0 if market == "perp" else 0.0)
            mid = start * np.exp(np.cumsum(rng.normal(0.0, 0.0003, n)))
            spread = np.round(rng.uniform(12.0, 24.0, n), 2)
            bid = np.round(mid - spread / 2, 2)
            ask = np.round(bid + spread, 2)
            ts = [DAY_START + timedelta(seconds=BOOK_EVERY_S * i) for i in range(n)]
            books.append(pl.DataFrame({
                "venue": venue, "symbol": symbol, "market": market, "ts": ts, "bid": bid, "ask": ask,
                "bid_size": np.round(rng.uniform(0.5, 3.0, n), 4), "ask_size": np.round(rng.uniform(0.5, 3.0, n), 4)}))
            k = 0
            rows = {"ts": [], "trade_id": [], "side": [], "price": [], "amount": []}
            for i in range(n):
                for j in range(int(rng.integers(2, 4))):
                    side = "buy" if rng.random() < 0.5 else "sell"
                    rows["ts"].append(ts[i] + timedelta(seconds=1 + 3 * j, milliseconds=int(rng.integers(0, 999))))
                    rows["trade_id"].append(f"{venue}-{market}-{k}")
                    rows["side"].append(side)
                    rows["price"].append(float(ask[i] if side == "buy" else bid[i]))
                    rows["amount"].append(round(float(rng.uniform(0.001, 0.6)), 5))
                    k += 1
            trades.append(pl.DataFrame({"venue": venue, "symbol": symbol, "market": market, **rows}))
    return pl.concat(books), pl.concat(trades)


def snapshot_tables(seed: int = 7) -> dict[str, pl.DataFrame]:
    """Every table of SERVING_TABLES and REPLAY_TABLES, conformed to its exact schema."""
    pairs = [(v, s, m) for v in VENUES for s, m in SYMBOLS.items()]
    books, trades = _books_and_trades(seed)
    raw = {
        "fee_table": pl.DataFrame([
            {"venue": v, "symbol": s, "market": m, "tier": "VIP0", "min_volume_30d_usd": 0.0, "maker": FEES[m][0],
             "taker": FEES[m][1], "funding_interval_hours": 1.0 if m == "perp" else None,
             "valid_from": date(2020, 1, 1), "valid_to": None, "source": "test", "selected": True}
            for v, s, m in pairs]),
        "withdrawal_fees": pl.DataFrame([
            {"venue": v, "asset": a, "network": n, "fee": f, "valid_from": date(2020, 1, 1), "valid_to": None,
             "source": "test"} for v in VENUES for a, n, f in (("BTC", "BTC", 0.0002), ("USDT", "TRC20", 1.0))]),
        "tax_rules": pl.DataFrame([
            {"rule_id": "tx-tax", "kind": "transaction_tax", "rate": 0.0, "valid_from": date(2020, 1, 1),
             "valid_to": None, "status": "enacted", "enabled": True, "source": "test"}]),
        "route_table": pl.DataFrame([
            {"symbol": s, "side": side, "hour": h, "notional_usd": 10_000.0, "best_venue": "binance",
             "best_cost_bps": 5.0, "runner_up_venue": "okx", "runner_up_cost_bps": 6.0, "margin_bps": 1.0}
            for s in SYMBOLS for side in ("buy", "sell") for h in range(24)]),
        "session_schedule": pl.DataFrame([
            {"venue": v, "symbol": s, "hour": h, "active": True, "score": 1.0, "reason": "test: always on"}
            for v, s, _ in pairs for h in range(24)]),
        "fill_model": pl.DataFrame([
            {"venue": v, "symbol": s, "side": side, **FILL_PARAMS, "brier": 0.1, "n_obs": 1000}
            for v, s, _ in pairs for side in ("buy", "sell")]),
        "funding_opportunities": pl.DataFrame([
            {"venue": "binance", "symbol": PERP, "spot_symbol": SPOT, "direction": "long_spot_short_perp",
             "mean_funding_rate": 0.0002, "observed_interval_hours": 1.0, "annualized_funding": 0.3285,
             "fees_cost": 0.0018, "spread_cost": 0.0004, "basis_risk_charge": 0.0005, "net_annual_carry": 0.3,
             "breakeven_hours": 10.0, "offered": True, "reason": "test"}]),
        "inventory_targets": pl.DataFrame([
            {"venue": v, "asset": a, "target": t, "lower": t / 2, "upper": t * 2}
            for v in VENUES for a, t in (("USDT", 100_000.0), ("BTC", 2.0))]),
        "risk_limits": pl.DataFrame([
            {"venue": v, "symbol": s, "max_position": 1.0, "max_notional_usd": 100_000.0, "max_open_orders": 4,
             "daily_loss_limit_usd": 1000.0} for v, s, _ in pairs]),
        "markets": pl.DataFrame([
            {"venue": v, "symbol": s, "market": m, "base": "BTC", "quote": "USDT", "price_tick": 0.01,
             "amount_step": 0.00001 if m == "spot" else 0.001, "min_amount": 0.00001 if m == "spot" else 0.001,
             "min_notional": 5.0} for v, s, m in pairs]),
        "replay_books": books,
        "replay_trades": trades,
        "replay_latency": pl.DataFrame([
            {"venue": v, "endpoint": e, "ts": DAY_START + timedelta(minutes=i), "latency_ms": 20.0 + 2.0 * i,
             "ok": True, "error": None} for v in VENUES for e in ("private_rest", "public_rest") for i in range(21)]),
        "replay_funding": pl.DataFrame([
            {"venue": v, "symbol": PERP, "ts": DAY_START + timedelta(hours=i), "funding_rate": 0.0001 * (3 - i)}
            for v in VENUES for i in range(MARKET_HOURS)]),  # hourly, inside the replayed hours
    }
    schemas = {**SERVING_TABLES, **REPLAY_TABLES}
    assert set(raw) == set(schemas)
    return {name: schemas[name].conform(df, f"test table {name}") for name, df in raw.items()}


_TABLES: dict[str, pl.DataFrame] | None = None


def publish(data: Path, tables: dict[str, pl.DataFrame] | None = None) -> str:
    """Write the test snapshot (built once per test process) into `<data>/serving`; returns its id."""
    global _TABLES
    if tables is None:
        if _TABLES is None:
            _TABLES = snapshot_tables()
        tables = _TABLES
    serving = data / "serving"
    serving.mkdir(parents=True, exist_ok=True)
    return write_snapshot(tables, DAY.isoformat(), serving)


@dataclass
class RuntimeData:
    dir: Path
    snapshot_id: str

    @property
    def tables(self) -> dict[str, pl.DataFrame]:
        return _TABLES

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for a runtime process: this data folder, no keys or runtime settings inherited."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SOFIA_RUNTIME_", "SOFIA_BINANCE_", "SOFIA_OKX_"))}
        return {**env, "SOFIA_DATA_DIR": str(self.dir), "PYTHONUNBUFFERED": "1", "SOFIA_JOURNAL_KEY": JOURNAL_KEY,
                "SOFIA_CONTROL_TOKEN": CONTROL_TOKEN, **extra}

    def cli(self, *args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        """`python -m sofia_runtime.cli <args>` to completion."""
        return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                              env=env or self.env(), cwd=self.dir)

    def start(self, *args: str, env: dict | None = None) -> subprocess.Popen:
        """`python -m sofia_runtime.cli run <args> --port 0` in the background."""
        return subprocess.Popen([*CLI, "run", *args, "--port", "0"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env or self.env(), cwd=self.dir)

    def run_file(self, runtime_id: str) -> Path:
        return self.dir / "run" / f"{runtime_id}.json"

    def port(self, runtime_id: str, proc: subprocess.Popen | None = None, timeout: float = HANG_S) -> int:
        """The port the runtime bound, from its run file, once it is there."""
        deadline = time.monotonic() + timeout
        path = self.run_file(runtime_id)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"runtime exited {proc.returncode}: {proc.stderr.read()}")
            try:
                return json.loads(path.read_text())["port"]
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                time.sleep(0.005)
        raise AssertionError(f"no run file {path} after {timeout} s")

    def records(self, runtime_id: str, in_progress: bool = False) -> list[dict]:
        """Every journal record of the runtime, in order, across its day files. `in_progress`: the runtime is still
        writing, so a last line without its newline is a record being written, left out (else it is an error)."""
        return [rec for _, _, rec in read_records(journal_files(self.dir / "audit" / runtime_id), in_progress)]

    def venue_lines(self, runtime_id: str, venue: str) -> list[dict]:
        path = self.dir / "paper_venue" / runtime_id / f"{venue}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def http_get(port: int, path: str, timeout: float = 30.0) -> tuple[int, dict | str]:
    """(status, JSON body or text) of GET http://127.0.0.1:<port><path>; an HTTP error status is returned too."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            status, body, ctype = resp.status, resp.read().decode(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        status, body, ctype = err.code, err.read().decode(), err.headers.get("Content-Type", "")
    return status, json.loads(body) if "json" in ctype else body


def wait_for(predicate, timeout: float = HANG_S, interval: float = 0.02, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def stop(proc: subprocess.Popen, timeout: float = HANG_S) -> tuple[str, str]:
    """SIGTERM (a clean stop) and wait; returns (stdout, stderr)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"runtime did not stop on SIGTERM within {timeout} s: {err}")
    return out, err
