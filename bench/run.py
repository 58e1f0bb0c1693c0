"""The benchmark suite: runs every bench/bench_*.py as its own process (so each one's memory is its own), collects
their rows (bench/common.py's format) and writes bench/results.json and bench/RESULTS.md.

    .venv/bin/python bench/run.py                  # full sizes (make bench); tens of minutes
    .venv/bin/python bench/run.py --quick          # small sizes, under two minutes (make bench-quick);
                                                   # writes bench/results/quick/{results.json,RESULTS.md}
    .venv/bin/python bench/run.py --only graph,footprint   # rerun some, keep the other rows of the last run

Scripts written by others (bench_runtime.py, bench_risk.py, any new bench_*.py) run when present; they get
--quick, --work and --out when their source mentions those options. In quick mode a script without --quick is
not run: its last full result is shown, marked as such.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (BENCH, DEFAULT_WORK, RESULTS_DIR, ROOT, fmt, load_rows, machine_info,  # noqa: E402
                    machine_markdown, now_iso, run_child)

# (name, script, owned here); the order matters: graph publishes the snapshot footprint and snapshot load use
SUITE = [("data", "bench_data.py"), ("analytics", "bench_analytics.py"), ("graph", "bench_graph.py"),
         ("footprint", "bench_footprint.py"), ("snapshot", "bench_snapshot.py"), ("journal", "bench_journal.py"),
         ("runtime", "bench_runtime.py"), ("risk", "bench_risk.py")]
QUICK_BUDGET_S = 120


def suite() -> list[tuple[str, str]]:
    known = {script for _, script in SUITE}
    extra = sorted(p.name for p in BENCH.glob("bench_*.py") if p.name not in known)
    return SUITE + [(name.removeprefix("bench_").removesuffix(".py"), name) for name in extra]


def supports(script: Path, option: str) -> bool:
    return option in script.read_text()


def result_path(name: str, quick: bool) -> Path:
    return RESULTS_DIR / ("quick" if quick else "") / f"{name}.json"


def run_one(name: str, script: str, quick: bool, work: Path, timeout: float, log: Path, collect: bool = False) -> dict:
    path = BENCH / script
    if collect:
        found = result_path(name, quick)
        found = found if found.exists() else result_path(name, False)
        if found.exists():
            return {"status": "collected", "file": found, "note": "not re-run (--collect)"}
        return {"status": "absent", "note": f"no result file for {name}"}
    if not path.exists():
        return {"status": "absent", "note": f"bench/{script} does not exist (yet)"}
    cmd = [sys.executable, str(path)]
    out = result_path(name, quick)
    if quick:
        if not supports(path, "--quick"):
            full = result_path(name, False)
            if full.exists():
                return {"status": "not re-run", "file": full,
                        "note": f"bench/{script} has no --quick: its last full result is shown"}
            return {"status": "skipped", "note": f"bench/{script} has no --quick and no full result yet"}
        cmd.append("--quick")
    if supports(path, "--work"):
        cmd += ["--work", str(work)]
    elif supports(path, "--data"):  # a script that wants a data folder with a serving snapshot
        from bench_graph import ensure_graph_data

        cmd += ["--data", str(ensure_graph_data(work))]
    own_out = supports(path, "--out")
    if own_out:
        cmd += ["--out", str(out)]
    written = out if own_out else result_path(name, False)  # where a script without --out writes by itself
    # a quick run of such a script must not replace its full result: keep it and put it back afterwards
    kept = written.read_bytes() if quick and not own_out and written.exists() else None
    before = written.stat().st_mtime if written.exists() else None
    print(f"\n== {name}: {' '.join(Path(c).name if c == sys.executable else c for c in cmd)}", flush=True)
    try:
        res = run_child(cmd, timeout=timeout, echo=True, log=log)
        fresh = written.exists() and written.stat().st_mtime != before
        if quick and not own_out and fresh:
            out.parent.mkdir(parents=True, exist_ok=True)
            written.replace(out)
            written = out
    finally:
        if kept is not None:
            result_path(name, False).write_bytes(kept)
    info = {"wall_s": res.wall_s, "cpu_s": res.cpu_s, "peak_rss_mib": res.peak_rss_mib, "returncode": res.returncode,
            "command": " ".join(cmd)}
    if res.returncode != 0:
        tail = "\n".join((res.stderr or res.stdout).strip().splitlines()[-6:])
        return {**info, "status": "failed", "note": f"exit {res.returncode}: {tail}"}
    if not fresh:
        return {**info, "status": "failed", "note": f"finished without writing {written.relative_to(ROOT)}"}
    return {**info, "status": "ran", "file": written}


def failure_row(name: str, script: str, note: str) -> dict:
    return {"name": f"{name}: did not run", "group": name, "figure": None, "unit": "", "min": None, "max": None,
            "runs": 0, "baseline": None, "baseline_unit": None, "baseline_name": None, "ratio": None, "ratio_of": None,
            "target": None, "passed": False, "command": f".venv/bin/python bench/{script}", "notes": note}


def _cell(v: str) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _ratio(r: dict) -> str:
    if r.get("ratio") is None:
        return "—"
    label = {"baseline/figure": " (baseline ÷ figure)", "figure/baseline": " (figure ÷ baseline)"}
    return f"{fmt(r['ratio'])}×{label.get(r.get('ratio_of'), '')}"


def markdown(doc: dict) -> str:
    mode = doc["mode"]
    took = ("assembled from the benchmarks' result files (`--collect`): see when each ran below" if doc.get("collected")
            else f"the suite took {doc['suite_wall_s'] / 60:.1f} min")
    lines = [
        "# Benchmarks", "",
        f"Written by `bench/run.py{' --quick' if mode == 'quick' else ''}` "
        f"(`make bench{'-quick' if mode == 'quick' else ''}`) on {doc['created_at']}, {mode} sizes; {took}. "
        f"Each benchmark ran as its own process; a figure is the median of its runs (min – max beside it). "
        f"Regenerate, don't edit.", "",
        "| what | figure | min – max (runs) | baseline in the same run | ratio | target | result | command |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        figure = "—" if r["figure"] is None else f"{fmt(r['figure'])} {r['unit']}"
        spread = "—" if r["figure"] is None else f"{fmt(r['min'])} – {fmt(r['max'])} ({r['runs']})"
        base = "—" if r.get("baseline") is None else \
            f"{fmt(r['baseline'])} {r.get('baseline_unit') or ''} ({r.get('baseline_name') or 'baseline'})"
        result = {True: "pass", False: "**FAIL**", None: "—"}[r.get("passed")]
        lines.append("| " + " | ".join(_cell(x) for x in (r["name"], figure, spread, base, _ratio(r), r.get("target") or "—",
                                                            result, f"`{r['command']}`")) + " |")
    lines += ["", "## Notes", ""]
    lines += [f"- **{_cell(r['name'])}**: {_cell(r['notes'])}" for r in doc["rows"] if r.get("notes")]
    lines += ["", "## Benchmarks run", "",
              "| benchmark | status | result of | load average at its end | wall | CPU (user + sys) | peak RSS of its "
              "processes | note |", "|---|---|---|---|---|---|---|---|"]
    for name, b in doc["benchmarks"].items():
        wall = f"{b['wall_s']:.0f} s" if b.get("wall_s") is not None else "—"
        cpu = f"{b['cpu_s']:.0f} s" if b.get("cpu_s") is not None else "—"
        peak = f"{b['peak_rss_mib']:,.0f} MiB" if b.get("peak_rss_mib") else "—"
        load = ", ".join(map(str, b["load_at_end"])) if b.get("load_at_end") else "—"
        lines.append(f"| {name} | {b['status']} | {b.get('created_at') or '—'} | {load} | {wall} | {cpu} | {peak} | "
                     f"{_cell(b.get('note', ''))} |")
    lines += ["", "## Machine", "", machine_markdown(doc["machine"]), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes; the whole suite in under two minutes")
    p.add_argument("--only", help="comma-separated benchmark names (" + ", ".join(n for n, _ in suite()) + ")")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK, help="scratch space for data (default %(default)s)")
    p.add_argument("--timeout", type=float, help="per benchmark, seconds (default 3600; quick 300)")
    p.add_argument("--collect", action="store_true",
                   help="run nothing: rebuild the report from the result files in bench/results/ (each script's own "
                        "output, e.g. after running some scripts by hand)")
    args = p.parse_args(argv)
    quick = args.quick
    chosen = suite()
    if args.only:
        wanted = {n.strip() for n in args.only.split(",") if n.strip()}
        unknown = wanted - {n for n, _ in chosen}
        if unknown:
            p.error(f"--only: unknown benchmark(s) {sorted(unknown)}; known: {[n for n, _ in chosen]}")
        chosen = [(n, s) for n, s in chosen if n in wanted]
    timeout = args.timeout or (300 if quick else 3600)
    out_dir = RESULTS_DIR / "quick" if quick else BENCH
    json_path, md_path = out_dir / "results.json", out_dir / "RESULTS.md"
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / "logs" / f"run-{time.strftime('%Y%m%dT%H%M%S')}.log"

    machine = machine_info()
    started = time.perf_counter()
    print(f"benchmark suite ({'quick' if quick else 'full'}): {', '.join(n for n, _ in chosen)}; scratch {args.work}; "
          f"output of every process in {log}", flush=True)
    previous_doc = json.loads(json_path.read_text()) if json_path.exists() else None
    benchmarks, rows_by_name = {}, {}
    for name, script in chosen:
        info = run_one(name, script, quick, args.work, timeout, log, args.collect)
        rows = []
        if "file" in info:
            try:
                rows, data = load_rows(info["file"])
                info["created_at"] = data.get("created_at")
                info["load_at_end"] = (data.get("machine") or {}).get("load_average_1_5_15")
                if info["status"] == "collected":  # what the run that wrote the file measured of itself, if known
                    ran = (previous_doc or {}).get("benchmarks", {}).get(name, {})
                    if ran.get("created_at") == info["created_at"]:
                        info.update({k: ran[k] for k in ("wall_s", "cpu_s", "peak_rss_mib") if ran.get(k) is not None})
                if info["status"] == "not re-run":
                    rows = [{**r, "notes": f"[not re-run in quick mode; full result of {data.get('created_at', '?')}] "
                                           + (r.get("notes") or "")} for r in rows]
            except (ValueError, KeyError, json.JSONDecodeError) as exc:
                info.update(status="failed", note=str(exc))
            info["file"] = str(Path(info["file"]).relative_to(ROOT))
        if info["status"] == "failed":
            rows = [failure_row(name, script, info["note"])]
            print(f"!! {name} failed: {info['note']}", flush=True)
        elif info["status"] in ("absent", "skipped"):
            print(f"-- {name}: {info['note']}", flush=True)
        benchmarks[name] = info
        rows_by_name[name] = rows
    suite_wall = time.perf_counter() - started

    previous = previous_doc if args.only else None
    if previous:  # keep the rows of benchmarks not rerun
        for name, info in previous.get("benchmarks", {}).items():
            if name not in benchmarks:
                benchmarks[name] = info
                rows_by_name[name] = [r for r in previous["rows"] if r.get("benchmark") == name]
    order = [n for n, _ in suite()]
    benchmarks = dict(sorted(benchmarks.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99))
    all_rows = [{**r, "benchmark": name} for name in benchmarks for r in rows_by_name.get(name, [])]
    machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    doc = {"created_at": now_iso(), "mode": "quick" if quick else "full", "collected": args.collect,
           "suite_wall_s": suite_wall, "machine": machine,
           "benchmarks": benchmarks, "rows": all_rows}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    md_path.write_text(markdown(doc))

    text = markdown(doc).splitlines()
    head = next(i for i, line in enumerate(text) if line.startswith("| what |"))
    print("\n" + "\n".join(text[head:head + 2 + len(all_rows)]))
    print(f"\nwrote {json_path.relative_to(ROOT)} and {md_path.relative_to(ROOT)}; suite wall time {suite_wall:.0f} s")
    failed = [r["name"] for r in all_rows if r.get("passed") is False]
    if quick and not args.only and suite_wall > QUICK_BUDGET_S:
        print(f"note: the quick suite took {suite_wall:.0f} s, over its {QUICK_BUDGET_S} s budget")
    if failed:
        print(f"targets missed or benchmarks failed: {len(failed)}: " + "; ".join(failed))
    broken = [n for n, b in benchmarks.items() if b["status"] == "failed"]
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
