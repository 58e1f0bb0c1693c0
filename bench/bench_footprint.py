"""Runtime footprint: `sofia-runtime run` (mm_lite, paper) as a subprocess on the serving snapshot that
bench_graph.py published.

- cold start: Popen → first 200 of /api/health (the snapshot validated, the journal opened, the replay built),
  polled every 2 ms; each start has its own runtime id, so its journal is new;
- resident memory over a replay of at least an hour of market time (at high speed), sampled with psutil twice
  a second next to the runtime's market time (/api/dev/status): the resident set after warm-up (the first 10 %
  of the market span) against the end (the last 10 %), and the peak.

    .venv/bin/python bench/bench_footprint.py            # 5 starts; 1 h of market time at 30× (2 min)
    .venv/bin/python bench/bench_footprint.py --quick    # 3 starts; 10 min of market time at 60× (10 s)

Targets: start < 1 s; memory flat after warm-up (growth ≤ 10 MiB) and < 200 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_graph import ensure_graph_data  # noqa: E402
from common import (DEFAULT_WORK, RESULTS_DIR, RssSampler, command, fmt, free_port, row,  # noqa: E402
                    write_result)

START_LIMIT_S, RSS_LIMIT_MIB, GROWTH_LIMIT_MIB = 1.0, 200.0, 10.0
RUNTIME = Path(sys.executable).parent / "sofia-runtime"


def runtime_env(data: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOFIA_RUNTIME_")}
    env.update(SOFIA_DATA_DIR=str(data))
    env.pop("SOFIA_WAREHOUSE", None)
    return env


def footprint_data(work: Path) -> Path:
    """A data folder of its own (journals, paper venues, locks) whose serving/ is the graph benchmark's."""
    serving = ensure_graph_data(work) / "serving"
    data = work / "footprint-data"
    data.mkdir(parents=True, exist_ok=True)
    link = data / "serving"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(serving, target_is_directory=True)
    return data


def get(port: int, path: str, timeout: float = 1.0) -> tuple[int, dict | None]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


def start_runtime(data: Path, runtime_id: str, speed: float, port: int) -> subprocess.Popen:
    return subprocess.Popen([str(RUNTIME), "run", "--strategy", "mm_lite", "--mode", "paper", "--speed", str(speed),
                             "--port", str(port), "--runtime-id", runtime_id],
                            env=runtime_env(data), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop_runtime(proc: subprocess.Popen, what: str) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise RuntimeError(f"{what}: the runtime did not stop within 60 s of SIGTERM") from None
    if proc.returncode not in (0, -signal.SIGTERM):
        raise RuntimeError(f"{what}: runtime exited with {proc.returncode}: {err.decode(errors='replace')[-2000:]}")


def cold_start(data: Path, runtime_id: str, timeout: float = 60.0) -> dict:
    port = free_port()
    t0 = time.perf_counter()
    proc = start_runtime(data, runtime_id, 1.0, port)
    first_answer = None
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"runtime {runtime_id} exited with {proc.returncode} before it was healthy: "
                                   f"{proc.stderr.read().decode(errors='replace')[-2000:]}")
            try:
                status, _ = get(port, "/api/health", timeout=0.5)
                first_answer = first_answer or time.perf_counter() - t0
                if status == 200:
                    return {"healthy_s": time.perf_counter() - t0, "first_answer_s": first_answer}
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"runtime {runtime_id} not healthy within {timeout:g} s")
            time.sleep(0.002)
    finally:
        stop_runtime(proc, f"cold start {runtime_id}")


def market_seconds(status: dict | None) -> float | None:
    if not status or not status.get("market_time"):
        return None
    return datetime.fromisoformat(status["market_time"].replace("Z", "+00:00")).timestamp()


def soak(data: Path, runtime_id: str, market_span_s: float, speed: float, interval: float = 0.5) -> dict:
    """Replay until `market_span_s` of market time has passed (or the day ends), sampling RSS and market time."""
    port = free_port()
    proc = start_runtime(data, runtime_id, speed, port)
    state = {"first": None, "last": None, "status": None}

    def on_sample(_t, _rss):
        try:
            _, st = get(port, "/api/dev/status", timeout=1.0)
        except (urllib.error.URLError, ConnectionError, OSError):
            return {"market_s": None}
        m = market_seconds(st)
        if m is not None:
            state["first"] = state["first"] if state["first"] is not None else m
            state["last"], state["status"] = m, st
        return {"market_s": None if m is None else round(m - state["first"], 1)}

    sampler = RssSampler(proc.pid, interval, on_sample)
    t0 = time.perf_counter()
    wall_limit = market_span_s / speed * 3 + 120
    try:
        while proc.poll() is None:
            if state["last"] is not None and state["last"] - state["first"] >= market_span_s:
                break
            if time.perf_counter() - t0 > wall_limit:
                raise RuntimeError(f"soak: {market_span_s:g} s of market time did not pass within {wall_limit:.0f} s")
            time.sleep(0.2)
    finally:
        samples = sampler.stop()
        stop_runtime(proc, f"soak {runtime_id}")
    ended_early = proc.returncode is not None and state["last"] is not None and \
        state["last"] - state["first"] < market_span_s
    timed = [s for s in samples if s.get("market_s") is not None]
    if len(timed) < 10:
        raise RuntimeError(f"soak: only {len(timed)} samples with a market time")
    span = timed[-1]["market_s"]
    warm = [s["rss_mib"] for s in timed if 0.1 * span <= s["market_s"] <= 0.2 * span]
    end = [s["rss_mib"] for s in timed if s["market_s"] >= 0.9 * span]
    after = [s for s in timed if s["market_s"] >= 0.1 * span]
    hours = [s["market_s"] / 3600 for s in after]
    slope = statistics.linear_regression(hours, [s["rss_mib"] for s in after]).slope if len(after) > 2 else 0.0
    st = state["status"] or {}
    return {"market_span_s": span, "wall_s": time.perf_counter() - t0, "speed": speed, "samples": samples,
            "rss_first_mib": timed[0]["rss_mib"], "rss_warm_mib": statistics.median(warm),
            "rss_end_mib": statistics.median(end), "rss_peak_mib": max(s["rss_mib"] for s in samples),
            "slope_mib_per_market_h": slope, "counters": st.get("counters", {}), "ended_early": ended_early}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 starts; 10 min of market time")
    p.add_argument("--runs", type=int, help="cold starts (default 5; quick 3)")
    p.add_argument("--market-minutes", type=float, help="market time to replay (default 60; quick 10)")
    p.add_argument("--speed", type=float, help="replay speed (default 30; quick 60)")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    runs = args.runs or (3 if args.quick else 5)
    minutes = args.market_minutes or (10 if args.quick else 60)
    speed = args.speed or (60 if args.quick else 30)
    data = footprint_data(args.work)
    stamp = datetime.now().strftime("%H%M%S")
    cmd = command("bench_footprint.py", *(["--quick"] if args.quick else []))
    group = "runtime footprint"

    print(f"runtime footprint on {data / 'serving'}: {runs} cold start(s)")
    starts = []
    for i in range(runs):
        s = cold_start(data, f"bench-start-{stamp}-{i}")
        starts.append(s)
        print(f"  start {i + 1}: healthy after {s['healthy_s'] * 1000:.0f} ms (first answer {s['first_answer_s'] * 1000:.0f} ms)",
              flush=True)
    print(f"  replaying {minutes:g} min of market time at {speed:g}×, sampling RSS", flush=True)
    s = soak(data, f"bench-soak-{stamp}", minutes * 60, speed, interval=0.25 if args.quick else 0.5)
    c = s["counters"]
    print(f"  {s['market_span_s'] / 60:.1f} market min in {s['wall_s']:.0f} s: RSS first {s['rss_first_mib']:.0f}, "
          f"after warm-up {s['rss_warm_mib']:.0f}, end {s['rss_end_mib']:.0f}, peak {s['rss_peak_mib']:.0f} MiB; "
          f"{c.get('decisions', 0):,} decisions, {c.get('orders', 0):,} orders", flush=True)
    growth = s["rss_end_mib"] - s["rss_warm_mib"]
    span = f"{s['market_span_s'] / 60:.0f} min of market time"
    counters = ", ".join(f"{k} {v:,}" for k, v in c.items() if isinstance(v, int) and v)
    rows = [
        row(f"{group}: cold start to healthy", group, [x["healthy_s"] for x in starts], "s", cmd,
            target=("figure", "<", START_LIMIT_S), target_text="< 1 s",
            notes=f"Popen of sofia-runtime run (mm_lite, paper) → first 200 of /api/health; the port answers (503 "
                  f"while starting) after {fmt(statistics.median(x['first_answer_s'] for x in starts))} s (median)"),
        row(f"{group}: resident memory after {span}", group, s["rss_end_mib"], "MiB", cmd,
            target=("figure", "<", RSS_LIMIT_MIB), target_text="< 200 MiB",
            notes=f"median RSS over the last 10 % of the replay at {speed:g}× ({s['wall_s']:.0f} s wall); at the first "
                  f"market time {fmt(s['rss_first_mib'])} MiB, peak (start-up) {fmt(s['rss_peak_mib'])} MiB; {counters}"
                  + ("; the replayed day ended before the span" if s["ended_early"] else "")),
        row(f"{group}: memory growth after warm-up ({span})", group, growth, "MiB", cmd,
            target=("figure", "<=", GROWTH_LIMIT_MIB), target_text="flat: ≤ 10 MiB",
            notes=f"median RSS of the last 10 % of the market span minus that of 10–20 % ({fmt(s['rss_warm_mib'])} MiB); "
                  f"least-squares slope after warm-up {fmt(s['slope_mib_per_market_h'])} MiB per market hour"),
    ]
    out = args.out or RESULTS_DIR / ("quick" if args.quick else "") / "footprint.json"
    write_result(out, "footprint", rows, args.quick, {"starts": starts, "soak": s})
    return 0


if __name__ == "__main__":
    sys.exit(main())
