"""Scale data: the embedded simulator writing days × symbols × 4 venues of 1-minute candles, 10-second books, trades,
latency probes and USD/TRY to Parquet, streaming a week at a time
(`sofia_runtime.simulator.stream_to_parquet`). Figure: rows written per second; target: peak
resident memory < 2 GiB whatever the span. Each run is its own process, measured with wait4.

    .venv/bin/python bench/bench_data.py            # 90 days × 20 symbols (about 8 GB of Parquet, minutes)
    .venv/bin/python bench/bench_data.py --quick    # 3 days × 5 symbols

The last run's files stay in <work>/scale/<days>d-<symbols>s/ for bench_analytics.py.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (DEFAULT_WORK, RESULTS_DIR, command, emit, fmt, row, run_child, summarize,  # noqa: E402
                    worker, write_result)

TABLES = ("candles", "books", "trades", "latency", "fx")  # what the analytics benchmark reads
FULL, QUICK = (90, 20), (3, 5)
PEAK_LIMIT_MIB = 2048


def scale_dir(work: Path, days: int, symbols: int) -> Path:
    return work / "scale" / f"{days}d-{symbols}s"


def write_scale_data(dest: Path, days: int, symbols: int, progress: bool = True) -> dict:
    """Stream the data to `dest` (replaced); rows per table and seconds."""
    from sofia_runtime.simulator import stream_to_parquet

    if dest.exists():
        shutil.rmtree(dest)
    rows = dict.fromkeys(TABLES, 0)
    t0 = time.perf_counter()
    for i, (day, counts) in enumerate(stream_to_parquet(dest, days, n_bases=symbols, tables=TABLES), start=1):
        for t, n in counts.items():
            rows[t] += n
        if progress and (i % 7 == 0 or i == days):
            done = sum(rows.values())
            print(f"  {day}: {done:,} rows, {done / (time.perf_counter() - t0):,.0f} rows/s", flush=True)
    seconds = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in dest.rglob("*.parquet"))
    (dest / "done.json").write_text(json.dumps({"days": days, "symbols": symbols, "rows": rows, "bytes": size}))
    return {"seconds": seconds, "rows": rows, "bytes": size}


def ensure_scale_data(work: Path, days: int, symbols: int) -> Path:
    """The scale data of that size, written now (untimed) if an earlier run did not leave it."""
    dest = scale_dir(work, days, symbols)
    if not (dest / "done.json").exists():
        print(f"no scale data in {dest}: writing {days} days × {symbols} symbols first (not timed)", flush=True)
        write_scale_data(dest, days, symbols)
    return dest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=f"{QUICK[0]} days × {QUICK[1]} symbols")
    p.add_argument("--days", type=int)
    p.add_argument("--symbols", type=int)
    p.add_argument("--runs", type=int, help="runs (default 3, quick 2)")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK, help="where the data goes (default %(default)s)")
    p.add_argument("--out", type=Path)
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    days = args.days or (QUICK if args.quick else FULL)[0]
    symbols = args.symbols or (QUICK if args.quick else FULL)[1]
    if args.worker:
        emit(write_scale_data(args.worker, days, symbols))
        return 0

    runs = args.runs or (2 if args.quick else 3)
    dest = scale_dir(args.work, days, symbols)
    print(f"scale data: {days} days × {symbols} symbols × 4 venues, tables {', '.join(TABLES)}; {runs} run(s)")
    rates, peaks, seconds, last = [], [], [], None
    for i in range(runs):
        res = run_child(worker("bench_data.py", "--worker", dest, "--days", days, "--symbols", symbols),
                        echo=i == 0).check()
        last = res.payload
        total = sum(last["rows"].values())
        rates.append(total / last["seconds"])
        peaks.append(res.peak_rss_mib)
        seconds.append(last["seconds"])
        print(f"  run {i + 1}: {total:,} rows in {last['seconds']:.1f} s = {rates[-1]:,.0f} rows/s, "
              f"peak RSS {res.peak_rss_mib:,.0f} MiB", flush=True)
    total = sum(last["rows"].values())
    per_table = ", ".join(f"{t} {n:,}" for t, n in last["rows"].items())
    s = summarize(seconds)
    args_text = "--quick" if args.quick and not (args.days or args.symbols) else f"--days {days} --symbols {symbols}"
    cmd = command("bench_data.py", *([args_text] if args_text != f"--days {FULL[0]} --symbols {FULL[1]}" else []))
    group = "scale data"
    size = f"{days} days × {symbols} symbols × 4 venues"
    rows = [
        row(f"{group}: write rate ({size})", group, rates, "rows/s", cmd,
            notes=f"{total:,} rows ({per_table}) in {fmt(s['median'])} s ({fmt(s['min'])}–{fmt(s['max'])}); "
                  f"{last['bytes'] / 2**30:.2f} GiB of Parquet; simulator + Parquet writer, one process"),
        row(f"{group}: peak memory ({size})", group, peaks, "MiB", cmd, target=("figure", "<", PEAK_LIMIT_MIB),
            target_text="< 2 GiB",
            notes="resident set of the writing process (wait4 ru_maxrss); bounded by streaming a week at a time"),
    ]
    out = args.out or RESULTS_DIR / ("quick" if args.quick else "") / "data.json"
    write_result(out, "data", rows, args.quick, {"days": days, "symbols": symbols, "rows": last["rows"],
                                                  "bytes": last["bytes"], "seconds": seconds, "peak_rss_mib": peaks,
                                                  "dir": str(dest)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
