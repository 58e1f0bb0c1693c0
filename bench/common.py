"""Shared helpers of the benchmark suite: child processes measured one by one (wall, CPU, peak resident memory),
median/min/max of repeated runs, machine details, and the one row format every `bench/bench_*.py` writes.

Row format (one figure against one target; `bench/run.py` turns rows into bench/RESULTS.md):

    {"name": "scale data: write rate",   # unique in the suite; "<group>: <what>"
     "group": "scale data",              # the issue table's row the figure belongs to
     "figure": 1.23e6, "unit": "rows/s", # the median of `runs` runs
     "min": 1.1e6, "max": 1.3e6, "runs": 3,
     "baseline": 4.5, "baseline_unit": "s", "baseline_name": "pandas",   # null where the row has none
     "ratio": 12.0, "ratio_of": "baseline/figure",   # or "figure/baseline"; null without a baseline
     "target": "≥ 10× baseline", "passed": true,                          # null: no target, figure only
     "command": ".venv/bin/python bench/bench_analytics.py",             # reproduces the row
     "notes": "free text"}

A result file (bench/results/<benchmark>.json) is {"benchmark", "created_at", "quick", "machine", "rows", "details"}.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS_DIR = BENCH / "results"
DEFAULT_WORK = Path(os.environ.get("SOFIA_BENCH_WORK", Path(tempfile.gettempdir()) / "sofia-bench"))
ROW_FIELDS = ("name", "figure", "unit", "min", "max", "runs", "baseline", "baseline_unit", "ratio", "target",
              "passed", "command", "notes")
OPTIONAL_FIELDS = ("group", "baseline_name", "ratio_of")
RESULT_MARK = "BENCH_JSON "  # a worker's last stdout line starting with this carries its JSON
MIB = 1024 * 1024
PACKAGES = ("polars", "duckdb", "pandas", "pyarrow", "numpy", "dagster", "dbt-core", "dbt-duckdb", "aiohttp",
            "psutil")

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# --- running and measuring -------------------------------------------------------------------------------------
@dataclass
class ChildResult:
    cmd: list[str]
    returncode: int
    wall_s: float
    cpu_s: float  # user + system of the child and the descendants it waited for
    peak_rss_mib: float  # the largest resident set of the child or of any descendant it waited for
    stdout: str
    stderr: str
    payload: dict | None = None  # the worker's BENCH_JSON line, when it printed one

    def check(self) -> ChildResult:
        if self.returncode != 0:
            tail = "\n".join((self.stderr or self.stdout).strip().splitlines()[-25:])
            raise RuntimeError(f"{shlex.join(self.cmd)} exited with {self.returncode}:\n{tail}")
        return self


def run_child(cmd: Sequence[str], env: dict | None = None, timeout: float | None = None, cwd: Path = ROOT,
              echo: bool = False, log: Path | None = None) -> ChildResult:
    """Run `cmd` to its end and measure it with wait4(2): the kernel's own peak RSS and CPU time of exactly this
    child (and of what it waited for), so each benchmark's memory is its own. Output goes to files, not pipes,
    so a chatty child never blocks; with `echo` it is copied to our stdout as it comes."""
    cmd = [str(c) for c in cmd]
    with tempfile.TemporaryDirectory(prefix="sofia-bench-") as tmp:
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            started = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=cwd, env={**os.environ, **(env or {})},
                                    start_new_session=True)
            follower = _Follower(out_path, echo)
            status, usage = _wait4(proc, timeout, started)
            wall = time.perf_counter() - started
            follower.stop()
        stdout, stderr = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as f:
            f.write(f"$ {shlex.join(cmd)}\n{stdout}\n--- stderr ---\n{stderr}\n")
    code = os.waitstatus_to_exitcode(status) if status is not None else -signal.SIGKILL
    result = ChildResult(cmd, code, wall, usage.ru_utime + usage.ru_stime if usage else 0.0,
                         usage.ru_maxrss / 1024 if usage else 0.0, stdout, stderr)
    if status is None:
        result.stderr += f"\nkilled after the {timeout:g} s timeout"
    result.payload = parse_payload(stdout)
    return result


def _wait4(proc: subprocess.Popen, timeout: float | None, started: float):
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG if timeout else 0)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
            return status, usage
        if timeout and time.perf_counter() - started > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = -signal.SIGKILL
            return None, usage
        time.sleep(0.02)


class _Follower:
    """Copies a growing file to stdout (a child's progress) until stopped."""

    def __init__(self, path: Path, echo: bool):
        self.path, self.echo, self._stop = path, echo, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True) if echo else None
        if self.thread:
            self.thread.start()

    def _run(self) -> None:
        with self.path.open("rb") as f:
            while True:
                chunk = f.read()
                if chunk:
                    for line in chunk.decode(errors="replace").splitlines(keepends=True):
                        if not line.startswith(RESULT_MARK):
                            sys.stdout.write("    " + line)
                    sys.stdout.flush()
                elif self._stop.is_set():
                    return
                else:
                    time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        if self.thread:
            self.thread.join()


def parse_payload(stdout: str) -> dict | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    return None


def emit(payload: dict) -> None:
    """A worker's answer to its parent (the last line of its stdout)."""
    print(RESULT_MARK + json.dumps(payload, default=str), flush=True)


def worker(script: str, *args: object) -> list[str]:
    """The command line of a worker mode of a bench script, run with this interpreter."""
    return [sys.executable, str(BENCH / script), *map(str, args)]


class RssSampler:
    """Samples a process's resident memory (and its children's, summed) every `interval` seconds with psutil.
    `on_sample(t, rss_mib)` may add fields to each sample (returns a dict or None)."""

    def __init__(self, pid: int, interval: float = 0.5, on_sample: Callable[[float, float], dict | None] = None):
        import psutil

        self.proc, self.interval, self.on_sample = psutil.Process(pid), interval, on_sample
        self.samples: list[dict] = []
        self._stop = threading.Event()
        self.t0 = time.perf_counter()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def rss_mib(self) -> float:
        import psutil

        try:
            procs = [self.proc, *self.proc.children(recursive=True)]
            return sum(p.memory_info().rss for p in procs) / MIB
        except psutil.Error:
            return float("nan")

    def _run(self) -> None:
        while not self._stop.is_set():
            t, rss = time.perf_counter() - self.t0, self.rss_mib()
            if rss == rss:  # not NaN: the process is still there
                sample = {"t_s": round(t, 3), "rss_mib": round(rss, 2)}
                if self.on_sample:
                    sample.update(self.on_sample(t, rss) or {})
                self.samples.append(sample)
            self._stop.wait(self.interval)

    def stop(self) -> list[dict]:
        self._stop.set()
        self.thread.join()
        return self.samples


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- statistics and rows -----------------------------------------------------------------------------------------
def summarize(values: Sequence[float]) -> dict:
    values = [float(v) for v in values]
    if not values:
        raise ValueError("no runs to summarize")
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


OPS = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
OP_TEXT = {"<": "<", "<=": "≤", ">": ">", ">=": "≥"}


def row(name: str, group: str, values: Sequence[float] | float, unit: str, command: str, *,
        baseline: Sequence[float] | float | None = None, baseline_unit: str | None = None,
        baseline_name: str | None = None, ratio: str | None = None,
        target: tuple[str, str, float] | None = None, target_text: str | None = None, notes: str = "") -> dict:
    """One row. `values` (and `baseline`) are the runs, or one figure. `ratio` is "baseline/figure" or
    "figure/baseline" (medians). `target` is (on, op, threshold) with on "figure" or "ratio", op one of
    <, <=, >, >=; its text is written for you unless `target_text` is given."""
    runs = [values] if isinstance(values, (int, float)) else list(values)
    s = summarize(runs)
    out = {"name": name, "group": group, "figure": s["median"], "unit": unit, "min": s["min"], "max": s["max"],
           "runs": s["runs"], "baseline": None, "baseline_unit": None, "baseline_name": None, "ratio": None,
           "ratio_of": None, "target": target_text, "passed": None, "command": command, "notes": notes}
    if baseline is not None:
        b = summarize([baseline] if isinstance(baseline, (int, float)) else list(baseline))
        out.update(baseline=b["median"], baseline_unit=baseline_unit or unit, baseline_name=baseline_name)
        if b["runs"] > 1:
            out["notes"] = (f"{baseline_name or 'baseline'} {fmt(b['min'])}–{fmt(b['max'])} {baseline_unit or unit} "
                            f"over {b['runs']} runs. " + out["notes"]).strip()
        if ratio == "baseline/figure" and s["median"]:
            out.update(ratio=b["median"] / s["median"], ratio_of=ratio)
        elif ratio == "figure/baseline" and b["median"]:
            out.update(ratio=s["median"] / b["median"], ratio_of=ratio)
    if target is not None:
        on, op, threshold = target
        value = out["ratio"] if on == "ratio" else out["figure"]
        out["passed"] = bool(value is not None and OPS[op](value, threshold))
        if target_text is None:
            out["target"] = (f"{OP_TEXT[op]} {fmt(threshold)}× baseline" if on == "ratio"
                             else f"{OP_TEXT[op]} {fmt(threshold)} {unit}")
    return out


REQUIRED_FIELDS = ("name", "figure", "unit", "command")


def validate_row(r: dict, origin: str) -> dict:
    """A row with every field: the required ones must be there, the others default to null ("" for notes)."""
    missing = [k for k in REQUIRED_FIELDS if k not in r]
    if missing:
        raise ValueError(f"{origin}: row {r.get('name', '?')!r} lacks field(s) {missing}")
    defaults = {**{k: None for k in ROW_FIELDS + OPTIONAL_FIELDS}, "notes": ""}
    out = {**defaults, **r}
    for k in ("min", "max"):
        if out[k] is None:
            out[k] = out["figure"]
    out["runs"] = out["runs"] if out["runs"] is not None else 1
    return out


def fmt(value: float | None, digits: int = 3) -> str:
    """A figure for people: 3 significant digits, thousands separated."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    v = float(value)
    if v != v:
        return "nan"
    if abs(v) >= 10 ** digits:
        return f"{v:,.0f}"
    if v == 0:
        return "0"
    return f"{v:.{digits}g}" if abs(v) >= 1e-4 else f"{v:.2e}"


# --- result files --------------------------------------------------------------------------------------------------
def command(script: str, *args: str) -> str:
    """How a person reproduces a row from the repository root."""
    py = ".venv/bin/python" if Path(sys.executable).parent == ROOT / ".venv" / "bin" else "python"
    return " ".join([py, f"bench/{script}", *args])


def write_result(out: Path, benchmark: str, rows: list[dict], quick: bool, details: dict | None = None) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    for r in rows:
        validate_row(r, str(out))
    out.write_text(json.dumps({"benchmark": benchmark, "created_at": now_iso(), "quick": quick,
                               "machine": machine_info(), "rows": rows, "details": details or {}},
                              indent=2, default=str) + "\n")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


def load_rows(path: Path) -> tuple[list[dict], dict]:
    """The rows of a result file (and the file itself); the Monte Carlo script's earlier format is adapted."""
    data = json.loads(path.read_text())
    if "rows" in data:
        return [validate_row(r, str(path)) for r in data["rows"]], data
    if data.get("benchmark") == "risk_monte_carlo" and "results" in data:
        return _risk_rows(data), data
    raise ValueError(f"{path}: neither a 'rows' list (bench/common.py's row format) nor a known result format")


def _risk_rows(data: dict) -> list[dict]:
    rows = []
    target = float(data.get("target_ratio", 1.5))
    for r in data["results"]:
        mc, draws = r["monte_carlo"], r["numpy_draws"]
        ratio = mc["median_s"] / draws["median_s"]
        rows.append({
            "name": f"Monte Carlo risk: {r['paths']:,} paths × {r['horizon_days']} days", "group": "Monte Carlo risk",
            "figure": mc["median_s"], "unit": "s", "min": mc["min_s"], "max": mc["max_s"], "runs": mc["runs"],
            "baseline": draws["median_s"], "baseline_unit": "s", "baseline_name": "numpy draws only",
            "ratio": ratio, "ratio_of": "figure/baseline", "target": f"≤ {fmt(target)}× baseline",
            "passed": ratio <= target, "command": ".venv/bin/python bench/bench_risk.py",
            "notes": f"{data.get('symbols')} symbols + {data.get('strategies')} strategies, both methods; "
                     f"peak RSS {fmt(data.get('peak_rss_mib'))} MiB"})
    return rows


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


# --- the machine -------------------------------------------------------------------------------------------------
def machine_info() -> dict:
    import psutil

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    load = os.getloadavg()
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "physical_cores": psutil.cpu_count(logical=False),
            "ram_gib": round(psutil.virtual_memory().total / 2**30, 1), "python": platform.python_version(),
            "os": platform.platform(), "packages": versions,
            "load_average_1_5_15": [round(x, 2) for x in load]}


def machine_markdown(m: dict) -> str:
    pkgs = ", ".join(f"{k} {v}" for k, v in m.get("packages", {}).items())
    return "\n".join([
        f"- CPU: {m['cpu']}, {m['logical_cores']} logical cores ({m.get('physical_cores')} physical), "
        f"{m['ram_gib']} GiB RAM",
        f"- OS: {m['os']}; Python {m['python']}",
        f"- packages: {pkgs}",
        f"- load average (1, 5, 15 min) when the suite started: {', '.join(map(str, m['load_average_1_5_15']))}"
        + (f"; when it ended: {', '.join(map(str, m['load_average_end']))}" if m.get("load_average_end") else ""),
    ])
