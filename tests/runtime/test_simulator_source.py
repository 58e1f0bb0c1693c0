"""Paper mode on the embedded simulator, followed in real time: the market the runtime trades is today's, at
the wall clock's pace."""

from __future__ import annotations

import time

import pytest

from runtime_support import RuntimeData

pytestmark = pytest.mark.slow


def test_paper_runtime_follows_the_simulator_in_real_time(runtime_data: RuntimeData):
    started = time.time()
    proc = runtime_data.cli("run", "--strategy", "mm_lite", "--source", "simulator", "--duration", "15s",
                            "--port", "0", "--runtime-id", "sim-live", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "embedded simulator's market for today" in proc.stdout
    records = runtime_data.records("sim-live")
    decisions = [r for r in records if r["kind"] == "decision"]
    assert decisions, "mm_lite decided nothing on the simulated market"
    market = [r["payload"]["market_ts"] / 1000 for r in decisions]
    # today's market from about when the process started, never ahead of the clock (books come every 10 s, so
    # 15 s sees at least one)
    assert all(started - 15 <= m <= time.time() for m in market), (started, market[:3], market[-3:])
    assert market == sorted(market)
