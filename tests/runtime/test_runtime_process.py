"""`sofia-runtime run` as a real process on the hand-made snapshot: what it imports and how fast it is healthy,
its status surfaces, pause within a second, a SIGKILL and restart that neither duplicates nor loses anything, and
live trading end to end against the fake Binance."""

from __future__ import annotations

import collections
import json
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from decimal import Decimal

import pytest
import yaml

from runtime_support import HANG_S, JOURNAL_KEY, RuntimeData, http_get, publish, stop, wait_for
from fake_binance import running_fake_binance
from sofia_runtime.checkpoint import write_checkpoint

pytestmark = pytest.mark.slow

# The tests that keep a CPU busy (replays at full speed) share one worker under `-n 2 --dist loadgroup`, so the
# other worker keeps a core.
CPU_HEAVY = pytest.mark.xdist_group("runtime-cpu-heavy")
HEAVY = ("dagster", "dbt", "great_expectations", "sofia_pipelines", "pandas", "duckdb", "ccxt")


def complete_records(runtime_data: RuntimeData, runtime_id: str) -> list[dict]:
    """The journal as it is on disk while (or after) a process writes it: complete lines only."""
    return runtime_data.records(runtime_id, in_progress=True)


def status(port: int) -> dict:
    code, body = http_get(port, "/api/dev/status")
    assert code == 200
    return body


def market_ms(st: dict) -> int:
    return int(datetime.fromisoformat(st["market_time"]).timestamp() * 1000) if st["market_time"] else 0


# --- start-up ------------------------------------------------------------------------------------------------------


@CPU_HEAVY
def test_a_running_runtime_imports_nothing_of_the_pipelines(runtime_data: RuntimeData):
    """A real `run` (snapshot loaded, venues, engine and strategy built, replay traded) under -X importtime."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "sofia_runtime.cli", "run", "--strategy",
                           "mm_lite", "--speed", "0", "--port", "0", "--duration", "1s"],
                          capture_output=True, text=True, env=runtime_data.env(), cwd=runtime_data.dir, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    modules = set()
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+\d+ \| (\s*)(\S+)", line)
        if m:
            modules.add(m.group(2).split(".")[0])
    assert {"sofia_runtime", "polars", "aiohttp"} <= modules  # the parse saw the imports
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))
    assert "stopped" in proc.stdout and any(r["kind"] == "decision" for r in runtime_data.records("mm_lite-paper"))


def _time_to_healthy(runtime_data: RuntimeData, runtime_id: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process) from Popen to the first 200 of /api/health."""
    import psutil

    t0 = time.monotonic()
    proc = runtime_data.start("--strategy", "mm_lite", "--speed", "1", "--runtime-id", runtime_id)
    try:
        port = runtime_data.port(runtime_id, proc)
        while True:
            try:
                code, body = http_get(port, "/api/health")
            except OSError:
                code = None
            if code == 200:
                wall = time.monotonic() - t0
                cpu = psutil.Process(proc.pid).cpu_times()
                return wall, cpu.user + cpu.system
            assert proc.poll() is None and time.monotonic() - t0 < HANG_S, f"never healthy: {code}"
            time.sleep(0.002)
    finally:
        out, err = stop(proc)
        assert proc.returncode == 0, err


def test_healthy_after_process_start(runtime_data: RuntimeData):
    """A started runtime answers 200 on /api/health (the run file gives the port). What the start costs is a
    benchmark row (bench/bench_footprint.py: cold start to healthy); here the figures are printed only."""
    wall, cpu = _time_to_healthy(runtime_data, "startup")
    print(f"start-up to healthy: {wall:.3f} s wall, {cpu:.3f} s CPU")


# --- health, status, metrics ------------------------------------------------------------------------------------


def test_status_metrics_and_the_status_command(runtime_data: RuntimeData):
    rid = "mm-status"
    proc = runtime_data.start("--strategy", "mm_lite", "--speed", "60", "--runtime-id", rid)
    try:
        port = runtime_data.port(rid, proc)
        wait_for(lambda: http_get(port, "/api/health")[0] == 200, what="healthy")
        code, health = http_get(port, "/api/health")
        assert health == {"status": "ok", "reasons": [], "runtime_id": rid, "snapshot_id": runtime_data.snapshot_id}
        st = wait_for(lambda: (s := status(port))["open_orders"] and s["counters"]["fills"] and s,
                      what="open orders and a fill")
        assert {"mode", "strategy", "snapshot_id", "positions", "open_orders", "pnl", "paused", "counters",
                "uptime_s"} <= set(st)
        assert (st["mode"], st["strategy"], st["snapshot_id"], st["paused"]) == ("paper", "mm_lite",
                                                                                runtime_data.snapshot_id, False)
        assert st["market_time"].startswith("2026-11-20T00:") and st["uptime_s"] > 0
        assert st["counters"]["decisions"] >= st["counters"]["passed"] >= st["counters"]["orders"] > 0
        assert {o["venue"] for o in st["open_orders"]} <= {"binance", "okx"}
        assert all(o["type"] == "limit" for o in st["open_orders"])
        assert st["positions"] and set(st["pnl"]) == {"net_usd", "fees_usd", "gross_usd", "today_usd"}
        assert st["pnl"]["fees_usd"] > 0 and st["pnl"]["gross_usd"] == pytest.approx(
            st["pnl"]["net_usd"] + st["pnl"]["fees_usd"], abs=1e-5)

        code, metrics = http_get(port, "/metrics")
        assert code == 200
        passed = re.search(r'^sofia_decisions_total\{result="passed",strategy="mm_lite"\} (\S+)$', metrics, re.M)
        assert passed and float(passed.group(1)) > 0
        for name in ("sofia_orders_total", "sofia_fills_total", "sofia_decision_to_order_seconds_bucket",
                     "sofia_journal_fsync_seconds_count", "sofia_pnl_usd", "sofia_paused 0.0"):
            assert name in metrics, name

        # rich lays tables out for the terminal's width (80 columns when piped): give it a wide one
        shown = runtime_data.cli("status", env=runtime_data.env(COLUMNS="200"))
        assert shown.returncode == 0, shown.stderr
        text = " ".join(shown.stdout.split())
        assert f"{rid} mm_lite paper - trading - snapshot {runtime_data.snapshot_id} - market data replay" in text
        assert "P&L net" in text and "decisions" in text and "fills" in text
        assert "positions" in text and "open orders" in text and "client_order_id" in text
        # the runtime requotes while the command runs: the orders it lists are orders the runtime journaled
        journaled = {r["payload"]["client_order_id"] for r in runtime_data.records(rid) if r["kind"] == "order"}
        assert any(cid in text for cid in journaled)
        as_json = json.loads(runtime_data.cli("status", "--runtime-id", rid, "--json").stdout)
        assert as_json["runtime_id"] == rid and as_json["strategy"] == "mm_lite" and as_json["market_data"] == "replay"
    finally:
        out, err = stop(proc)
    assert proc.returncode == 0, err
    assert not runtime_data.run_file(rid).exists()
    records = runtime_data.records(rid)
    assert records[-1]["kind"] == "stop" and records[-1]["payload"]["reason"] == "signal"
    # a clean stop leaves no resting order at the venue
    venue_orders = {}
    for venue in ("binance", "okx"):
        for line in runtime_data.venue_lines(rid, venue):
            if line["t"] == "order":
                venue_orders[line["order"]["id"]] = line["order"]["status"]
    assert venue_orders and "open" not in venue_orders.values()
    assert runtime_data.cli("status").returncode == 1  # nothing running any more


def test_health_is_503_once_the_snapshot_is_older_than_allowed(runtime_data: RuntimeData):
    max_age_s = 15.0  # the runtime must start on the snapshot before it is stale: room for a loaded machine
    (runtime_data.dir / "runtime.yaml").write_text(yaml.safe_dump({"snapshot_max_age_h": max_age_s / 3600}))
    sid = publish(runtime_data.dir)  # fresh now
    published = time.monotonic()
    rid = "mm-stale"
    proc = runtime_data.start("--strategy", "mm_lite", "--speed", "1", "--runtime-id", rid)
    try:
        port = runtime_data.port(rid, proc)
        code, body = wait_for(lambda: (r := http_get(port, "/api/health"))[0] == 503 and "starting" not in str(r)
                              and r, what="a 503")
        assert time.monotonic() - published > max_age_s - 0.5
        assert body["status"] == "unhealthy" and body["snapshot_id"] == sid
        assert any(sid in reason and ("old (limit 0:00:15" in reason or "is stale" in reason)
                   for reason in body["reasons"]), body["reasons"]
    finally:
        stop(proc)
    # and a runtime will not start on it
    refused = runtime_data.cli("run", "--strategy", "mm_lite", "--port", "0", "--runtime-id", "mm-stale-2")
    assert refused.returncode == 2 and f"no snapshot to trade on: snapshot {sid} is stale" in refused.stderr


# --- pause -----------------------------------------------------------------------------------------------------------


def test_pause_cancels_resting_orders_and_resume(runtime_data: RuntimeData):
    """The runtime finds the control file by itself (it polls it), journals the pause, cancels its resting quotes and
    sends nothing until resumed. How soon it reacts is the poll interval (0.25 s); the time is printed, not asserted:
    on a loaded machine it says more about the neighbours than about the runtime."""
    rid = "mm-pause"
    proc = runtime_data.start("--strategy", "mm_lite", "--speed", "60", "--runtime-id", rid)
    try:
        port = runtime_data.port(rid, proc)
        before = wait_for(lambda: (s := status(port))["open_orders"] and s, what="resting orders")
        resting = {o["client_order_id"] for o in before["open_orders"]}

        paused = runtime_data.cli("pause", "--reason", "test", "--by", "ops")
        assert paused.returncode == 0
        t0 = time.monotonic()
        pause_rec = wait_for(lambda: next((r for r in complete_records(runtime_data, rid) if r["kind"] == "pause"),
                                          None), interval=0.01, what="a pause record")
        st = wait_for(lambda: (s := status(port))["paused"] and not s["open_orders"] and s,
                      interval=0.01, what="no open orders after the pause")
        print(f"pause file -> paused with no open orders: {time.monotonic() - t0:.3f} s")
        assert st["pause_reason"] == "test (by ops)"
        assert pause_rec["payload"]["paused_by"] == "ops" and pause_rec["payload"]["reason"] == "test"
        # while paused, the replay goes on: wait for two minutes of market time (mm_lite requotes every 30 s)
        wait_for(lambda: market_ms(status(port)) > pause_rec["payload"]["market_ts"] + 120_000,
                 what="market time to move on while paused")
        assert status(port)["open_orders"] == []

        resumed = runtime_data.cli("resume")
        assert resumed.returncode == 0 and resumed.stdout.strip() == "resumed"
        wait_for(lambda: any(r["kind"] == "resume" for r in complete_records(runtime_data, rid)), interval=0.01,
                 what="a resume record")
        wait_for(lambda: status(port)["open_orders"], what="quoting again after resume")
    finally:
        out, err = stop(proc)
    assert proc.returncode == 0, err
    records = runtime_data.records(rid)
    kinds = [r["kind"] for r in records]
    p, q = kinds.index("pause"), kinds.index("resume")
    between = records[p + 1:q]
    assert not [r for r in between if r["kind"] in ("order", "decision")]
    cancelled = {r["payload"]["client_order_id"] for r in between if r["kind"] == "cancel"}
    assert resting <= cancelled | {r["payload"]["client_order_id"] for r in records[:p] if r["kind"] == "order_closed"}
    assert all(r["payload"]["reason"] == "paused" for r in between if r["kind"] == "cancel")
    assert any(r["kind"] == "order" for r in records[q:])  # trading resumed
    assert runtime_data.cli("verify-journal").returncode == 0


# --- crash and restart ----------------------------------------------------------------------------------------------


def _venue_record(runtime_data: RuntimeData, rid: str) -> tuple[dict[str, set[str]], dict[str, str], list[str]]:
    """(client order id -> venue order ids, venue order id -> last status, trade ids) from the paper venues'
    own records."""
    ids: dict[str, set[str]] = collections.defaultdict(set)
    last: dict[str, str] = {}
    trades: list[str] = []
    for venue in ("binance", "okx"):
        for line in runtime_data.venue_lines(rid, venue):
            if line["t"] == "order":
                ids[line["order"]["clientOrderId"]].add(line["order"]["id"])
                last[line["order"]["id"]] = line["order"]["status"]
            elif line["t"] == "trade":
                trades.append(line["trade"]["id"])
    return ids, last, trades


def _cut_journal(runtime_data: RuntimeData, rid: str, last_seq: int) -> None:
    """Drop every record after `last_seq`: what a crash loses of records written but not yet flushed. Such
    records were never anchored: the checkpoint, written only for durable records, is set back to match."""
    last = None
    for path in sorted((runtime_data.dir / "audit" / rid).glob("*.jsonl")):
        lines = path.read_bytes().split(b"\n")[:-1]
        kept = [x for x in lines if json.loads(x)["seq"] <= last_seq]
        if kept:
            path.write_bytes(b"".join(x + b"\n" for x in kept))
            last = json.loads(kept[-1])
        else:
            path.unlink()
    write_checkpoint(runtime_data.dir / "audit" / rid, rid, last["seq"], last["hash"], JOURNAL_KEY.encode())


@CPU_HEAVY
@pytest.mark.parametrize("lose_tail", [False, True], ids=["as-killed", "tail-after-last-order-lost"])
def test_sigkill_and_restart_duplicate_nothing_and_lose_nothing(runtime_data: RuntimeData, lose_tail):
    """mm_lite at full speed, SIGKILLed once it has 30 fills, restarted with the same runtime id. In the second
    case the journal additionally loses everything after its last `order` record (written and fsynced before the
    order went out, so the crash can take only what came after it: the ack, fills, cancels): the restart must
    recover those from the venue by client order id."""
    rid = "mm-crash"
    proc = runtime_data.start("--strategy", "mm_lite", "--speed", "0", "--runtime-id", rid)
    try:
        runtime_data.port(rid, proc)
        wait_for(lambda: sum(r["kind"] == "fill" for r in complete_records(runtime_data, rid)) >= 30,
                 interval=0.005, what="30 fills")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    before = complete_records(runtime_data, rid)
    assert before[-1]["kind"] != "stop"
    if lose_tail:
        cut = max(i for i, r in enumerate(before) if r["kind"] == "order")
        lost_order = before[cut]["payload"]["client_order_id"]
        before = before[:cut + 1]
        _cut_journal(runtime_data, rid, before[-1]["seq"])
    last_ms = max(r["payload"]["market_ts"] for r in before if isinstance(r["payload"].get("market_ts"), int))
    _, _, trades_at_kill = _venue_record(runtime_data, rid)
    unjournaled = set(trades_at_kill) - {r["payload"]["trade_id"] for r in before if r["kind"] == "fill"}

    again = runtime_data.cli("run", "--strategy", "mm_lite", "--speed", "0", "--port", "0", "--runtime-id", rid)
    assert again.returncode == 0, again.stderr
    after = runtime_data.records(rid)
    verified = runtime_data.cli("verify-journal")
    assert verified.returncode == 0 and "intact: 1 file" in verified.stdout, verified.stdout

    # what was on disk at the kill is still there, unchanged, and the restart continues the chain
    assert after[:len(before)] == before
    first = after[len(before)]
    assert first["seq"] == before[-1]["seq"] + 1 and first["prev_hash"] == before[-1]["hash"]
    restarted = after[len(before):]
    assert restarted[-1]["kind"] == "stop" and restarted[-1]["payload"]["reason"] == "replay finished"

    # the replay resumed after the last market time journaled before the kill
    decisions = [r for r in restarted if r["kind"] == "decision"]
    assert decisions and min(r["payload"]["market_ts"] for r in decisions) > last_ms
    assert all(r["payload"]["market_ts"] > last_ms for r in restarted if r["kind"] == "order")

    # no order twice at the venue: each client order id has one venue order, and none is left open
    venue_ids, venue_status, venue_trades = _venue_record(runtime_data, rid)
    orders = [r["payload"]["client_order_id"] for r in after if r["kind"] == "order"]
    assert len(orders) == len(set(orders))
    assert all(len(ids) == 1 for ids in venue_ids.values())
    assert set(venue_ids) <= set(orders)  # the venue has nothing the journal does not
    not_sent = {r["payload"]["client_order_id"] for r in after if r["kind"] == "order_rejected"
                and r["payload"]["status"] == "not_sent"}
    assert set(orders) - set(venue_ids) <= not_sent  # journaled but never reached the venue: said so
    assert "open" not in venue_status.values()

    # every venue trade is journaled as a fill exactly once, and no fill is invented; what the journal lacked at
    # the restart is journaled as recovered
    fills = collections.Counter(r["payload"]["trade_id"] for r in after if r["kind"] == "fill")
    assert len(venue_trades) == len(set(venue_trades)) and fills == collections.Counter(venue_trades)
    recovered = {r["payload"]["trade_id"] for r in restarted if r["kind"] == "fill" and r["payload"]["recovered"]}
    assert recovered == unjournaled
    assert any(r["kind"] == "fill" for r in before) and any(r["kind"] == "fill" for r in restarted)
    # funding the venue charged is journaled once each too
    venue_funding = [line["funding"]["id"] for v in ("binance", "okx") for line in runtime_data.venue_lines(rid, v)
                     if line["t"] == "funding"]
    assert collections.Counter(r["payload"]["funding_id"] for r in after if r["kind"] == "funding") == \
        collections.Counter(venue_funding)
    if lose_tail:  # the order whose ack was lost: found at the venue by its client id, or said not sent
        settled = [r for r in restarted if r["payload"].get("client_order_id") == lost_order
                   and r["kind"] in ("order_ack", "order_rejected")]
        assert len(settled) == 1
        assert settled[0]["payload"].get("recovered") or settled[0]["payload"].get("status") == "not_sent"
        assert (settled[0]["kind"] == "order_ack") == (lost_order in venue_ids)


# --- live, end to end -------------------------------------------------------------------------------------------------

KEY, SECRET = "KEY-e2e-8c2d41f0aa", "SECRET-e2e-73be9901c5d2"


@pytest.mark.parametrize("child_usd, children, stream_up", [(5000.0, [0.002], True),
                                                            (50.0, [0.00083, 0.00083, 0.00034], True),
                                                            (5000.0, [0.002], False)])
def test_live_router_end_to_end_against_the_fake_binance(runtime_data: RuntimeData, child_usd, children, stream_up):
    """The parent in one child (120 USD), and in three children of at most 50 USD each: the next child goes out
    only once the previous one is filled and closed. Books come from the websocket stream, or, while the venue
    refuses it, from polling."""
    with running_fake_binance(KEY, SECRET, stream=True) as fake:
        fake.stream_refused = not stream_up
        (runtime_data.dir / "runtime.yaml").write_text(yaml.safe_dump(
            {"allow_live": True, "venue_urls": {"binance": fake.base_url}, "venue_ws_urls": {"binance": fake.stream_url},
             "router": {"child_usd": child_usd}}))
        env = runtime_data.env(SOFIA_BINANCE_API_KEY=KEY, SOFIA_BINANCE_SECRET=SECRET)
        t0 = time.monotonic()
        proc = runtime_data.cli("run", "--strategy", "router", "--mode", "live", "--venue", "binance",
                                "--order", "buy 0.002 BTC/USDT", "--duration", "300s", "--port", "0", env=env)
        elapsed = time.monotonic() - t0
        assert proc.returncode == 0, proc.stderr[-3000:]
        records = runtime_data.records("router-live")
        orders = [r["payload"] for r in records if r["kind"] == "order"]
        fills = [r["payload"] for r in records if r["kind"] == "fill"]
        # the venue got signed orders (it checks every signature) carrying the journal's client order ids, once each
        assert orders and all(o["venue"] == "binance" and o["type"] == "market" for o in orders)
        for o in orders:
            (at_venue,) = fake.orders_with_client_id(o["client_order_id"])
            assert (at_venue["side"], at_venue["type"], at_venue["origQty"]) == ("BUY", "MARKET", Decimal(o["amount"]))
            assert at_venue["status"] == "FILLED"
        assert fake.count("POST", "/api/v3/order") == len(orders) == fake.orders_created
        # the parent filled, every venue trade journaled once
        assert sum(float(f["amount"]) for f in fills) == pytest.approx(0.002)
        assert sorted(f["trade_id"] for f in fills) == sorted(str(t["id"]) for t in fake.trades)
        assert {f["client_order_id"] for f in fills} == {o["client_order_id"] for o in orders}
        assert [float(o["amount"]) for o in orders] == children
        if stream_up:  # the books came from the websocket stream, never from polling
            assert fake.stream_subscriptions == ["btcusdt@bookTicker"] and fake.count("GET", "/api/v3/depth") == 0
        else:
            assert fake.stream_subscriptions == [] and fake.count("GET", "/api/v3/depth") > 0
            (error,) = [r["payload"] for r in records if r["kind"] == "error"]
            assert error["kind"] == "market_data" and "binance websocket stream" in error["message"]
    # each child: order, ack, its fill, then closed, before the next child's decision
    kinds = [r["kind"] for r in records if r["kind"] in ("decision", "order", "order_ack", "fill", "order_closed")]
    assert kinds == ["decision", "order", "order_ack", "fill", "order_closed"] * len(children)
    start, stop_rec = records[0], records[-1]
    assert (start["kind"], start["payload"]["mode"]) == ("start", "live")
    assert (stop_rec["kind"], stop_rec["payload"]["reason"]) == ("stop", "strategy done")
    assert runtime_data.cli("verify-journal").returncode == 0
    journal = "".join(p.read_text() for p in (runtime_data.dir / "audit").rglob("*.jsonl"))
    for text in (proc.stdout, proc.stderr, journal):
        assert KEY not in text and SECRET not in text
