"""The SLO arithmetic without Dagster: configuration errors, how journal records become up and down time,
burn rates and statuses, the nearest-rank percentile, and the window's look-back in the warehouse."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta

import duckdb
import numpy as np
import polars as pl
import pytest
import yaml

from sofia_pipelines.defs.slo.assets import read_journal, read_reconciliation
from sofia_pipelines.defs.slo.compute import (CONFIG_PATH, Windows, budget_row, burn_rate, in_window_events,
                                              in_window_intervals, load_slo_config, nearest_rank, outages,
                                              reconciliation_events, runtime_intervals, slo_report)
from sofia_pipelines.warehouse import replace_rows
from sofia_runtime.schemas import AUDIT_EVENTS, RECONCILIATION

T0 = datetime(2026, 4, 1, 12, 0)


def events(*records) -> pl.DataFrame:
    """(runtime_id, seconds after T0, kind[, payload]) -> audit.events-shaped rows, seq in the order given."""
    rows, seqs = [], {}
    for r in records:
        rid, secs, kind = r[:3]
        seqs[rid] = seqs.get(rid, 0) + 1
        rows.append({"runtime_id": rid, "seq": seqs[rid], "ts": T0 + timedelta(seconds=secs), "kind": kind,
                     "payload": json.dumps(r[3] if len(r) > 3 else {})})
    return pl.DataFrame(rows, schema={"runtime_id": pl.Utf8, "seq": pl.Int64, "ts": pl.Datetime("ms"),
                                      "kind": pl.Utf8, "payload": pl.Utf8})


def up_total(ev, as_of_s, tolerance=120):
    iv = runtime_intervals(ev, T0 + timedelta(seconds=as_of_s), tolerance)
    return in_window_intervals(iv, T0 - timedelta(days=1), T0 + timedelta(seconds=as_of_s))


# --- configuration ----------------------------------------------------------------------------------------
def test_checked_in_targets():
    c = load_slo_config()
    s = c.slos
    assert (s.availability.target, s.decision_latency.percentile, s.decision_latency.threshold_ms) == (0.995, 99, 1.0)
    assert (s.ack_latency.percentile, s.ack_latency.threshold_ms, s.reconciliation.target) == (95, 50, 1.0)
    assert (s.snapshot_freshness.max_age_hours, s.journal_durability.target) == (36, 1.0)
    assert c.windows("availability") == Windows(timedelta(days=28), timedelta(hours=1), 14.4)


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["slos"]["availability"].update(target=1.5), "field 'slos.availability.target': Input should be less "
                                                             "than or equal to 1 (got 1.5)"),
    (lambda r: r["slos"]["ack_latency"].update(threshold_ms="fast"), "field 'slos.ack_latency.threshold_ms'"),
    (lambda r: r["slos"]["decision_latency"].update(percentile=100), "field 'slos.decision_latency.percentile'"),
    (lambda r: r["slos"].pop("journal_durability"), "field 'slos.journal_durability': Field required"),
    (lambda r: r["slos"]["reconciliation"].update(taget=1.0), "field 'slos.reconciliation.taget': Extra inputs"),
    (lambda r: r["slos"]["availability"].update(short_window_hours=24 * 30), "slos.availability: short_window_hours "
                                                                              "(30 days, 0:00:00) must be shorter"),
])
def test_bad_configuration_names_the_file_and_field(tmp_path, edit, message):
    raw = yaml.safe_load(CONFIG_PATH.read_text())
    edit(raw)
    path = tmp_path / "slo.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError) as err:
        load_slo_config(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "slo.yaml"
    path.write_text("slos: [unclosed")
    with pytest.raises(ValueError, match=f"{path}: not valid YAML"):
        load_slo_config(path)


# --- availability -----------------------------------------------------------------------------------------
def test_a_silence_longer_than_the_tolerance_is_down_a_shorter_one_up():
    ev = events(("r", 0, "start"), ("r", 100, "decision"), ("r", 400, "decision"), ("r", 500, "stop"))
    assert up_total(ev, 600) == (200.0, 500.0)            # 100 -> 400 is 300 s of silence > 120 s
    assert up_total(ev, 600, tolerance=300) == (500.0, 500.0)


def test_planned_downtime_after_a_stop_is_not_counted_and_a_crash_runs_to_the_next_start():
    ev = events(("r", 0, "start"), ("r", 60, "decision"), ("r", 100, "stop"),        # clean stop
                ("r", 5000, "start"), ("r", 5060, "decision"),                       # crash after 5060
                ("r", 5500, "journal_recovered"), ("r", 5500, "start"), ("r", 5600, "stop"))
    iv = runtime_intervals(ev, T0 + timedelta(seconds=9999), 120)
    assert in_window_intervals(iv, T0, T0 + timedelta(seconds=9999)) == (100 + 60 + 100, 100 + 500 + 100)
    (outage,) = outages(iv).iter_rows(named=True)
    assert (outage["start"], outage["end"], outage["down_s"]) == (T0 + timedelta(seconds=5060),
                                                                   T0 + timedelta(seconds=5500), 440.0)
    assert outage["cause"].startswith("crash")


def test_a_runtime_silent_at_evaluation_is_down_until_then_a_live_one_up():
    ev = events(("r", 0, "start"), ("r", 100, "decision"))
    assert up_total(ev, 200) == (200.0, 200.0)                 # last record 100 s ago: still up
    assert up_total(ev, 1000) == (100.0, 1000.0)              # silent 900 s, no stop: down since its last record
    (o,) = outages(runtime_intervals(ev, T0 + timedelta(seconds=1000), 120)).iter_rows(named=True)
    assert o["cause"] == "silent since, no stop"


def test_blue_green_standby_and_the_records_after_a_stop_are_not_counted():
    ev = events(("blue", 0, "start"), ("blue", 0, "lease_acquired"),
                *(("blue", t, "decision") for t in range(60, 1800, 60)),
                ("blue", 1800, "stop"), ("blue", 1800, "handover"),
                ("blue", 2000, "start"), ("blue", 2000, "standby"),           # back as the standby, then it crashes
                ("blue", 2500, "journal_recovered"), ("blue", 2500, "start"), ("blue", 2500, "standby"),
                ("green", 0, "start"), ("green", 0, "standby"),               # silent for 30 min, by design
                ("green", 1790, "lease_acquired"), *(("green", t, "decision") for t in range(1850, 3600, 60)))
    iv = runtime_intervals(ev, T0 + timedelta(seconds=3600), 120)
    assert in_window_intervals(iv, T0, T0 + timedelta(seconds=3600)) == (1800 + 1810, 1800 + 1810)
    assert outages(iv).is_empty()


def test_runtimes_add_up_and_the_window_clips():
    ev = events(("a", 0, "start"), ("a", 3600, "stop"), ("b", 0, "start"), ("b", 1800, "decision"),
                ("b", 3000, "start"), ("b", 3600, "stop"))
    iv = runtime_intervals(ev, T0 + timedelta(hours=2), tolerance_s=4000)  # b crashed after 1800, back at 3000
    assert in_window_intervals(iv, T0, T0 + timedelta(hours=2)) == (3600 + 1800 + 600, 7200)
    assert in_window_intervals(iv, T0 + timedelta(seconds=2400), T0 + timedelta(hours=2)) == (1200 + 600, 2400)


# --- budgets ----------------------------------------------------------------------------------------------
def row(good, total, short=(0, 0), target=0.99, fast=14.4):
    w = Windows(timedelta(days=28), timedelta(hours=1), fast)
    return budget_row("x", "x", target, w, "events", (good, total), short, None, "", T0, None)


def test_burn_rates_and_statuses():
    r = row(995, 1000)                                   # 0.5 % bad of a 1 % budget
    assert (r["burn_rate_long"], r["status"]) == (pytest.approx(0.5), "ok")
    assert r["remaining_budget"] == pytest.approx(0.5)
    r = row(995, 1000, short=(80, 100))                  # 20 % bad in the last hour: 20x
    assert (r["burn_rate_short"], r["status"]) == (pytest.approx(20), "burning")
    assert row(990, 1000)["status"] == "exhausted"       # exactly the budget: nothing left
    assert row(0, 0)["status"] == "no_data" and row(0, 0)["remaining_budget"] == 1.0
    z = row(999, 1000, target=1.0)                        # a 100 % objective has no budget
    assert (z["error_budget"], z["burn_rate_long"], z["status"]) == (0.0, math.inf, "exhausted")
    assert row(1000, 1000, target=1.0)["status"] == "ok"
    assert burn_rate(50, 100, 0.5) == 1.0


def test_nearest_rank_percentile_meets_the_threshold_exactly_when_the_good_fraction_meets_the_target():
    rng = np.random.default_rng(3)
    for _ in range(300):
        values = rng.integers(1, 40, rng.integers(1, 300))
        q, threshold = float(rng.choice([50, 90, 95, 99])), int(rng.integers(1, 40))
        assert (nearest_rank(values, q) <= threshold) == ((values <= threshold).mean() >= q / 100)
    assert nearest_rank([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 95) == 10 and nearest_rank([], 99) is None


def test_report_with_an_empty_journal_has_no_data():
    empty = events()
    recon = RECONCILIATION.empty().with_columns(pl.lit(None, dtype=pl.Datetime("ms")).alias("ts"))
    result = slo_report(empty, recon, load_slo_config(), T0, lambda _: None, None)
    assert result.report["status"].to_list() == ["no_data"] * 6
    assert result.report["remaining_budget"].to_list() == [1.0] * 6


# --- the window's look-back in the warehouse ------------------------------------------------------------
def test_read_journal_brings_the_last_record_and_snapshot_before_the_window(tmp_path):
    ev = events(("r", 0, "start", {"snapshot_id": "s1"}), ("r", 50, "decision"), ("r", 100, "decision"),
                ("r", 5000, "decision"), ("q", 10, "start"), ("q", 20, "stop"))
    full = ev.with_columns(pl.lit("h").alias("prev_hash"), pl.lit("h").alias("hash"), pl.lit("f").alias("file"),
                           pl.lit(1).alias("line"))
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        replace_rows(conn, "audit", AUDIT_EVENTS, full)
        got = read_journal(conn, T0 + timedelta(seconds=1000), T0 + timedelta(seconds=5100))
    assert got.select("runtime_id", "seq").rows() == [("q", 1), ("q", 2), ("r", 1), ("r", 3), ("r", 4)]
    # the runtime was running (no stop) when the window opened and silent until 5000: down from 1000 to 5000,
    # then up to the evaluation; q had stopped before the window and counts nothing
    iv = runtime_intervals(got, T0 + timedelta(seconds=5100), 120)
    assert in_window_intervals(iv, T0 + timedelta(seconds=1000), T0 + timedelta(seconds=5100)) == (100.0, 4100.0)


def test_reconciled_items_are_dated_by_their_journal_record(tmp_path):
    """Slots "blue" and "green" trade one venue account "acct" (reconciled together); "r" is its own account."""
    d40 = 3600 * 24 * 40
    ev = events(("blue", 0, "start", {"venue_account": "acct"}), ("blue", 0, "order", {"client_order_id": "c1"}),
                ("green", d40 - 60, "start", {"venue_account": "acct"}),
                ("green", d40, "order", {"client_order_id": "c2"}), ("green", d40 + 5, "fill", {"trade_id": "t1"}),
                ("r", d40, "order", {"client_order_id": "c1"}))
    full = ev.with_columns(pl.lit("h").alias("prev_hash"), pl.lit("h").alias("hash"), pl.lit("f").alias("file"),
                           pl.lit(1).alias("line"))
    recon = pl.DataFrame({"account": ["acct"] * 4, "venue": ["binance"] * 4,
                          "item": ["order", "order", "fill", "order"],
                          "id": ["c1", "c2", "t1", "c9"], "status": ["matched", "matched", "mismatched",
                                                                    "missing_in_journal"], "detail": [None] * 4})
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        replace_rows(conn, "audit", AUDIT_EVENTS, full)
        replace_rows(conn, "audit", RECONCILIATION, recon)
        dated = read_reconciliation(conn).sort("id")
    day40 = T0 + timedelta(days=40)
    # c1 is acct's (blue's, not r's), c2, c9 (no journal record), t1
    assert dated["ts"].to_list() == [T0, day40, None, day40 + timedelta(seconds=5)]
    as_of = day40 + timedelta(minutes=1)
    items = reconciliation_events(dated, as_of)
    window = in_window_events(items, as_of - timedelta(days=28), as_of)           # c1 is 40 days old: out
    assert (window.height, int(window["good"].sum())) == (3, 1)
    recent = in_window_events(items, as_of - timedelta(minutes=1), as_of)
    assert recent.sort("ts")["ts"].to_list() == [day40 + timedelta(seconds=5), as_of]  # t1, and c9 at the evaluation
