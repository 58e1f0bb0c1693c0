"""The chaos drill (feature M): the fault injector in front of a real paper venue, the stale-data filter, the
verdict's own checks, the TCP proxy against the fake Binance, and `sofia-runtime chaos` end to end: every paper
scenario as real runtime processes on the hand-made snapshot, and a live router buying through the proxy while
order responses are dropped after the venue processed them."""

from __future__ import annotations

import asyncio
import collections
import http.client
import json
import random
import socket
import time
import urllib.error
import urllib.request
from datetime import date, datetime
from decimal import Decimal as D

import numpy as np
import polars as pl
import pytest
import yaml

from fake_binance import running_fake_binance
from runtime_support import PERP, SPOT, RuntimeData

from sofia_runtime.chaos import (DRILL_GATE, SCENARIOS, FaultyVenue, Verdict, judge, order_flow, quoted_symbols,
                                 read_fault_log, stale_market_data)
from sofia_runtime.chaos_proxy import ProxyFaults, running_proxy
from sofia_runtime.config import ChaosConfig
from sofia_runtime.exchange import base
from sofia_runtime.exchange.paper import MarketSpec, PaperVenue
from sofia_runtime.fees import FeeSchedule
from sofia_runtime.marketdata import BOOK, TRADE, Books, TradeTick
from sofia_runtime.reconcile import VenueRecord
from sofia_runtime.schemas import SERVING_TABLES

pytestmark = pytest.mark.slow

SPEC = MarketSpec("binance", SPOT, "spot", "BTC", "USDT", D("0.01"), D("0.00001"), D("0.00001"), D("5"))
FEES = FeeSchedule(SERVING_TABLES["fee_table"].conform(pl.DataFrame([
    {"venue": "binance", "symbol": SPOT, "market": "spot", "tier": "VIP0", "min_volume_30d_usd": 0.0,
     "maker": 0.0002, "taker": 0.0005, "funding_interval_hours": None, "valid_from": date(2020, 1, 1),
     "valid_to": None, "source": "test", "selected": True}]), "test"))
T0 = 1_795_132_800_000  # 2026-11-20 00:00 UTC
KEY, SECRET = "KEY-chaos-51c0e2", "SECRET-chaos-9a7d33f1"


def paper_venue(tmp_path) -> PaperVenue:
    books = Books()
    books.get("binance", SPOT).update(T0, 59_999.0, 60_001.0, 1.0, 1.0)
    return PaperVenue("binance", {SPOT: SPEC}, FEES, np.array([20.0]), tmp_path / "binance.jsonl",
                      {"USDT": D("100000"), "BTC": D("2")}, books=lambda s: books.get("binance", s), clock=lambda: T0)


def buy(venue, cid: str):
    return venue.create_order(SPOT, "limit", "buy", D("0.01"), D("59000"), {"clientOrderId": cid, "postOnly": True})


# --- the fault injector ---------------------------------------------------------------------------------------------


def test_a_dropped_connection_after_send_leaves_the_order_at_the_venue_and_the_lookup_finds_it(tmp_path):
    paper = paper_venue(tmp_path)
    faulty = FaultyVenue(paper, ChaosConfig(drop_after_send_rate=1.0), control_dir=None)
    with pytest.raises(base.NetworkError) as err:
        asyncio.run(buy(faulty, "cid-1"))
    assert not isinstance(err.value, (base.RequestTimeout, base.ExchangeNotAvailable, base.RateLimitExceeded))
    order = asyncio.run(paper.find_order("cid-1", SPOT))
    assert order is not None and order["status"] == "open"  # the venue has it; the caller was not told
    assert faulty.injected == {"dropped_after_send": 1}

    # the engine's send path asks by client order id before any re-send: one order at the venue, acknowledged.
    # A seed whose first draw drops (the send) and whose second does not (the look-up): one draw per call.
    seed = next(s for s in range(1000) if (r := random.Random(s)).random() < 0.5 <= r.random())
    faulty = FaultyVenue(paper, ChaosConfig(drop_after_send_rate=0.5), seed=seed, control_dir=None)
    ack = asyncio.run(base.create_order_once(faulty, SPOT, "limit", "buy", D("0.01"), D("59000"),
                                             {"clientOrderId": "cid-2"}, retries=3, backoff_s=0.0))
    assert ack["clientOrderId"] == "cid-2" and faulty.injected == {"dropped_after_send": 1} and faulty.calls == 2
    assert [o["clientOrderId"] for o in paper.orders.values()] == ["cid-1", "cid-2"]
    record = [json.loads(x)["order"]["clientOrderId"] for x in (tmp_path / "binance.jsonl").read_text().splitlines()
              if json.loads(x)["t"] == "order"]
    assert collections.Counter(record) == {"cid-1": 1, "cid-2": 1}


@pytest.mark.parametrize("field, error", [("error_5xx_rate", base.ExchangeNotAvailable),
                                          ("timeout_rate", base.RequestTimeout),
                                          ("rate_limit_rate", base.RateLimitExceeded)])
def test_5xx_timeouts_and_rate_limits_never_reach_the_venue(tmp_path, field, error):
    paper = paper_venue(tmp_path)
    faulty = FaultyVenue(paper, ChaosConfig(**{field: 1.0}), control_dir=None)
    with pytest.raises(error):
        asyncio.run(buy(faulty, "cid-1"))
    assert paper.orders == {}
    # still unknown after every retry: the order is never sent blind, and the caller is told it is unknown
    with pytest.raises(base.NetworkError, match="outcome unknown after 4 attempts"):
        asyncio.run(base.create_order_once(faulty, SPOT, "limit", "buy", D("0.01"), D("59000"),
                                           {"clientOrderId": "cid-2"}, retries=3, backoff_s=0.0))
    assert paper.orders == {}
    assert sum(faulty.injected.values()) == 5 and faulty.calls == 5  # 1 + (1 send + 3 look-ups)


def test_faults_only_while_armed_logged_seeded_and_everything_else_reaches_the_inner_venue(tmp_path):
    paper = paper_venue(tmp_path)
    control = tmp_path / "chaos"
    control.mkdir()
    cfg = ChaosConfig(scenario="mix", latency_ms=2.0, jitter_ms=1.0, timeout_rate=0.3, drop_after_send_rate=0.3)
    faulty = FaultyVenue(paper, cfg, seed=11, control_dir=control)
    asyncio.run(faulty.fetch_balance())  # disarmed: passed through, nothing drawn
    assert faulty.injected == {} and read_fault_log(control) == []

    (control / "armed").touch()

    async def calls(venue, n=40):
        outcomes = []
        for _ in range(n):
            try:
                await venue.fetch_open_orders()
                outcomes.append("ok")
            except base.NetworkError as exc:
                outcomes.append(type(exc).__name__)
        return outcomes

    outcomes = asyncio.run(calls(faulty))
    (tmp_path / "other").mkdir()
    again = asyncio.run(calls(FaultyVenue(paper_venue(tmp_path / "other"), cfg, seed=11, control_dir=None)))
    assert outcomes == again  # the same seed draws the same faults
    assert {"ok", "RequestTimeout", "NetworkError"} <= set(outcomes)
    log = read_fault_log(control)
    assert collections.Counter(f["kind"] for f in log) == faulty.injected
    assert faulty.injected["latency"] == 40 and all(1.0 <= f["delay_ms"] <= 3.0 for f in log if f["kind"] == "latency")
    assert {f["method"] for f in log} == {"fetch_open_orders"} and {f["venue"] for f in log} == {"binance"}

    # the engine reaches the paper venue through `inner`; other attributes are the inner venue's
    assert faulty.inner is paper and faulty.name == "binance" and faulty.drain_trades == paper.drain_trades
    assert faulty.drain_closed_orders() == [] and faulty.fundings is paper.fundings
    assert not hasattr(faulty, "poll_trades")  # a paper venue has none: the engine must not think it live
    with pytest.raises(ValueError, match="add up to 1.2"):
        FaultyVenue(paper, ChaosConfig(timeout_rate=0.6, error_5xx_rate=0.6), control_dir=None)


def test_stale_market_data_freezes_one_venue_for_a_window_of_market_time(tmp_path):
    books = Books()

    async def replay():  # like the runner's replay: a book is updated before it is yielded
        for i in range(12):
            ts = T0 + i * 10_000
            for venue in ("binance", "okx"):
                book = books.get(venue, SPOT)
                book.update(ts, 60_000.0 + i, 60_002.0 + i, 1.0, 1.0)
                yield BOOK, book
                yield TRADE, TradeTick(venue, SPOT, ts + 1, "buy", 60_002.0 + i, 0.1)

    cfg = ChaosConfig(stale_venue="binance", stale_from_s=30, stale_for_s=40)

    async def run():
        seen = []
        async for kind, obj in stale_market_data(replay(), cfg, control_dir=tmp_path):
            seen.append((kind, obj.venue, obj.ts, books.get("binance", SPOT).ts))
        return seen

    seen = asyncio.run(run())
    window = (T0 + 30_000, T0 + 70_000)
    binance = [ts for kind, venue, ts, _ in seen if venue == "binance"]
    assert not [ts for ts in binance if window[0] <= ts < window[1]]
    assert len(binance) == 24 - 8  # 4 books and 4 trades dropped
    # while stale, the shared book stays as the last update that got through (20 s), and ages
    frozen = [book_ts for _, venue, ts, book_ts in seen if venue == "okx" and window[0] <= ts < window[1]]
    assert frozen and set(frozen) == {T0 + 20_000}
    assert seen[-1][3] == T0 + 110_000  # back afterwards
    log = read_fault_log(tmp_path)
    assert [f["kind"] for f in log] == ["stale_start", "stale_end"]
    assert log[1]["dropped"] == 8 and (log[0]["market_from"], log[0]["market_to"]) == window


def test_the_verdict_fails_on_a_duplicate_a_lost_fill_and_an_unexpected_pause():
    rid = "chaos-x"

    def rec(seq, kind, payload):
        return {"seq": seq, "ts": f"2026-11-26T00:00:{seq:02d}+00:00", "runtime_id": rid, "kind": kind,
                "payload": payload}

    order = {"client_order_id": "c1", "venue": "binance", "symbol": SPOT, "side": "buy", "type": "limit",
             "price": "59000", "amount": "0.01", "market_ts": T0}
    records = [rec(1, "start", {"mode": "paper", "venue_account": rid}), rec(2, "order", order),
               rec(3, "order_ack", {"client_order_id": "c1", "order_id": "binance-1", "status": "open"}),
               rec(4, "pause", {"paused_by": f"runtime-breaker:{rid}", "reason": "5 venue calls failed"})]
    venue_order = {"clientOrderId": "c1", "symbol": SPOT, "side": "buy", "type": "limit", "price": "59000",
                   "amount": "0.01", "filled": "0.01"}
    record = VenueRecord(orders={"binance-1": dict(venue_order, id="binance-1"),
                                 "binance-2": dict(venue_order, id="binance-2")},
                         trades={"binance-T1": {"id": "binance-T1", "order": "binance-1", "symbol": SPOT, "side": "buy",
                                                "price": "59000", "amount": "0.01", "fee": {"cost": "0.1"}}})
    faults = [{"ts": datetime.fromisoformat("2026-11-26T00:00:01+00:00").timestamp(), "kind": "timeout"}]
    verdict = judge(SCENARIOS["timeouts"], Verdict("timeouts", rid, "paper", "mm_lite"), records,
                    lambda account, venue, view: record, faults)
    assert not verdict.passed
    assert verdict.duplicates == 1 and verdict.duplicate_detail == ["c1 created 2 times at the venue"]
    (problem,) = verdict.reconciliation_problems  # the journal's one order against the venue's two, unfilled
    assert verdict.reconciliation_pct == 0.0 and problem["status"] == "mismatched"
    assert "filled: journal fills 0 venue 0.01" in problem["detail"] and "order id" in problem["detail"]
    assert verdict.auto_pause and any("auto-pause fired, expected none" in f for f in verdict.failures)
    assert verdict.recovery_s == 2.0  # the timeout at :01, the ack at :03


def test_the_drills_order_flow_quotes_what_half_the_open_order_limit_holds_and_keeps_the_users_other_fields():
    schedule = pl.DataFrame([{"venue": v, "symbol": s, "active": a} for v, s, a in (
        ("binance", "BTC/USDT", True), ("okx", "BTC/USDT", True), ("bybit", "BTC/USDT", True),
        ("okx", "ETH/USDT", True), ("bybit", "ETH/USDT", True), ("binance", "SOL/USDT", True),
        ("binance", "XRP/USDT", False), ("okx", "DOGE/USDT", True))])
    markets = schedule.filter(pl.col("symbol") != "DOGE/USDT").select("venue", "symbol")  # no market: never quoted
    # the stale venue's symbols first, then those on more venues; two quotes per pair within the budget
    assert quoted_symbols(schedule, markets, 20, "binance") == ["BTC/USDT", "SOL/USDT", "ETH/USDT"]
    assert quoted_symbols(schedule, markets, 8, "binance") == ["BTC/USDT", "SOL/USDT"]  # 6 + 2; ETH's 4 do not fit
    assert quoted_symbols(schedule, markets, 10, "okx") == ["BTC/USDT", "ETH/USDT"]  # okx's first, SOL's 2 left out
    assert quoted_symbols(schedule, markets, 2, "okx") == ["BTC/USDT"]  # at least one symbol, even over the budget
    assert quoted_symbols(schedule, markets, 20, "okx", only_venue="okx") == ["BTC/USDT", "ETH/USDT"]
    assert quoted_symbols(schedule, markets, 20, "binance", symbols=["ETH/USDT"]) == ["ETH/USDT"]
    assert quoted_symbols(schedule.head(0), markets, 20, "binance") == []

    user = {"gate": {"threshold_usd": 1000.0, "horizon_s": 20.0}, "limits": {"stale_after_s": 3.0}}
    assert order_flow.apply(user, {"gate": DRILL_GATE, "mm_lite": {"symbols": ["BTC/USDT"]}}) == {
        "gate": {"threshold_usd": -1e6, "horizon_s": 20.0}, "limits": {"stale_after_s": 3.0},
        "mm_lite": {"symbols": ["BTC/USDT"]}}
    assert user["gate"]["threshold_usd"] == 1000.0  # the user's mapping is not changed
    env = {"SOFIA_RUNTIME_GATE__THRESHOLD_USD": "5", "SOFIA_RUNTIME_GATE__HORIZON_S": "9", "SOFIA_DATA_DIR": "/x"}
    assert order_flow.environment_overrides({"gate": DRILL_GATE}, env) == ["SOFIA_RUNTIME_GATE__THRESHOLD_USD"]


# --- the proxy ------------------------------------------------------------------------------------------------------


def _get(url: str, timeout: float = 3.0):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status, json.loads(resp.read())


def test_the_proxy_adds_latency_answers_errors_drops_after_send_and_refuses():
    with running_fake_binance() as fake, running_proxy(fake.base_url, seed=3) as proxy:
        assert _get(proxy.url + "/api/v3/time")[0] == 200
        proxy.set_faults(ProxyFaults(latency_ms=150.0, jitter_ms=20.0))
        t0 = time.monotonic()
        assert _get(proxy.url + "/api/v3/ping") == (200, {})
        assert time.monotonic() - t0 >= 0.13

        proxy.set_faults(ProxyFaults(error_rate=1.0, error_status=503, match=r"^GET /api/v3/ping "))
        before = fake.count("GET", "/api/v3/ping")
        with pytest.raises(urllib.error.HTTPError) as err:
            _get(proxy.url + "/api/v3/ping")
        assert err.value.code == 503 and fake.count("GET", "/api/v3/ping") == before  # never reached the venue
        assert _get(proxy.url + "/api/v3/time")[0] == 200  # not matched: passed

        proxy.set_faults(ProxyFaults(drop_after_send_rate=1.0))
        before = fake.count("GET", "/api/v3/time")
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError)):
            _get(proxy.url + "/api/v3/time")
        assert fake.count("GET", "/api/v3/time") == before + 1  # the venue answered; the client saw nothing

        port = int(proxy.url.rsplit(":", 1)[1])
        proxy.set_faults(ProxyFaults(refuse=True))
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        proxy.set_faults(ProxyFaults())
        assert _get(proxy.url + "/api/v3/time")[0] == 200  # listening again on the same port
        assert proxy.injected == {"latency": 1, "http_503": 1, "dropped_after_send": 1, "refused_connections": 1,
                                  "refused_connections_end": 1}


# --- the drill, end to end ------------------------------------------------------------------------------------------


def test_the_drill_refuses_what_it_cannot_run_and_never_turns_live_on(runtime_data: RuntimeData):
    def refused(*args, env=None) -> str:
        proc = runtime_data.cli("chaos", *args, env=env)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        return proc.stderr

    assert "choose one of latency, timeouts" in refused("--scenario", "earthquake")
    assert "stale_data runs in paper mode only" in refused("--scenario", "stale_data", "--mode", "live", "--venue",
                                                           "binance", "--venue-url", "http://127.0.0.1:9")
    assert "only http:// URLs" in refused("--mode", "live", "--venue", "binance", "--venue-url", "https://x.y",
                                          "--order", "buy 0.01 BTC/USDT")
    # keys in the environment but no allow_live in the configuration: the drill does not add it
    env = runtime_data.env(SOFIA_BINANCE_API_KEY=KEY, SOFIA_BINANCE_SECRET=SECRET)
    err = refused("--mode", "live", "--venue", "binance", "--venue-url", "http://127.0.0.1:9", "--scenario",
                  "latency", "--order", "buy 0.01 BTC/USDT", env=env)
    assert "allow_live is false in the configuration" in err and "never turns live trading on" in err
    assert not list((runtime_data.dir / "audit").glob("*"))  # no runtime was started
    assert runtime_data.cli("pause", "--reason", "maintenance", "--by", "ops").returncode == 0
    assert "paused by ops (maintenance)" in refused("--scenario", "latency")
    assert (runtime_data.dir / "control" / "pause.json").exists()  # an operator's pause is left alone


def _report(runtime_data: RuntimeData) -> dict:
    (path,) = sorted((runtime_data.dir / "reports").glob("chaos-*.json"))
    return json.loads(path.read_text())


def _venue_orders_per_client(runtime_data: RuntimeData, rid: str) -> collections.Counter:
    ids = collections.defaultdict(set)
    for venue in ("binance", "okx"):
        for line in runtime_data.venue_lines(rid, venue):
            if line["t"] == "order":
                ids[line["order"]["clientOrderId"]].add(line["order"]["id"])
    return collections.Counter({cid: len(v) for cid, v in ids.items()})


PAPER = [name for name, s in SCENARIOS.items() if "paper" in s.modes]


@pytest.mark.parametrize("scenario", PAPER)
def test_chaos_drill_paper_scenario(runtime_data: RuntimeData, scenario):
    """mm_lite at full speed for 3 s per scenario: nothing duplicated, the journal intact, every order and fill
    reconciled with the paper venue's record, the breaker's pause only under the 5xx burst, and a recovery."""
    # the 5xx burst lasts until the breaker pauses, at most 60 % of the run: room for a loaded CI machine
    duration = "5s" if scenario == "http_5xx" else "3s"
    # paused, a full-speed replay would race to the end of its 3 market hours before the drill resumes it: the 5xx
    # run is paced (5 s at 1,800x = 2.5 market hours) so there is a market left to trade after the resume
    speed = "1800" if scenario == "http_5xx" else "0"
    proc = runtime_data.cli("chaos", "--scenario", scenario, "--duration", duration, "--speed", speed, timeout=120,
                            env=runtime_data.env(COLUMNS="200"))
    assert "chaos drill summary" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
    (v,) = _report(runtime_data)["scenarios"]
    assert proc.returncode == 0, json.dumps(v, indent=1)[:4000]
    rid = v["runtime_id"]
    assert v["scenario"] == scenario and rid.startswith(f"chaos-{scenario}-") and v["passed"], v["failures"]
    assert v["duplicates"] == 0 and v["journal_intact"] and v["reconciliation_pct"] == 100.0
    assert v["auto_pause"] is (scenario == "http_5xx") and v["auto_pause_expected"] is (scenario == "http_5xx")
    assert v["recovery_s"] is not None and 0 <= v["recovery_s"] < 10
    print(f"{scenario}: {v['orders_sent']} orders, injected {v['injected']}, recovery {v['recovery_s']} s, "
          f"auto-pause after {v['pause_after_s']} s")
    detail = json.dumps(v, indent=1)[:4000]

    # checked again here, from the files themselves
    records = runtime_data.records(rid)
    orders = [r["payload"]["client_order_id"] for r in records if r["kind"] == "order"]
    assert len(orders) == v["orders_sent"] > 50 and len(set(orders)) == len(orders), detail
    per_client = _venue_orders_per_client(runtime_data, rid)
    assert per_client and max(per_client.values()) == 1 and set(per_client) <= set(orders)
    assert runtime_data.cli("verify-journal").returncode == 0
    assert not (runtime_data.dir / "control" / "pause.json").exists()  # the next scenario starts unpaused
    kinds = collections.Counter(r["kind"] for r in records)
    if scenario in ("timeouts", "http_5xx", "dropped_after_send", "rate_limits", "latency"):
        assert sum(v["injected"].values()) > 0
    if scenario == "http_5xx":
        assert kinds["breaker"] == 1 and kinds["pause"] == 1 and kinds["resume"] == 1 and v["resumed_by_drill"], detail
        assert kinds["order_unknown"] >= 1 and kinds["order_unknown"] == v["not_sent"], detail  # never processed
        pause = next(r for r in records if r["kind"] == "pause")
        assert pause["payload"]["paused_by"] == f"runtime-breaker:{rid}"
        resumed = next(r for r in records if r["kind"] == "resume")
        assert any(r["kind"] == "order_ack" and r["seq"] > resumed["seq"] for r in records)  # trading again
    else:
        assert kinds["pause"] == 0
    if scenario == "stale_data":
        assert v["stale"]["venue"] == "binance" and v["stale"]["dropped_events"] > 0
        assert v["stale"]["orders_on_stale_book"] == 0
        # quotes resting on the stale venue are cancelled once its book is older than cancel_stale_after_s (60 s)
        market_from, market_to = v["stale"]["market_from"], v["stale"]["market_to"]
        deadline = market_from + (60 + 11) * 1000  # plus a book interval (10 s) and the once-a-second check
        assert market_to > deadline
        resting = {r["payload"]["client_order_id"] for r in records if r["kind"] == "order"
                   and r["payload"]["venue"] == "binance" and r["payload"]["type"] == "limit"
                   and r["payload"]["market_ts"] < market_from}
        closed_at = {}
        for r in records:
            if r["kind"] in ("cancel", "order_closed") and r["payload"]["client_order_id"] in resting:
                closed_at.setdefault(r["payload"]["client_order_id"], r["payload"]["market_ts"])
        assert resting and all(closed_at.get(cid, 2**62) <= deadline for cid in resting), detail
        stale_cancels = [r for r in records if r["kind"] == "cancel"
                         and r["payload"]["reason"].startswith("stale data: binance")]
        assert stale_cancels and all(market_from + 50_000 < r["payload"]["market_ts"] <= deadline  # 60 s after the
                                     for r in stale_cancels)                                 # last book got through
    if scenario == "kill_restart":
        assert kinds["start"] == 2 and v["exit_codes"] == [-9, 0]
        assert records[-1]["kind"] == "stop"
    else:
        assert kinds["start"] == 1 and v["exit_codes"] == [0]


def test_chaos_drill_live_router_through_the_proxy_with_responses_dropped_after_send(runtime_data: RuntimeData):
    """Six market children through the proxy; once the first is acknowledged every order request is dropped after
    the fake Binance processed it. The engine finds each by its client order id: one order per client id at the
    venue, exactly one POST per journaled order, the parent filled once."""
    with running_fake_binance(KEY, SECRET) as fake:
        user = runtime_data.dir / "user.yaml"
        user.write_text(yaml.safe_dump({"allow_live": True, "router": {"child_usd": 50.0}}))
        env = runtime_data.env(SOFIA_BINANCE_API_KEY=KEY, SOFIA_BINANCE_SECRET=SECRET, COLUMNS="200")
        proc = runtime_data.cli("chaos", "--mode", "live", "--venue", "binance", "--venue-url", fake.base_url,
                                "--scenario", "dropped_after_send", "--order", "buy 0.0045 BTC/USDT",
                                "--duration", "15s", "--config", str(user), env=env, timeout=120)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        (v,) = _report(runtime_data)["scenarios"]
        assert v["passed"] and v["mode"] == "live" and v["strategy"] == "router", v["failures"]
        assert v["injected"].get("dropped_after_send", 0) >= 1
        assert v["duplicates"] == 0 and v["journal_intact"] and v["reconciliation_pct"] == 100.0
        records = runtime_data.records(v["runtime_id"])
        orders = [r["payload"] for r in records if r["kind"] == "order"]
        assert len(orders) == 6
        for o in orders:
            (at_venue,) = fake.orders_with_client_id(o["client_order_id"])
            assert at_venue["status"] == "FILLED"
        assert fake.count("POST", "/api/v3/order") == len(orders) == fake.orders_created
        filled = sum(D(r["payload"]["amount"]) for r in records if r["kind"] == "fill")
        assert filled == sum(D(o["amount"]) for o in orders) and abs(filled - D("0.0045")) <= D("0.00001")
        assert records[-1]["kind"] == "stop" and records[-1]["payload"]["reason"] == "strategy done"
        assert runtime_data.cli("verify-journal").returncode == 0
        assert KEY not in proc.stdout + proc.stderr and SECRET not in proc.stdout + proc.stderr


def test_the_drill_brings_its_own_order_flow_where_the_configured_gate_passes_nothing(runtime_data: RuntimeData):
    """The user's gate wants 1,000 USD of EV from a 2,000 USD quote, so a runtime on that configuration sends no
    order. `sofia-runtime chaos --scenario all` lays its own gate over it in its own configuration files (the user's
    file is untouched, the environment's threshold ignored, both named in the report) and every paper scenario
    sends orders and passes."""
    user = runtime_data.dir / "runtime.yaml"
    user.write_text(yaml.safe_dump({"gate": {"threshold_usd": 1000.0, "miss_cost_bps": 0.7},
                                    "limits": {"stale_after_s": 5.0}}))
    before = user.read_bytes()
    strict = runtime_data.env(SOFIA_RUNTIME_GATE__THRESHOLD_USD="1000")
    proc = runtime_data.cli("run", "--strategy", "mm_lite", "--speed", "0", "--duration", "2s", "--port", "0",
                            "--runtime-id", "gate-as-configured", env=strict)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = runtime_data.records("gate-as-configured")
    decisions = [r["payload"] for r in records if r["kind"] == "decision"]
    assert len(decisions) > 50 and not any(d["passed"] for d in decisions)  # the premise: nothing passes
    assert not [r for r in records if r["kind"] == "order"]

    # 6 s at 1,200x: 2 of the snapshot's 3 market hours, paced for the same reason as the 5xx run above
    proc = runtime_data.cli("chaos", "--scenario", "all", "--duration", "6s", "--speed", "1200", timeout=400,
                            env={**strict, "COLUMNS": "200"})
    assert "chaos drill summary" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
    report = _report(runtime_data)
    failures = {v["scenario"]: v["failures"] for v in report["scenarios"] if not v["passed"]}
    assert proc.returncode == 0 and report["passed"] and not failures, failures
    assert [v["scenario"] for v in report["scenarios"]] == PAPER
    flow = report["order_flow"]
    assert flow["overrides"]["gate"] == {"threshold_usd": -1e6} and flow["user_config"] == str(user)
    quoted = flow["overrides"]["mm_lite"]["symbols"]
    assert sorted(quoted) == sorted({SPOT, PERP})  # two venues' quotes on both: 8 of half the open-order limit (40)
    assert flow["environment_ignored"] == ["SOFIA_RUNTIME_GATE__THRESHOLD_USD"]
    assert "order flow: paper: gate.threshold_usd -1e6 USD" in proc.stdout and "is not changed" in proc.stdout
    assert user.read_bytes() == before

    for v in report["scenarios"]:
        rid = v["runtime_id"]
        drill_config = yaml.safe_load((runtime_data.dir / "chaos" / rid / "runtime.yaml").read_text())
        assert drill_config["gate"] == {"threshold_usd": -1e6, "miss_cost_bps": 0.7}  # the user's other fields kept
        assert drill_config["limits"] == {"stale_after_s": 5.0} and drill_config["chaos"]["scenario"] == v["scenario"]
        assert drill_config["mm_lite"] == {"symbols": quoted}
        records = runtime_data.records(rid)
        (start, *_) = [r["payload"] for r in records if r["kind"] == "start"]
        assert float(start["config"]["gate"]["threshold_usd"]) == -1e6
        passed = [r["payload"] for r in records if r["kind"] == "decision" and r["payload"]["passed"]]
        orders = [r for r in records if r["kind"] == "order"]
        # every order went out on a decision the user's own gate would have refused
        assert v["orders_sent"] == len(orders) > 50 and passed and max(float(d["ev_usd"]) for d in passed) < 1000
        assert v["duplicates"] == 0 and v["journal_intact"] and v["reconciliation_pct"] == 100.0
        assert v["recovery_s"] is not None and v["auto_pause"] is (v["scenario"] == "http_5xx")
    assert runtime_data.cli("verify-journal").returncode == 0
