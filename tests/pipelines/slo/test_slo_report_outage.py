"""The SLO report on a real journal with a known outage: journal files written by sofia_runtime.journal.Journal
on a controlled clock, ingested by the audit assets, reconciled against a paper venue record, then slo_report."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import dagster as dg
import duckdb
import pytest

from sofia_pipelines.defs.audit.assets import audit_events, fills, reconciliation
from sofia_pipelines.defs.slo.assets import slo_report
from sofia_pipelines.defs.slo.compute import load_slo_config, nearest_rank
from sofia_runtime import paths
from sofia_runtime.journal import Journal

DAY = "2026-03-10"
T0 = datetime(2026, 3, 10, 8, 0, tzinfo=timezone.utc)
CRASH = T0 + timedelta(hours=1)                   # the last record before the crash
RESTART = CRASH + timedelta(minutes=6)            # the next `start`
STOP = T0 + timedelta(hours=2)
RUNTIME = "mm_lite-paper"
# Snapshot A was created 35.5 h before T0: older than 36 h from T0+30min until the switch to B at T0+45min.
SNAP_A = "20260308T203000-2026-03-08-aaaaaa"
SNAP_B = "20260310T070000-2026-03-09-bbbbbb"
SWITCH = T0 + timedelta(minutes=45)
STALE_S = 15 * 60


class Clock:
    def __init__(self, t: datetime):
        self.t = t

    def __call__(self) -> float:
        return self.t.timestamp()


def decision_us(i: int) -> int:
    return 10_000 if i % 150 == 0 else 150 + (i * 7919) % 700  # a slow decision (10 ms) every 150th


def ack_us(i: int) -> int:
    return 120_000 if i % 20 == 7 else 5_000 + (i * 13 % 40) * 1_000  # a slow ack (120 ms) every 20th


def write_journal(audit_dir, bad_durability_at: int | None = None, unknown_at_venue: int | None = None):
    """Start at T0, a decision every 5 s and an order + ack every minute, crash at T0+1h (no stop, a torn
    half-written line), restart at T0+1h06, stop at T0+2h. Returns what the venue knows and the figures written."""
    clock = Clock(T0)
    written = {"decision_us": [], "ack_us": [], "orders": []}
    venue_orders = []

    def session(journal: Journal, start: datetime, end: datetime, snapshot: str, stop: bool):
        clock.t = start
        journal.append_durable("start", {"pid": 1, "mode": "paper", "strategy": "mm_lite", "snapshot_id": snapshot,
                                         "partition": snapshot[16:26], "port": 0, "config": {}})
        t = start + timedelta(seconds=5)
        while t <= end:
            clock.t = t
            if snapshot == SNAP_A and t == SWITCH:
                journal.append("snapshot", {"snapshot_id": SNAP_B, "partition": SNAP_B[16:26], "market_ts": 0})
            elif not (stop and t == end):
                i = len(written["decision_us"])
                us = decision_us(i)
                written["decision_us"].append(us)
                rec = journal.append("decision", {"strategy": "mm_lite", "tag": "quote", "passed": True,
                                                  "result": "passed", "reason": "ev", "decision_us": us})
                if t.second == 0:
                    k = len(written["orders"])
                    cid = f"mm-{rec['seq']}-0"
                    order = journal.append("order", {
                        "client_order_id": cid, "decision_seq": rec["seq"], "leg": 0, "strategy": "mm_lite",
                        "tag": "quote", "venue": "binance", "symbol": "BTC/USDT", "side": "buy", "type": "limit",
                        "price": Decimal("50000.1"), "amount": Decimal("0.01"), "post_only": True, "market_ts": 0})
                    journal.durable(order)
                    durable = order["seq"] - 1 if k == bad_durability_at else journal.durable_seq
                    a = ack_us(k)
                    written["ack_us"].append(a)
                    written["orders"].append(cid)
                    journal.append("order_ack", {"client_order_id": cid, "order_id": f"o{k}", "status": "open",
                                                 "decision_to_ack_us": a, "durable_seq_at_send": durable,
                                                 "order_seq": order["seq"], "market_ts": 0})
                    if k != unknown_at_venue:
                        venue_orders.append({"id": f"o{k}", "clientOrderId": cid, "symbol": "BTC/USDT", "side": "buy",
                                             "type": "limit", "price": "50000.1", "amount": "0.01", "filled": "0",
                                             "status": "open"})
            t += timedelta(seconds=5)
        if stop:
            clock.t = end
            journal.append_durable("stop", {"reason": "duration", "counters": {}, "net_pnl_usd": Decimal(0),
                                            "fees_usd": Decimal(0)})
        journal.close()

    session(Journal(audit_dir, RUNTIME, clock=clock), T0, CRASH, SNAP_A, stop=False)
    with (audit_dir / RUNTIME / f"{DAY}.jsonl").open("ab") as f:
        f.write(b'{"seq": 99999, "kind": "decis')  # the crash tore the line being written
    clock.t = RESTART  # the restarted process moves the torn bytes aside and journals that first
    session(Journal(audit_dir, RUNTIME, clock=clock), RESTART, STOP, SNAP_B, stop=True)
    record = paths.data_dir() / "paper_venue" / RUNTIME / "binance.jsonl"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text("".join(json.dumps({"t": "order", "order": o}) + "\n" for o in venue_orders))
    return written


def publish_current(created: datetime, snapshot_id: str, partition: str):
    """A CURRENT pointer and manifest (the freshness SLI reads only the manifest's created_at)."""
    folder = paths.serving_dir() / snapshot_id
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"snapshot_id": snapshot_id, "created_at": created.isoformat(),
                                                      "partition": partition, "tables": {}}))
    (paths.serving_dir() / "CURRENT").write_text(snapshot_id + "\n")


def run_slo(resources, as_of: datetime):
    for assets, kw in (([audit_events, fills], {"partition_key": DAY}), ([reconciliation], {})):
        assert dg.materialize(assets, resources=resources, **kw).success
    result = dg.materialize([slo_report], resources=resources,
                            run_config={"ops": {"slo_report": {"config": {"as_of": as_of.isoformat()}}}})
    assert result.success
    with duckdb.connect(str(paths.warehouse_path()), read_only=True) as conn:
        rows = conn.sql("SELECT * FROM audit.slo_report WHERE evaluated_at = ?",
                        params=[as_of.astimezone(timezone.utc).replace(tzinfo=None)]).pl()
    report = {r["sli"]: r for r in rows.iter_rows(named=True)}
    (check,) = result.get_asset_check_evaluations()
    metadata = result.asset_materializations_for_node("slo_report")[0].metadata
    return report, check, metadata


def test_slo_report_on_a_journal_with_a_known_outage(data_dir, resources):
    written = write_journal(paths.audit_dir())
    assert list((paths.audit_dir() / RUNTIME).glob(f"{DAY}.jsonl.torn-*")), "the restart moved the torn line aside"
    publish_current(datetime(2026, 3, 10, 7, 0, tzinfo=timezone.utc), SNAP_B, "2026-03-09")
    report, check, metadata = run_slo(resources, as_of=STOP)
    config = load_slo_config()
    assert len(report) == 6

    # availability: 2 h it should have run, 6 min of it down (last record before the crash -> the next start)
    a = report["availability"]
    assert (a["good"], a["total"]) == (7200.0 - 360.0, 7200.0)
    assert a["ratio"] == (2 * 3600 - 6 * 60) / (2 * 3600) == 0.95
    assert a["measured"] == pytest.approx(95.0)
    budget = 1 - config.slos.availability.target                               # 0.5 %
    assert a["error_budget"] == pytest.approx(0.005)
    assert a["burn_rate_long"] == pytest.approx(0.05 / budget)                 # 10x
    assert a["remaining_budget"] == pytest.approx(1 - 0.05 / budget)           # -9: spent nine times over
    # the short window (the last hour, T0+1h .. T0+2h) holds the whole outage: 6 min of 60
    assert a["burn_rate_short"] == pytest.approx((360 / 3600) / budget)       # 20x
    assert a["status"] == "exhausted"
    assert "crash" in a["detail"] and "360 s down" in a["detail"]
    assert "2026-03-10 09:00:00" in metadata["outages"].value and "2026-03-10 09:06:00" in metadata["outages"].value

    # decision latency p99 (nearest rank) and its budget, from the decision_us written
    d = report["decision_latency"]
    us = written["decision_us"]
    slow = sum(v > 1000 for v in us)
    assert (d["good"], d["total"]) == (len(us) - slow, len(us))
    assert d["measured"] == sorted(us)[math.ceil(0.99 * len(us)) - 1] / 1000 == nearest_rank(us, 99) / 1000
    assert (len(us), slow) == (1366, 10)          # 0.73 % slow: the p99 is a fast one, 27 % of the budget spent
    assert d["measured"] == pytest.approx(0.848)
    assert d["burn_rate_long"] == pytest.approx((slow / len(us)) / 0.01)
    assert d["status"] == "ok" and d["remaining_budget"] > 0

    # acknowledgement latency p95: 6 of 112 acks slow (5.4 % > 5 %), so the p95 is a slow one and the budget is gone
    k = report["ack_latency"]
    acks = written["ack_us"]
    assert (k["good"], k["total"]) == (106.0, 112.0) == (sum(v <= 50_000 for v in acks), len(acks))
    assert k["measured"] == sorted(acks)[math.ceil(0.95 * len(acks)) - 1] / 1000 == 120.0
    assert k["burn_rate_long"] == pytest.approx((6 / 112) / 0.05)
    assert k["remaining_budget"] == pytest.approx(1 - (6 / 112) / 0.05) and k["status"] == "exhausted"

    # every order durable before it was sent, every order matched at the venue
    for name in ("journal_durability", "reconciliation"):
        assert report[name]["ratio"] == 1.0 and report[name]["measured"] == 100.0, name
        assert report[name]["remaining_budget"] == 1.0 and report[name]["status"] == "ok", name
    assert report["journal_durability"]["total"] == report["reconciliation"]["total"] == len(written["orders"]) == 112

    # freshness: 6,840 s up, 15 min of it on snapshot A older than 36 h; CURRENT (B) is 3 h old at T0+2h
    f = report["snapshot_freshness"]
    assert (f["good"], f["total"]) == (6840.0 - STALE_S, 6840.0)
    assert f["burn_rate_long"] == pytest.approx((STALE_S / 6840) / 0.01)
    assert f["burn_rate_short"] == 0.0
    assert f["measured"] == pytest.approx(3.0)
    assert f["status"] == "exhausted"

    assert not check.passed and check.check_name == "error_budgets_left"
    assert check.metadata["exhausted"].value == ["ack_latency", "availability", "snapshot_freshness"]
    assert [line.split(":")[0] for line in check.description.splitlines()] == [
        "availability", "ack_latency", "snapshot_freshness"]


def test_one_order_sent_before_it_was_durable_and_one_unknown_at_the_venue(data_dir, resources):
    write_journal(paths.audit_dir(), bad_durability_at=3, unknown_at_venue=5)
    # evaluated a day later: the runtime stopped cleanly, so the idle day after costs no availability
    report, check, _ = run_slo(resources, as_of=STOP + timedelta(days=1))
    dur = report["journal_durability"]
    assert (dur["good"], dur["total"]) == (111.0, 112.0)
    assert dur["measured"] == pytest.approx(100 * 111 / 112)
    assert dur["burn_rate_long"] == math.inf and dur["remaining_budget"] == -math.inf
    assert dur["status"] == "exhausted"
    rec = report["reconciliation"]
    assert (rec["good"], rec["total"]) == (111.0, 112.0) and rec["status"] == "exhausted"
    assert "missing_at_venue" in rec["detail"]
    assert report["availability"]["ratio"] == 0.95                             # the same 2 h, now in the window
    assert report["availability"]["burn_rate_short"] == 0.0                    # nothing ran in the last hour
    assert report["snapshot_freshness"]["measured"] is None                    # no CURRENT published
    assert {"journal_durability", "reconciliation"} <= set(check.metadata["exhausted"].value)


def test_a_runtime_whose_journal_is_not_ingested_yet_is_not_counted_down(data_dir, resources):
    """The warehouse lags the journal by up to a sensor interval: silence in the warehouse is not silence on disk."""
    clock = Clock(T0)
    journal = Journal(paths.audit_dir(), "router-paper", clock=clock)
    journal.append_durable("start", {"snapshot_id": SNAP_B})
    for minute in range(1, 11):
        clock.t = T0 + timedelta(minutes=minute)
        journal.append("decision", {"decision_us": 100})
    journal.sync()
    report, _, metadata = run_slo(resources, as_of=T0 + timedelta(minutes=10))
    assert report["availability"]["ratio"] == 1.0 and report["availability"]["total"] == 600

    for minute in range(11, 21):  # the runtime goes on; nothing ingests it
        clock.t = T0 + timedelta(minutes=minute)
        journal.append("decision", {"decision_us": 100})
    journal.sync()
    as_of = T0 + timedelta(minutes=30)
    result = dg.materialize([slo_report], resources=resources,
                            run_config={"ops": {"slo_report": {"config": {"as_of": as_of.isoformat()}}}})
    metadata = result.asset_materializations_for_node("slo_report")[0].metadata
    with duckdb.connect(str(paths.warehouse_path()), read_only=True) as conn:
        a = conn.sql("SELECT * FROM audit.slo_report WHERE evaluated_at = ? AND sli = 'availability'",
                     params=[as_of.astimezone(timezone.utc).replace(tzinfo=None)]).pl().row(0, named=True)
    assert (a["good"], a["total"]) == (600.0, 600.0)          # stops at the last ingested record, no false outage
    assert metadata["runtimes not fully ingested"].value == ["router-paper"] and "router-paper" in a["detail"]

    # ingested, the last record is at T0+20min and nothing since: 10 min of silence without a stop is down
    report, _, _ = run_slo(resources, as_of=as_of)
    assert (report["availability"]["good"], report["availability"]["total"]) == (1200.0, 1800.0)
    assert "silent since" in report["availability"]["detail"]
