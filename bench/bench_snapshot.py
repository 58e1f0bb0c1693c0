"""Snapshot loading: `sofia_runtime.snapshot.load_current` (manifest, sha256 of every file, row counts, schemas) on
the serving snapshot bench_graph.py published — what every runtime start and snapshot switch pays — against
decoding the same Parquet files with polars and nothing else.

    .venv/bin/python bench/bench_snapshot.py [--quick]

No target of its own: it is part of the runtime's cold start (target < 1 s), whose share it shows.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_graph import ensure_graph_data  # noqa: E402
from common import DEFAULT_WORK, RESULTS_DIR, command, emit, fmt, row, run_child, worker, write_result  # noqa: E402


def load_worker(serving: Path, repeat: int) -> dict:
    t0 = time.perf_counter()
    import polars as pl

    from sofia_runtime.snapshot import current_id, load_current

    import_s = time.perf_counter() - t0
    files = sorted((serving / current_id(serving)).glob("*.parquet"))
    loads, reads = [], []
    for _ in range(repeat):  # interleaved: the page cache and the machine's load hit both alike
        t0 = time.perf_counter()
        snap = load_current(serving)
        loads.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        frames = [pl.read_parquet(f) for f in files]
        reads.append(time.perf_counter() - t0)
    return {"import_s": import_s, "load_s": loads, "read_s": reads, "tables": len(snap.tables),
            "rows": sum(df.height for df in frames), "bytes": sum(f.stat().st_size for f in files),
            "snapshot_id": snap.snapshot_id}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="5 loads instead of 15")
    p.add_argument("--runs", type=int)
    p.add_argument("--work", type=Path, default=DEFAULT_WORK)
    p.add_argument("--out", type=Path)
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    runs = args.runs or (5 if args.quick else 15)
    if args.worker:
        emit(load_worker(args.worker, runs))
        return 0
    serving = ensure_graph_data(args.work) / "serving"
    res = run_child(worker("bench_snapshot.py", "--worker", serving, "--runs", runs)).check()
    r = res.payload
    print(f"snapshot {r['snapshot_id']}: {r['tables']} tables, {r['rows']:,} rows, {r['bytes'] / 2**20:.1f} MiB; "
          f"load_current median {sorted(r['load_s'])[runs // 2] * 1000:.0f} ms, plain read "
          f"{sorted(r['read_s'])[runs // 2] * 1000:.0f} ms; peak RSS {res.peak_rss_mib:.0f} MiB")
    cmd = command("bench_snapshot.py", *(["--quick"] if args.quick else []))
    rows = [row("snapshot load: load_current", "snapshot load", r["load_s"], "s", cmd, baseline=r["read_s"],
                baseline_unit="s", baseline_name="plain pl.read_parquet", ratio="figure/baseline",
                notes=f"{r['tables']} tables, {r['rows']:,} rows, {r['bytes'] / 2**20:.1f} MiB (warm page cache); "
                      f"load_current hashes every file and decodes the serving tables, but checks the replay's books "
                      f"and trades from their footers and leaves them in their files (the replay reads them once); "
                      f"the baseline decodes every file; importing polars + the module "
                      f"{fmt(r['import_s'])} s more; peak RSS {fmt(res.peak_rss_mib)} MiB")]
    out = args.out or RESULTS_DIR / ("quick" if args.quick else "") / "snapshot.json"
    write_result(out, "snapshot", rows, args.quick, {**r, "peak_rss_mib": res.peak_rss_mib})
    return 0


if __name__ == "__main__":
    sys.exit(main())
