"""The anomaly detector's auto-pause against a real runtime process: mm_lite trading in paper mode at 60x with
resting maker orders; the detector's own code (scores on an injected latency spike, then `auto_pause`, exactly
as the anomaly_scores asset calls it) writes the pause control file; within a second the runtime journals the
pause and has no open order, and it sends no order after it."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from runtime_support import RuntimeData, http_get, stop, wait_for
from sofia_pipelines.defs.anomaly.compute import auto_pause, latency_series, load_config, score
from sofia_runtime import paths
from sofia_runtime.schemas import LATENCY

pytestmark = pytest.mark.slow


def complete_records(runtime_data: RuntimeData, runtime_id: str) -> list[dict]:
    """The journal as it is on disk while the process writes it: complete lines only."""
    return runtime_data.records(runtime_id, in_progress=True)


def spiked_scores() -> pl.DataFrame:
    """The detector's scores on a day of binance probes whose last windows run at 10x the normal latency."""
    cfg = load_config()
    start, n = datetime(2026, 11, 19), 86_400 // 15
    ts = [start + timedelta(seconds=15 * i) for i in range(n)]
    lat = 40.0 * np.random.default_rng(1).lognormal(0, 0.2, n)
    spike_from = np.datetime64(start + timedelta(days=1) - timedelta(minutes=cfg.window_minutes * cfg.persist_windows))
    lat = np.where(np.array(ts, dtype="datetime64[ms]") >= spike_from, lat * 10, lat)
    probes = LATENCY.conform(pl.DataFrame({"venue": "binance", "endpoint": "private_rest", "ts": ts,
                                           "latency_ms": lat, "ok": True, "error": None}), "test probes")
    return score(latency_series(probes, cfg), cfg)


def test_auto_pause_stops_new_orders_and_cancels_quotes(runtime_data: RuntimeData):
    scores = spiked_scores()  # computed before the clock starts
    rid = "mm-autopause"
    proc = runtime_data.start("--strategy", "mm_lite", "--speed", "60", "--runtime-id", rid)
    try:
        port = runtime_data.port(rid, proc)
        status = lambda: http_get(port, "/api/dev/status")[1]  # noqa: E731
        before = wait_for(lambda: (s := status())["open_orders"] and s, what="resting maker orders")
        resting = {o["client_order_id"] for o in before["open_orders"]}

        t0 = time.monotonic()
        outcome = auto_pause(scores, paths.pause_file(), load_config().auto_pause)
        assert outcome.action == "paused", outcome
        pause_rec = wait_for(lambda: next((r for r in complete_records(runtime_data, rid) if r["kind"] == "pause"),
                                          None), interval=0.01, what="a pause record")
        wait_for(lambda: (s := status())["paused"] and not s["open_orders"],
                 interval=0.01, what="no open orders after the auto-pause")
        elapsed = time.monotonic() - t0
        # two more market minutes while paused (mm_lite requotes every 30 s): still nothing is sent
        wait_for(lambda: (m := status()["market_time"]) and datetime.fromisoformat(m).timestamp() * 1000
                 > pause_rec["payload"]["market_ts"] + 120_000, what="market time to move on while paused")
        assert status()["open_orders"] == []
    finally:
        out, err = stop(proc)
    assert proc.returncode == 0, err
    print(f"auto-pause -> paused with no open orders: {elapsed:.3f} s")

    payload = pause_rec["payload"]
    assert payload["paused_by"] == "anomaly_detector"
    assert payload["reason"].startswith("anomaly: latency_ms binance: ") and "for 3 windows" in payload["reason"]
    records = runtime_data.records(rid)
    p = next(i for i, r in enumerate(records) if r["kind"] == "pause")
    after = records[p + 1:]
    assert not [r for r in after if r["kind"] in ("order", "decision")]
    cancelled = {r["payload"]["client_order_id"] for r in after if r["kind"] == "cancel"}
    closed_before = {r["payload"]["client_order_id"] for r in records[:p] if r["kind"] == "order_closed"}
    assert resting <= cancelled | closed_before and cancelled
    assert all(r["payload"]["reason"] == "paused" for r in after if r["kind"] == "cancel")
    assert runtime_data.cli("verify-journal").returncode == 0
