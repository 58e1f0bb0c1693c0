"""Runtime benchmarks: decisions per second and decision-to-order latency over a replayed day, and the journal's
durable records per second against fsyncing the same bytes without hashing or JSON.

    python bench/bench_runtime.py [--quick] [--data DIR]

The decision figures come from a real `sofia-runtime run --speed 0` process on DIR's CURRENT snapshot (`make
demo` leaves one in data/): decisions are counted from its journal, latency is each order's
`decision_to_ack_us` (from the start of the decision to the venue's acknowledgement, through gate, limits, the
journal's fsync of the order record and the paper venue). Writes bench/results/runtime.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sofia_runtime.journal import Journal, journal_files, read_records  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def replay_day(data: Path, strategy: str, duration: str | None) -> dict:
    """One `sofia-runtime run` at full speed in a scratch copy of DATA (its serving snapshot only)."""
    with tempfile.TemporaryDirectory(prefix="sofia-bench-") as tmp:
        scratch = Path(tmp)
        shutil.copytree(data / "serving", scratch / "serving")
        cmd = [sys.executable, "-m", "sofia_runtime.cli", "run", "--strategy", strategy, "--speed", "0", "--port", "0"]
        if duration:
            cmd += ["--duration", duration]
        env = {**os.environ, "SOFIA_DATA_DIR": str(scratch)}
        started = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"runtime failed: {proc.stderr[-2000:]}")
        records = [rec for _, _, rec in read_records(journal_files(scratch / "audit" / f"{strategy}-paper"))]
    decisions = [r for r in records if r["kind"] == "decision"]
    acks = [r["payload"]["decision_to_ack_us"] for r in records if r["kind"] == "order_ack"
            and "decision_to_ack_us" in r["payload"]]
    first = datetime.fromisoformat(decisions[0]["ts"])
    last = datetime.fromisoformat(next(r for r in reversed(records) if r["kind"] == "stop")["ts"])
    seconds = (last - first).total_seconds()
    market_hours = (decisions[-1]["payload"]["market_ts"] - decisions[0]["payload"]["market_ts"]) / 3.6e6
    return {"decisions": len(decisions), "seconds": seconds, "decisions_per_s": len(decisions) / seconds,
            "orders": len(acks), "market_hours": market_hours, "process_wall_s": wall,
            "decision_to_order_p50_ms": percentile(acks, 0.50) / 1000 if acks else None,
            "decision_to_order_p99_ms": percentile(acks, 0.99) / 1000 if acks else None,
            "decision_only_p99_us": percentile([r["payload"]["decision_us"] for r in decisions], 0.99)}


def _durable_producers(n_threads: int, per_thread: int, write_one) -> float:
    """Records per second when `n_threads` producers each make `per_thread` records durable one by one."""
    barrier = threading.Barrier(n_threads + 1)

    def produce(k: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            write_one(k, i)

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    return n_threads * per_thread / (time.perf_counter() - started)


def journal_throughput(directory: Path, n_threads: int, per_thread: int) -> dict:
    """The journal (canonical JSON, sha256 chain, one fsync covering every record written before it) against the
    same bytes appended and fsynced the same way with no hashing or JSON."""
    payload = {"client_order_id": "sf000000-1-0", "venue": "binance", "symbol": "BTC/USDT", "side": "buy",
               "type": "limit", "price": Decimal("68000.12"), "amount": Decimal("0.01234"), "post_only": True,
               "market_ts": 1793404800000}
    journal = Journal(directory / "journal", "bench")
    ours = _durable_producers(n_threads, per_thread, lambda k, i: journal.append_durable("order", payload))
    journal.close()
    sample = (journal.dir / next(iter(os.listdir(journal.dir)))).read_bytes().splitlines()[0] + b"\n"

    lock, state = threading.Lock(), {"written": 0, "synced": 0}
    raw = (directory / "raw.bin").open("ab")

    def raw_durable(k: int, i: int) -> None:
        with lock:
            raw.write(sample)
            state["written"] += 1
            mine = state["written"]
            if state["synced"] < mine:  # the same group commit: one fsync covers every record before it
                raw.flush()
                os.fsync(raw.fileno())
                state["synced"] = state["written"]

    baseline = _durable_producers(n_threads, per_thread, raw_durable)
    raw.close()
    return {"records_per_s": ours, "baseline_records_per_s": baseline, "ratio": ours / baseline,
            "fsyncs": journal.fsyncs, "records": n_threads * per_thread, "record_bytes": len(sample)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data", default=os.environ.get("SOFIA_DATA_DIR", str(ROOT / "data")))
    parser.add_argument("--runs", type=int, default=None)
    args = parser.parse_args()
    data = Path(args.data)
    if not (data / "serving" / "CURRENT").exists():
        print(f"no serving snapshot under {data}: run `make demo` (or `sofia demo --partitions 1`) first")
        return 2
    runs = args.runs or (1 if args.quick else 3)
    duration = "20s" if args.quick else None
    replays = [replay_day(data, "mm_lite", duration) for _ in range(runs)]
    with tempfile.TemporaryDirectory(prefix="sofia-bench-journal-") as tmp:
        journals = [journal_throughput(Path(tmp) / str(i), 4, 500 if args.quick else 3000) for i in range(runs)]

    def row(name, values, unit, target, passed, command, **extra):
        return {"name": name, "figure": statistics.median(values), "min": min(values), "max": max(values),
                "runs": len(values), "unit": unit, "target": target, "passed": passed, "command": command, **extra}

    dps = [r["decisions_per_s"] for r in replays]
    p99 = [r["decision_to_order_p99_ms"] for r in replays if r["decision_to_order_p99_ms"] is not None]
    p50 = [r["decision_to_order_p50_ms"] for r in replays if r["decision_to_order_p50_ms"] is not None]
    ratio = [j["ratio"] for j in journals]
    cmd = "python bench/bench_runtime.py" + (" --quick" if args.quick else "")
    rows = [
        row("runtime decisions", dps, "decisions/s", ">= 50,000 decisions/s", statistics.median(dps) >= 50_000, cmd,
            notes=f"mm_lite over {statistics.median(r['market_hours'] for r in replays):.1f} market hours, "
                  f"{statistics.median(r['decisions'] for r in replays):,.0f} decisions per run"),
        row("decision-to-order p99", p99, "ms", "<= 1 ms", bool(p99) and statistics.median(p99) <= 1.0, cmd,
            notes=f"p50 {statistics.median(p50):.3f} ms; includes the fsync of the order record" if p50 else ""),
        row("journal durable records", [j["records_per_s"] for j in journals], "records/s",
            ">= 0.5x the baseline", statistics.median(ratio) >= 0.5, cmd,
            baseline=statistics.median(j["baseline_records_per_s"] for j in journals), baseline_unit="records/s",
            ratio=statistics.median(ratio),
            notes="4 producers, each record durable before the next; baseline: the same bytes, no JSON or hash"),
    ]
    out = ROOT / "bench" / "results" / "runtime.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "replays": replays, "journal": journals}, indent=2, default=str))
    for r in rows:
        extra = f" (baseline {r['baseline']:,.0f}, ratio {r['ratio']:.2f})" if "baseline" in r else ""
        print(f"{r['name']}: {r['figure']:,.3f} {r['unit']} [min {r['min']:,.3f}, max {r['max']:,.3f}]{extra} "
              f"target {r['target']}: {'PASS' if r['passed'] else 'MISS'}  {r.get('notes', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
