"""The anomaly detector: it fires on an injected latency spike (10x for one venue) only once the spike has lasted
persist_windows windows, never on normal data (a hand-made series and the simulator's week); the journal's
metrics on a hand-made journal; the auto-pause (writes the reason only after N windows, never over someone else's
pause, once per episode); the sensor; and the asset with its warning check on a real warehouse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta

import dagster as dg
import numpy as np
import polars as pl
import pytest

from sofia_pipelines.defs.anomaly.compute import (AutoPauseConfig, active_anomalies, auto_pause, journal_series,
                                                  latency_series, load_config, score)
from sofia_pipelines.defs.audit.compute import fills_frame
from sofia_runtime.control import clear_pause, read_pause, write_pause
from sofia_runtime.schemas import AUDIT_EVENTS, LATENCY

CFG = load_config()
START = datetime(2026, 10, 29)
WINDOW = timedelta(minutes=CFG.window_minutes)
MEDIAN_MS = {"binance": 35.0, "okx": 60.0, "bybit": 50.0}


def latency_probes(days: int = 2, spike_venue: str | None = None, spike_windows: int = 0, factor: float = 10.0,
                   seed: int = 3) -> pl.DataFrame:
    """Probes every 15 s per venue and two endpoints: the venue's median with an intraday cycle (+-30 %) and
    lognormal noise; the last `spike_windows` windows of `spike_venue` at `factor` times that."""
    rng = np.random.default_rng(seed)
    n = days * 86_400 // 15
    ts = [START + timedelta(seconds=15 * i) for i in range(n)]
    hours = np.arange(n) * 15 / 3600
    end = START + timedelta(days=days)
    frames = []
    for venue, median in MEDIAN_MS.items():
        for endpoint in ("public_rest", "private_rest"):
            lat = median * (1 + 0.3 * np.sin(2 * np.pi * hours / 24)) * rng.lognormal(0, 0.3, n)
            if venue == spike_venue:
                lat = np.where(np.array(ts) >= np.datetime64(end - spike_windows * WINDOW), lat * factor, lat)
            frames.append(pl.DataFrame({"venue": venue, "endpoint": endpoint, "ts": ts, "latency_ms": lat,
                                        "ok": True, "error": None}))
    return LATENCY.conform(pl.concat(frames), "test latency")


def latency_scores(**kwargs) -> pl.DataFrame:
    return score(latency_series(latency_probes(**kwargs), CFG), CFG)


# --- the detector -----------------------------------------------------------------------------------------------
def test_latency_spike_fires_after_persist_windows_and_only_on_that_venue():
    scores = latency_scores(spike_venue="okx", spike_windows=4)
    (row,) = active_anomalies(scores).iter_rows(named=True)
    assert (row["metric"], row["entity"], row["streak"]) == ("latency_ms", "okx", 4)
    assert row["since"] == START + timedelta(days=2) - 4 * WINDOW
    assert row["value"] / row["median"] == pytest.approx(10, rel=0.25) and row["z"] > 20
    others = scores.filter(pl.col("entity") != "okx")
    assert others["exceeds"].sum() == 0 and others["z"].max() < CFG.threshold
    okx = scores.filter(pl.col("entity") == "okx").sort("window_start")
    assert okx["exceeds"].sum() == 4 and okx["anomalous"].to_list()[-4:] == [False, False, True, True]


def test_a_spike_shorter_than_persist_windows_exceeds_but_is_no_anomaly():
    scores = latency_scores(spike_venue="okx", spike_windows=CFG.persist_windows - 1)
    assert scores.filter(pl.col("exceeds"))["entity"].unique().to_list() == ["okx"]
    assert active_anomalies(scores).is_empty() and not scores["anomalous"].any()


def test_normal_days_raise_nothing():
    hand_made = latency_scores()
    assert not hand_made["exceeds"].any() and hand_made["z"].max() < CFG.threshold / 2

    from sofia_runtime.simulator import MarketSimulator

    sim = MarketSimulator()
    days = sim.available_days()
    week = sim.load("latency", datetime.combine(days[0], datetime.min.time()),
                    datetime.combine(days[-1], datetime.min.time()) + timedelta(days=1))
    scores = score(latency_series(week, CFG), CFG)
    # the week holds an outage (okx, day 3) and a few short latency bursts a day: normal, not anomalies
    assert scores.height > 2500 and scores["z"].is_not_null().sum() > 2500
    assert not scores["exceeds"].any(), scores.sort("z", descending=True, nulls_last=True).head(3)


# --- the journal's metrics --------------------------------------------------------------------------------------
def _events(records: list[tuple[str, datetime, dict]]) -> pl.DataFrame:
    rows = [{"runtime_id": "mm-x", "seq": i + 1, "ts": datetime(2026, 11, 1, 12), "kind": kind,
             "payload": json.dumps({**payload, "market_ts": int((when - datetime(1970, 1, 1)).total_seconds() * 1000)}),
             "prev_hash": "", "hash": "", "file": "test", "line": i + 1}
            for i, (kind, when, payload) in enumerate(records)]
    return AUDIT_EVENTS.conform(pl.DataFrame(rows), "test events")


def _decision(result: str, mid: str) -> dict:
    return {"strategy": "mm", "result": result, "passed": result == "passed",
            "legs": [{"venue": "binance", "symbol": "BTC/USDT", "side": "buy", "price": "99.9", "amount": "0.1",
                      "mid": mid}]}


def _order(cid: str, seq: int) -> dict:
    return {"client_order_id": cid, "decision_seq": seq, "leg": 0, "strategy": "mm", "venue": "binance",
            "symbol": "BTC/USDT", "side": "buy", "type": "limit", "price": "99.9", "amount": "0.1"}


def test_journal_metrics_on_a_hand_made_journal():
    t0, t1 = START + timedelta(minutes=1), START + timedelta(minutes=16)  # two windows
    events = _events([
        ("start", t0, {"strategy": "mm", "mode": "paper"}),
        ("decision", t0, _decision("passed", "100")),                                         # seq 2
        ("order", t0, _order("c1", 2)),
        ("order_ack", t0, {"client_order_id": "c1", "order_id": "o1", "decision_to_ack_us": 2000}),
        ("decision", t0, _decision("passed", "100")),                                         # seq 5
        ("order", t0, _order("c2", 5)),
        ("order_rejected", t0, {"client_order_id": "c2", "status": "rejected", "error": "InvalidOrder"}),
        ("decision", t0, _decision("passed", "100")),                                         # seq 8
        ("order", t0, _order("c3", 8)),
        ("order_ack", t0, {"client_order_id": "c3", "order_id": "o3", "decision_to_ack_us": 4000}),
        ("fill", t0, {"trade_id": "T1", "order_id": "o1", "client_order_id": "c1", "venue": "binance",
                      "symbol": "BTC/USDT", "side": "buy", "price": "99.9", "amount": "0.1", "fee": "0.01",
                      "fee_currency": "USDT", "liquidity": "maker", "strategy": "mm"}),
        ("order_closed", t0, {"client_order_id": "c1", "order_id": "o1", "status": "closed", "filled": "0.1"}),
        ("order_closed", t0, {"client_order_id": "c3", "order_id": "o3", "status": "canceled", "filled": "0"}),
        ("decision", t0, _decision("rejected", "101")),
        ("decision", t1, _decision("blocked", "102")),
    ])
    series, _ = journal_series(events, fills_frame(events), CFG)
    got = {(r["metric"], r["entity"], r["window_start"]): r["value"] for r in series.iter_rows(named=True)}
    w0, w1 = START, START + WINDOW
    assert got == pytest.approx({
        ("decision_reject_rate", "mm", w0): 1 / 4, ("decision_reject_rate", "mm", w1): 1.0,
        ("order_reject_rate", "mm/binance", w0): 1 / 3,
        ("fill_rate", "mm/binance", w0): 1 / 3,            # c1 filled; c2 rejected and c3 cancelled finished too
        ("ack_latency_ms", "binance", w0): 3.0,             # median of 2 ms and 4 ms
        ("slippage_bps", "mm/binance", w0): -10.0,          # bought 99.9 against mid 100: 10 bps better
        # equity: cash -99.9*0.1 - 0.01 = -10, + 0.1 BTC at the last mid 101 (w0) then 102 (w1); x4 per hour
        ("pnl_per_hour_usd", "mm", w0): 0.1 * 4, ("pnl_per_hour_usd", "mm", w1): 0.1 * 4,
    })


# --- auto-pause -------------------------------------------------------------------------------------------------
def test_auto_pause_writes_the_reason_only_after_n_windows(tmp_path):
    pause = tmp_path / "control" / "pause.json"
    short = latency_scores(spike_venue="okx", spike_windows=CFG.persist_windows - 1)
    assert auto_pause(short, pause).action == "none" and not pause.exists()

    scores = latency_scores(spike_venue="okx", spike_windows=CFG.persist_windows)
    outcome = auto_pause(scores, pause)
    state = read_pause(pause)
    assert outcome.action == "paused" and state.paused and state.paused_by == "anomaly_detector"
    assert state.reason.startswith("anomaly: latency_ms okx: ") and f"for {CFG.persist_windows} windows" in state.reason

    # the operator resumes; the same episode does not pause again, a new one does
    handled = {(r["metric"], r["entity"], r["since"])
               for r in outcome.actions_frame(datetime.now()).iter_rows(named=True)}
    assert clear_pause(pause)
    assert auto_pause(scores, pause, handled=handled).action == "none" and not pause.exists()
    longer = latency_scores(spike_venue="okx", spike_windows=CFG.persist_windows, days=3)
    assert auto_pause(longer, pause, handled=handled).action == "paused" and pause.exists()

    assert auto_pause(scores, tmp_path / "off.json", AutoPauseConfig(enabled=False)).action == "disabled"
    assert auto_pause(scores, tmp_path / "off.json", AutoPauseConfig(metrics=["slippage_bps"])).action == "none"
    assert not (tmp_path / "off.json").exists()


def test_auto_pause_never_overwrites_a_pause(tmp_path):
    scores = latency_scores(spike_venue="okx", spike_windows=4)
    pause = tmp_path / "pause.json"
    write_pause(pause, "ops", "maintenance window")
    before = pause.read_bytes()
    outcome = auto_pause(scores, pause)
    assert (outcome.action, outcome.paused_by) == ("already_paused", "ops") and pause.read_bytes() == before
    assert outcome.actions_frame(datetime.now())["action"].to_list() == ["already_paused"]

    pause.write_text("{not json")  # unreadable counts as paused: left alone
    assert auto_pause(scores, pause).action == "already_paused" and pause.read_text() == "{not json"


# --- the sensor -------------------------------------------------------------------------------------------------
def test_sensor_runs_the_detector_only_while_a_runtime_runs(data_dir):
    from sofia_pipelines.defs.anomaly.assets import anomaly_sensor

    def tick():
        return anomaly_sensor.evaluate_tick(dg.build_sensor_context(sensor_name="anomaly_sensor"))

    nothing = tick()
    assert not nothing.run_requests and "no runtime is running" in nothing.skip_message

    run = data_dir / "run"
    run.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (run / "dead-paper.json").write_text(json.dumps({"runtime_id": "dead-paper", "pid": gone.pid, "mode": "paper"}))
    assert not tick().run_requests  # a status file left by a killed runtime is not a running runtime

    (run / "mm_lite-paper.json").write_text(json.dumps({"runtime_id": "mm_lite-paper", "pid": os.getpid(),
                                                        "port": 1, "mode": "paper"}))
    (request,) = tick().run_requests
    assert request.tags["sofia/runtimes"] == "mm_lite-paper" and anomaly_sensor.job_name == "detect_anomalies"
    assert anomaly_sensor.minimum_interval_seconds == CFG.sensor_interval_s == 120


# --- the asset --------------------------------------------------------------------------------------------------
def test_asset_pauses_once_and_warns_while_the_anomaly_lasts(resources, data_dir):
    from sofia_pipelines.defs.anomaly.assets import anomaly_scores, no_active_anomalies
    from sofia_pipelines.warehouse import read_window, replace_rows
    from sofia_runtime.schemas import ANOMALY_ACTIONS, ANOMALY_SCORES

    with resources["warehouse"].get_connection() as conn:
        replace_rows(conn, "raw", LATENCY, latency_probes(spike_venue="okx", spike_windows=4))

    def run():
        result = dg.materialize([anomaly_scores, no_active_anomalies], resources=resources)
        (check,) = result.get_asset_check_evaluations()
        return result.get_asset_materialization_events()[0].materialization.metadata, check

    md, check = run()
    assert md["paused"].value is True and "paused trading: anomaly: latency_ms okx" in md["auto-pause"].value
    assert "| latency_ms | okx |" in md["current anomalies"].value
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.description.startswith("latency_ms okx: ")
    assert read_pause(data_dir / "control" / "pause.json").paused_by == "anomaly_detector"

    clear_pause(data_dir / "control" / "pause.json")  # the operator resumes
    md, check = run()
    assert md["paused"].value is False and md["auto-pause"].value == "no new anomaly" and not check.passed
    assert not (data_dir / "control" / "pause.json").exists()
    with resources["warehouse"].get_connection() as conn:
        actions = read_window(conn, "analytics", ANOMALY_ACTIONS)
        scores = read_window(conn, "analytics", ANOMALY_SCORES)
    assert actions.select("metric", "entity", "action").rows() == [("latency_ms", "okx", "paused")]
    fresh = scores.filter(pl.col("source") == "freshness")
    assert fresh["entity"].to_list() == ["latency"] and fresh["value"][0] > 0  # now - the newest probe


def test_a_bad_config_names_the_file_and_the_field(tmp_path):
    path = tmp_path / "anomaly.yaml"
    path.write_text("threshold: -1\nmetrics:\n  latency_ms: {direction: up}\n")
    with pytest.raises(ValueError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and "field 'threshold'" in message and "field 'metrics.latency_ms.direction'" in message
