"""What the runtime refuses to trade: a snapshot with nothing tradable (exit 2, the reason on stderr), and per
instrument whatever lacks an input it needs (reported in /api/dev/status and journaled at start)."""

from __future__ import annotations

import polars as pl
import pytest

from runtime_support import PERP, SPOT, RuntimeData, http_get, publish, snapshot_tables, stop, wait_for
from sofia_runtime.snapshot import switch_current, write_snapshot_folder
from sofia_runtime.tradable import instrument_refusals, snapshot_readiness

pytestmark = pytest.mark.slow


def _tables(**changes) -> dict[str, pl.DataFrame]:
    tables = dict(snapshot_tables())
    for name, change in changes.items():
        tables[name] = change(tables[name])
    return tables


def test_instrument_refusals_name_the_missing_input():
    tables = _tables(fill_model=lambda df: df.filter((pl.col("venue") != "okx") | (pl.col("side") == "buy")),
                     replay_books=lambda df: df.filter((pl.col("venue") != "binance") | (pl.col("symbol") != PERP)),
                     fee_table=lambda df: df.filter((pl.col("venue") != "okx") | (pl.col("symbol") != PERP)))
    wanted = {("binance", SPOT), ("binance", PERP), ("okx", SPOT), ("okx", PERP), ("bybit", SPOT)}
    refused = instrument_refusals(tables, wanted, "mm_lite", needs_replay=True)
    assert set(refused) == {("binance", PERP), ("okx", SPOT), ("okx", PERP), ("bybit", SPOT)}
    assert refused[("bybit", SPOT)].startswith("no market for bybit BTC/USDT")
    assert refused[("okx", PERP)].startswith("no selected fee row")
    assert refused[("binance", PERP)].startswith("no books for binance BTC/USDT:USDT")
    assert refused[("okx", SPOT)].startswith("no fill model for okx BTC/USDT (sides ['buy'])")
    # a taker strategy needs no fill model; live needs no replay
    assert set(instrument_refusals(tables, wanted, "router", needs_replay=False)) == {("okx", PERP), ("bybit", SPOT)}
    assert snapshot_readiness(tables).ok


def test_a_runtime_with_nothing_to_trade_refuses_to_start(runtime_data: RuntimeData):
    publish(runtime_data.dir, _tables(replay_books=lambda df: df.clear()))  # a warning for the snapshot, not a refusal
    proc = runtime_data.cli("run", "--strategy", "mm_lite", "--speed", "0", "--port", "0")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "nothing to trade for mm_lite" in proc.stderr and "no books for binance BTC/USDT" in proc.stderr
    records = runtime_data.records("mm_lite-paper")
    assert [r["kind"] for r in records] == ["start", "instrument_refused", "stop"]
    assert set(records[1]["payload"]["not_tradable"]) == {"binance BTC/USDT", "binance BTC/USDT:USDT",
                                                         "okx BTC/USDT", "okx BTC/USDT:USDT"}
    assert records[2]["payload"]["reason"].startswith("refused to start: nothing to trade")


def test_a_snapshot_with_no_tradable_instrument_is_refused_at_start(runtime_data: RuntimeData):
    serving = runtime_data.dir / "serving"
    switch_current(serving, write_snapshot_folder(_tables(risk_limits=lambda df: df.clear()), "2026-11-20", serving))
    proc = runtime_data.cli("run", "--strategy", "mm_lite", "--speed", "0", "--port", "0")
    assert proc.returncode == 2
    assert "has nothing to trade: risk_limits is empty" in proc.stderr
    assert runtime_data.records("mm_lite-paper") == []  # refused before its journal was opened


def test_refused_instruments_are_in_the_status_and_journal_and_the_rest_trades(runtime_data: RuntimeData):
    publish(runtime_data.dir, _tables(fill_model=lambda df: df.filter(pl.col("venue") != "okx")))
    proc = runtime_data.start("--strategy", "mm_lite", "--speed", "600", "--runtime-id", "mm")
    try:
        port = runtime_data.port("mm", proc)
        status = wait_for(lambda: (lambda b: b if b["market_time"] else None)(http_get(port, "/api/dev/status")[1]),
                          20, what="the runtime trading")
        assert set(status["not_tradable"]) == {"okx BTC/USDT", "okx BTC/USDT:USDT"}
        assert "no fill model" in status["not_tradable"]["okx BTC/USDT"]
        wait_for(lambda: http_get(port, "/api/dev/status")[1]["counters"]["orders"] > 0, 30, what="an order")
    finally:
        stop(proc)
    records = runtime_data.records("mm")
    refused = [r for r in records if r["kind"] == "instrument_refused"]
    assert len(refused) == 1 and set(refused[0]["payload"]["not_tradable"]) == set(status["not_tradable"])
    orders = [r["payload"] for r in records if r["kind"] == "order"]
    assert orders and {o["venue"] for o in orders} == {"binance"}
