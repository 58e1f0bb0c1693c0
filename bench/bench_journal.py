"""Sensor ingest of a large journal: `sofia_pipelines.defs.audit.compute.events_frame` (what `audit_events` runs
for each journal day the sensor finds grown) on a journal of 500,000 records written with
`sofia_runtime.journal.Journal` in the engine's shapes (decisions with legs, orders, acks, fills, closes, balances),
against the floor of any JSON-lines ingest in Python: reading the lines and `json.loads` of each.

    .venv/bin/python bench/bench_journal.py            # 500,000 records
    .venv/bin/python bench/bench_journal.py --quick    # 50,000 records

Target: a day of 500,000 records ingested within one sensor interval (30 s), i.e. ≥ 16,667 records/s.
The generated journal is kept in <work>/journal-<records>/ and reused.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_WORK, RESULTS_DIR, command, emit, fmt, row, run_child, worker, write_result  # noqa: E402

SENSOR_INTERVAL_S, DAY_RECORDS = 30.0, 500_000
VENUES = ("binance", "okx", "bybit")
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT")


def _d(x: float, q: str = "0.00000001") -> Decimal:
    return Decimal(repr(x)).quantize(Decimal(q))


def write_journal(directory: Path, records: int, runtime_id: str = "bench-mm_lite-paper") -> dict:
    """`records` records in the engine's cycle: decision; for one in three, order, order_ack, then fill or
    order_closed; balances every 1,000. One file per UTC day (a clock 50 ms a record apart)."""
    from sofia_runtime.journal import Journal

    if directory.exists():
        shutil.rmtree(directory)
    clock = {"t": 1_793_000_000.0}
    journal = Journal(directory, runtime_id, clock=lambda: clock["t"])
    written, i, t0 = 0, 0, time.perf_counter()
    while written < records:
        i += 1
        clock["t"] += 0.05
        venue, symbol = VENUES[i % 3], SYMBOLS[i % 4]
        mid = 68_000.0 + (i % 977)
        market_ts = int(clock["t"] * 1000) - 86_400_000
        leg = {"venue": venue, "symbol": symbol, "side": "buy" if i % 2 else "sell", "type": "limit",
               "price": _d(mid - 3.5, "0.01"), "amount": _d(0.0015), "mid": _d(mid, "0.01"), "spread": _d(1.2, "0.01"),
               "vol": _d(0.00041), "distance_spreads": _d(1.5, "0.01"), "p_fill": _d(0.42, "0.0001"),
               "fee_rate": _d(0.0001), "tax_rate": _d(0), "notional_usd": _d(102.0, "0.01")}
        passed = i % 3 == 0
        dec = journal.append("decision", {
            "strategy": "mm_lite", "tag": f"q{i}", "passed": passed, "result": "passed" if passed else "rejected",
            "reason": "ev above threshold" if passed else "ev below threshold", "ev_usd": _d(0.0123),
            "p_fill": _d(0.42, "0.0001"), "edge_usd": _d(0.05), "fees_usd": _d(0.0102), "tax_usd": _d(0),
            "slippage_usd": _d(0.001), "miss_cost_usd": _d(0.002), "threshold_usd": _d(0.01), "legs": [leg],
            "market_ts": market_ts, "decision_us": 180 + i % 50})
        written += 1
        if passed and written + 3 <= records:
            coid = f"mm_lite-{dec['seq']}-0"
            order = {"client_order_id": coid, "decision_seq": dec["seq"], "leg": 0, "strategy": "mm_lite", "tag": f"q{i}",
                     "venue": venue, "symbol": symbol, "side": leg["side"], "type": "limit", "price": leg["price"],
                     "amount": leg["amount"], "post_only": True, "market_ts": market_ts}
            journal.append("order", order)
            journal.append("order_ack", {"client_order_id": coid, "order_id": f"P{i}", "status": "open",
                                         "decision_to_ack_us": 950, "durable_seq_at_send": dec["seq"],
                                         "order_seq": dec["seq"] + 1, "market_ts": market_ts})
            if i % 2:
                journal.append("fill", {"trade_id": f"T{i}", "order_id": f"P{i}", "client_order_id": coid,
                                        "venue": venue, "symbol": symbol, "side": leg["side"], "price": leg["price"],
                                        "amount": leg["amount"], "fee": _d(0.0102), "fee_currency": "USDT",
                                        "liquidity": "maker", "strategy": "mm_lite", "venue_ts": market_ts + 40,
                                        "market_ts": market_ts + 40, "recovered": False})
            else:
                journal.append("order_closed", {"client_order_id": coid, "order_id": f"P{i}", "status": "canceled",
                                                "filled": _d(0), "reason": "requote"})
            written += 3
        if i % 1000 == 0 and written < records:
            journal.append("balances", {"venue": venue, "total": {"USDT": _d(10_000.0, "0.01"), "BTC": _d(0.25)}})
            written += 1
    journal.close()
    files = sorted((directory / runtime_id).glob("*.jsonl"))
    meta = {"records": written, "files": [str(f) for f in files], "bytes": sum(f.stat().st_size for f in files),
            "write_s": time.perf_counter() - t0}
    (directory / "done.json").write_text(json.dumps(meta))
    return meta


def ensure_journal(work: Path, records: int) -> dict:
    directory = work / f"journal-{records}"
    done = directory / "done.json"
    if done.exists():
        return json.loads(done.read_text())
    print(f"writing a journal of {records:,} records to {directory} (not timed)", flush=True)
    return write_journal(directory, records)


def ingest_worker(side: str, files: list[Path]) -> dict:
    if side == "ingest":
        from sofia_pipelines.defs.audit.compute import events_frame

        t0 = time.perf_counter()
        frame = events_frame(files)
        return {"seconds": time.perf_counter() - t0, "records": frame.height}
    t0 = time.perf_counter()
    n = 0
    for f in files:
        with f.open("rb") as fh:
            for line in fh:
                json.loads(line)
                n += 1
    return {"seconds": time.perf_counter() - t0, "records": n}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="50,000 records")
    p.add_argument("--records", type=int)
    p.add_argument("--runs", type=int, help="runs of each side (default 3; quick 2)")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK)
    p.add_argument("--out", type=Path)
    p.add_argument("--worker", choices=["ingest", "parse"], help=argparse.SUPPRESS)
    p.add_argument("--files", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        emit(ingest_worker(args.worker, args.files))
        return 0
    records = args.records or (50_000 if args.quick else DAY_RECORDS)
    runs = args.runs or (2 if args.quick else 3)
    meta = ensure_journal(args.work, records)
    print(f"journal of {meta['records']:,} records, {meta['bytes'] / 2**20:.0f} MiB in {len(meta['files'])} file(s) "
          f"(written at {meta['records'] / meta['write_s']:,.0f} records/s); {runs} run(s) per side")
    out = {"ingest": [], "parse": []}
    peaks = []
    for i in range(runs):
        for side in ("ingest", "parse"):
            res = run_child(worker("bench_journal.py", "--worker", side, "--files", *meta["files"])).check()
            if res.payload["records"] != meta["records"]:
                raise RuntimeError(f"{side} read {res.payload['records']:,} records of {meta['records']:,}")
            out[side].append(res.payload["seconds"])
            if side == "ingest":
                peaks.append(res.peak_rss_mib)
            print(f"  run {i + 1} {side:>6}: {res.payload['seconds']:.2f} s = "
                  f"{meta['records'] / res.payload['seconds']:,.0f} records/s; peak RSS {res.peak_rss_mib:,.0f} MiB",
                  flush=True)
    n = meta["records"]
    cmd = command("bench_journal.py", *(["--quick"] if args.quick else
                                         ([] if records == DAY_RECORDS else ["--records", str(records)])))
    rows = [row(f"sensor ingest: events_frame ({n:,} records)", "sensor ingest", [n / s for s in out["ingest"]],
                "records/s", cmd, baseline=[n / s for s in out["parse"]], baseline_unit="records/s",
                baseline_name="read + json.loads", ratio="baseline/figure",
                target=("figure", ">=", DAY_RECORDS / SENSOR_INTERVAL_S),
                target_text="≥ 16,667 records/s (500k in one 30 s sensor interval)",
                notes=f"{meta['bytes'] / 2**20:.0f} MiB of JSON lines; events_frame median "
                      f"{fmt(sorted(out['ingest'])[runs // 2])} s; ratio = how many times slower than the bare parse; "
                      f"peak RSS {fmt(max(peaks))} MiB")]
    path = args.out or RESULTS_DIR / ("quick" if args.quick else "") / "journal.json"
    write_result(path, "journal", rows, args.quick, {"records": n, "bytes": meta["bytes"], "seconds": out,
                                                      "peak_rss_mib": peaks})
    return 0


if __name__ == "__main__":
    sys.exit(main())
