"""The risk backtest (feature H): a strategy's rules replayed over one day of the warehouse by the runtime's own
code, so the gate, the risk limits, the fees, the tax, the fill model and the strategies are the ones that
trade. It wires the pieces as `sofia_runtime.runner` does for a paper run (paper venues over shared books,
the market clock, the engine, a journal) on an in-memory snapshot, and replays the day as fast as the engine
goes. Nothing here decides, fills or prices anything itself; it reads the outcome from the engine and its
journal.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import polars as pl

from sofia_runtime import paths
from sofia_runtime.config import RuntimeConfig
from sofia_runtime.engine import Engine
from sofia_runtime.journal import Journal, decimals, journal_files, read_records
from sofia_runtime.marketdata import Books, ReplayFeed
from sofia_runtime.runner import REFERENCE_SYMBOL, build_paper_venues, make_strategy, paced
from sofia_runtime.schemas import RISK_BACKTEST_FILLS, RISK_BACKTEST_PNL, RISK_BACKTEST_POSITIONS
from sofia_runtime.snapshot import ALL_TABLES, Snapshot
from sofia_runtime.tax import rate_on


class BacktestError(RuntimeError):
    """The day cannot be backtested; the message says what is missing."""


REQUIRED = {"replay_books": "no books or quotes for the day (the engine replays top of book; the source has none)",
            "markets": "no markets (precision and limits) for the day's instruments",
            "fee_table": "no fees for the day's instruments",
            "fill_model": "no fill model for the day (see fill_model)"}


def replay_blockers(tables: dict[str, pl.DataFrame]) -> str | None:
    """Why the day cannot be replayed (every reason, joined), or None when it can."""
    reasons = [why for name, why in REQUIRED.items() if name in tables and tables[name].is_empty()]
    return "; ".join(reasons) or None


def backtest_snapshot(tables: dict[str, pl.DataFrame], partition: str, path: Path) -> Snapshot:
    """The snapshot the engine trades on, held in memory: every serving and replay table, conformed to its
    schema as `write_snapshot` would."""
    missing = sorted(set(ALL_TABLES) - set(tables))
    if missing:
        raise BacktestError(f"backtest of {partition}: table(s) {missing} missing")
    conformed = {name: schema.conform(tables[name], f"backtest {partition}: table {name}")
                 for name, schema in ALL_TABLES.items()}
    for name in REQUIRED:
        if conformed[name].is_empty():
            raise BacktestError(f"backtest of {partition}: {name} is empty ({REQUIRED[name]})")
    snapshot_id = f"backtest-{partition}"
    manifest = {"snapshot_id": snapshot_id, "created_at": datetime.now(timezone.utc).isoformat(),
                "partition": partition, "tables": {n: {"rows": df.height} for n, df in conformed.items()}}
    return Snapshot(snapshot_id, path, manifest, conformed)


class BacktestRuntimeConfig(RuntimeConfig):
    """The runtime's configuration from its arguments only: SOFIA_RUNTIME_* and <data>/runtime.yaml configure
    the running runtime and must not change what a backtest finds."""

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        return (init_settings,)


def backtest_config(strategy: str, partition: str, overrides: dict) -> RuntimeConfig:
    """The runtime's defaults with `overrides` (risk.yaml), in paper mode at full speed."""
    try:
        return BacktestRuntimeConfig(**{**overrides, "strategy": strategy, "mode": "paper", "speed": 0.0,
                                        "runtime_id": f"backtest-{strategy}-{partition}"})
    except ValueError as exc:
        raise BacktestError(f"risk.yaml backtest.strategies.{strategy}.runtime: {exc}") from exc


def best_instruments(instruments: set[tuple[str, str]], rankings: pl.DataFrame | None, n: int | None) -> set:
    """The `n` best of the strategy's instruments by symbol_rankings (unranked ones last, then by name)."""
    if n is None or len(instruments) <= n:
        return set(instruments)
    rank = {} if rankings is None else {(v, s): r for v, s, r in rankings.select("venue", "symbol", "rank").iter_rows()}
    return set(sorted(instruments, key=lambda k: (rank.get(k, 10**9), k))[:n])


@dataclass
class BacktestRun:
    strategy: str
    pnl: dict
    fills: pl.DataFrame
    positions: pl.DataFrame
    journal_dir: Path


async def _replay(cfg: RuntimeConfig, snapshot: Snapshot, journal: Journal, rankings: pl.DataFrame | None,
                  max_instruments: int | None) -> tuple[Engine, int, int]:
    books = Books()
    strategy = make_strategy(cfg)
    # no pause file: the live runtime's pause does not stop a backtest
    engine = Engine(cfg, snapshot, journal, {}, strategy, pause_path=None)
    engine.books = books
    venues = build_paper_venues(cfg, snapshot, books, lambda: engine.now_ms)
    engine.attach_venues(venues)
    journal.append_durable("start", decimals({
        "pid": os.getpid(), "mode": "backtest", "strategy": cfg.strategy, "snapshot_id": snapshot.snapshot_id,
        "partition": snapshot.manifest["partition"], "port": None, "config": cfg.model_dump(mode="json")}))
    await engine.recover()
    await engine.journal_balances()
    instruments = best_instruments(strategy.instruments(engine), rankings, max_instruments)
    engine.instruments = instruments
    t = snapshot.tables
    feed = ReplayFeed(t["replay_books"], t["replay_trades"], keep=instruments | {(v, REFERENCE_SYMBOL) for v in venues},
                      funding=t["replay_funding"])
    await engine.run(paced(feed, books, 0, 0.0, engine))
    engine.stopping.set()
    await engine.shutdown("strategy done" if strategy.done else "replay finished")
    for venue in venues.values():
        await venue.close()
    return engine, len(instruments), len(feed)


def run_backtest(snapshot: Snapshot, strategy: str, overrides: dict, scratch: Path,
                 rankings: pl.DataFrame | None = None, max_instruments: int | None = None) -> BacktestRun:
    """Replay the snapshot's day for `strategy`. The journal and the paper venues' records go to `scratch`,
    emptied first, so a re-run starts from nothing."""
    partition = snapshot.manifest["partition"]
    cfg = backtest_config(strategy, partition, overrides)
    runtime_id = cfg.resolved_runtime_id
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    # build_paper_venues keeps the venues' records under <data>/paper_venue/<runtime id>; they move into the
    # scratch folder afterwards so nothing of the backtest is mistaken for a runtime's
    venue_records = paths.data_dir() / "paper_venue" / cfg.venue_account
    shutil.rmtree(venue_records, ignore_errors=True)
    journal = Journal(scratch, runtime_id)
    started = time.perf_counter()
    try:
        engine, instruments, events = asyncio.run(_replay(cfg, snapshot, journal, rankings, max_instruments))
    finally:
        journal.close()
        if venue_records.exists():
            shutil.move(str(venue_records), str(scratch / "paper_venue"))
    seconds = time.perf_counter() - started
    records = [rec for _, _, rec in read_records(journal_files(journal.dir))]
    fills = fills_frame(records, engine, strategy)
    positions = positions_frame(engine, strategy)
    pnl = pnl_row(engine, strategy, fills, positions, instruments, events, seconds)
    return BacktestRun(strategy, pnl, fills, positions, journal.dir)


def _usd(engine: Engine, venue: str, symbol: str) -> float:
    usd = engine.usd_per_quote(venue, symbol) if (venue, symbol) in engine.markets else float("nan")
    return usd if usd == usd else 0.0


def fills_frame(records: list[dict], engine: Engine, strategy: str) -> pl.DataFrame:
    """The journal's fills, with each order's tag and the fill's notional in USD."""
    tags = {r["payload"]["client_order_id"]: r["payload"]["tag"] for r in records if r["kind"] == "order"}
    rows = []
    for r in records:
        if r["kind"] != "fill":
            continue
        p = r["payload"]
        price, amount = Decimal(p["price"]), Decimal(p["amount"])
        rows.append({"strategy": strategy, "ts": datetime.fromtimestamp(p["market_ts"] / 1000, tz=timezone.utc)
                     .replace(tzinfo=None), "trade_id": p["trade_id"], "client_order_id": p["client_order_id"],
                     "tag": tags.get(p["client_order_id"]), "venue": p["venue"], "symbol": p["symbol"],
                     "side": p["side"], "liquidity": p["liquidity"], "price": price, "amount": amount,
                     "fee": Decimal(p["fee"]), "fee_currency": p["fee_currency"],
                     "notional_usd": float(price * amount) * _usd(engine, p["venue"], p["symbol"])})
    if not rows:
        return RISK_BACKTEST_FILLS.empty()
    return RISK_BACKTEST_FILLS.conform(pl.DataFrame(rows, infer_schema_length=None), "risk_backtest_fills")


def positions_frame(engine: Engine, strategy: str) -> pl.DataFrame:
    rows = []
    for (venue, symbol), amount in sorted(engine.positions.items()):
        if amount == 0:
            continue
        book = engine.books.get(venue, symbol)
        mark = book.mid if book.valid else 0.0
        rows.append({"strategy": strategy, "venue": venue, "symbol": symbol, "position": float(amount),
                     "mark": mark, "notional_usd": float(amount) * mark * _usd(engine, venue, symbol)})
    return RISK_BACKTEST_POSITIONS.conform(pl.DataFrame(rows, schema=RISK_BACKTEST_POSITIONS.polars_schema),
                                           "risk_backtest_positions")


def pnl_row(engine: Engine, strategy: str, fills: pl.DataFrame, positions: pl.DataFrame, instruments: int,
            events: int, seconds: float) -> dict:
    """The engine's own P&L (cash plus positions marked to mid, fees and funding in it), split into its parts;
    the transaction tax on the day's sales at the rate the gate charges."""
    net, fees = engine.pnl_usd()
    funding = sum(float(v) * _usd(engine, *k) for k, v in engine.funding_paid.items())
    tax = 0.0
    for ts, notional in fills.filter(pl.col("side") == "sell").select("ts", "notional_usd").iter_rows():
        tax += notional * float(rate_on(engine.tax_rules, "transaction_tax", ts.date()))
    c = engine.counters
    return {"strategy": strategy, "net_usd": net - tax, "gross_usd": net + fees - funding, "fees_usd": fees,
            "funding_usd": funding, "tax_usd": tax, "end_exposure_usd": float(positions["notional_usd"].abs().sum()),
            "decisions": c["decisions"], "passed": c["passed"], "orders": c["orders"], "fills": c["fills"],
            "instruments": instruments, "events": events, "seconds": seconds}


def pnl_frame(runs: list[BacktestRun]) -> pl.DataFrame:
    """One row per strategy and one for the book (sums; its seconds are the total)."""
    df = pl.DataFrame([r.pnl for r in runs], schema=RISK_BACKTEST_PNL.polars_schema)
    book = df.select(pl.lit("book").alias("strategy"), pl.exclude("strategy").sum())
    return RISK_BACKTEST_PNL.conform(pl.concat([df, book]), "risk_backtest_pnl")
