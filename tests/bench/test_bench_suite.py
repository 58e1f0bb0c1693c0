"""The benchmark suite's own machinery: per-child memory measurement, the row format and its report, and that
the analytics benchmark's pandas baseline computes what the project's DuckDB/polars code computes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import run as suite_runner  # noqa: E402


def test_run_child_measures_each_childs_own_peak_memory():
    # measured from a fresh interpreter, as bench/run.py does: a forked child's peak RSS starts at its parent's
    # size before exec, and a pytest worker is a large parent
    driver = f"""
import json, sys
sys.path.insert(0, {str(BENCH)!r})
import common
big = common.run_child([sys.executable, "-c", "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096])"])
small = common.run_child([sys.executable, "-c", "print('BENCH_JSON {{\\"ok\\": 1}}')"])
print(json.dumps([big.returncode, big.peak_rss_mib, small.returncode, small.peak_rss_mib, small.payload]))
"""
    done = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    big_code, big_peak, small_code, small_peak, small_payload = json.loads(done.stdout.splitlines()[-1])
    assert big_code == 0 and small_code == 0
    assert big_peak > 300
    assert small_peak < 100  # not the earlier child's peak: wait4 reports this child only
    assert small_payload == {"ok": 1}


def test_run_child_reports_failure_and_timeout():
    failed = common.run_child([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert failed.returncode == 3
    with pytest.raises(RuntimeError, match="exited with 3"):
        failed.check()
    slow = common.run_child([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert slow.returncode != 0 and "timeout" in slow.stderr and slow.wall_s < 10


def test_row_computes_median_ratio_and_target():
    r = common.row("x: speed", "x", [3.0, 1.0, 2.0], "s", "cmd", baseline=[30.0, 20.0, 25.0], baseline_name="pandas",
                   ratio="baseline/figure", target=("ratio", ">=", 10.0))
    assert (r["figure"], r["min"], r["max"], r["runs"]) == (2.0, 1.0, 3.0, 3)
    assert r["baseline"] == 25.0 and r["ratio"] == 12.5 and r["passed"] is True
    assert r["target"] == "≥ 10× baseline"
    memory = common.row("x: memory", "x", 2500.0, "MiB", "cmd", target=("figure", "<", 2048))
    assert memory["passed"] is False and memory["target"] == "< 2,048 MiB"
    info = common.row("x: rate", "x", [5.0], "rows/s", "cmd")
    assert info["passed"] is None and info["ratio"] is None


def test_load_rows_fills_defaults_and_adapts_the_monte_carlo_format(tmp_path):
    f = tmp_path / "other.json"
    f.write_text(json.dumps({"rows": [{"name": "a", "figure": 1.0, "unit": "s", "command": "c"}]}))
    rows, _ = common.load_rows(f)
    assert rows[0]["min"] == 1.0 and rows[0]["passed"] is None and rows[0]["notes"] == ""
    f.write_text(json.dumps({"rows": [{"figure": 1.0, "unit": "s", "command": "c"}]}))
    with pytest.raises(ValueError, match="lacks field"):
        common.load_rows(f)
    risk = tmp_path / "risk.json"
    stats = {"median_s": 2.0, "min_s": 1.0, "max_s": 3.0, "runs": 3}
    risk.write_text(json.dumps({"benchmark": "risk_monte_carlo", "target_ratio": 1.5, "results": [
        {"paths": 10000, "horizon_days": 365, "monte_carlo": stats, "numpy_draws": {**stats, "median_s": 1.0}}]}))
    rows, _ = common.load_rows(risk)
    assert rows[0]["ratio"] == 2.0 and rows[0]["passed"] is False


def test_markdown_has_every_row_its_verdict_and_the_machine():
    rows = [common.row("a: one", "a", [1.0, 2.0], "s", "python bench/a.py", target=("figure", "<", 1.0)),
            common.row("b: two", "b", [5.0], "MiB", "python bench/b.py", notes="pipe | inside")]
    doc = {"mode": "quick", "created_at": "now", "suite_wall_s": 60.0, "machine": common.machine_info(),
           "benchmarks": {"a": {"status": "ran", "wall_s": 1.0, "peak_rss_mib": 10.0}}, "rows": rows}
    text = suite_runner.markdown(doc)
    assert "| a: one | 1.5 s | 1 – 2 (2) |" in text and "**FAIL**" in text
    assert "`python bench/b.py`" in text and "pipe \\| inside" in text
    assert "logical cores" in text and "polars" in text


def test_dbt_models_render_without_a_partition_window():
    sql = __import__("bench_analytics").render_model("mart_hourly_latency", {"latency": "read_parquet('x')"})
    assert "{{" not in sql and "quantile_cont" in sql and "FROM stg_latency" in sql and "WHERE TRUE" in sql


def test_analytics_baseline_computes_what_the_project_computes(tmp_path):
    analytics = __import__("bench_analytics")
    from sofia_runtime.simulator import stream_to_parquet

    src = tmp_path / "scale"
    for _ in stream_to_parquet(src, 1, n_bases=2, tables=("candles", "books", "trades", "latency", "fx")):
        pass
    fees = analytics.fee_table_for(src)
    for side, fn in (("engine", analytics.run_engine), ("pandas", analytics.run_pandas)):
        out = fn(src, fees, analytics.engine_sql(src))
        (tmp_path / side).mkdir()
        for name, frame in out["frames"].items():
            path = tmp_path / side / f"{name}.parquet"
            frame.write_parquet(path) if side == "engine" else frame.to_parquet(path, index=False)
    report = analytics.compare(tmp_path / "engine", tmp_path / "pandas")
    for name in analytics.OUTPUTS:
        assert report[name]["problems"] == [], name
        assert report[name]["rows"] > 0
    # one day of probes: 4 venues x 3 endpoints x (24 hours of the day + the same 24 hours of the week)
    heatmap = pl.read_parquet(tmp_path / "engine" / "latency_heatmap.parquet")
    assert heatmap.height == 4 * 3 * 48 and heatmap["bucket"].is_between(0, 167).all()


def test_compare_reports_a_disagreement(tmp_path):
    analytics = __import__("bench_analytics")
    for side in ("engine", "pandas"):
        (tmp_path / side).mkdir()
    frames = {"mart_hourly_liquidity": {"venue": ["a"], "symbol": ["s"], "hour": [1], "x": [1.0]},
              "mart_hourly_latency": {"venue": ["a"], "endpoint": ["e"], "hour": [1], "x": [1.0]},
              "latency_heatmap": {"venue": ["a"], "endpoint": ["e"], "view": ["v"], "bucket": [1], "x": [1.0]},
              "symbol_rankings": {"venue": ["a"], "symbol": ["s"], "x": [1.0]}}
    for name, cols in frames.items():
        pl.DataFrame(cols).write_parquet(tmp_path / "engine" / f"{name}.parquet")
        changed = {**cols, "x": [1.1]} if name == "symbol_rankings" else cols
        if name == "latency_heatmap":
            changed = {**cols, "bucket": [2]}
        pl.DataFrame(changed).write_parquet(tmp_path / "pandas" / f"{name}.parquet")
    report = analytics.compare(tmp_path / "engine", tmp_path / "pandas")
    assert report["mart_hourly_liquidity"]["problems"] == []
    assert "x: differs" in report["symbol_rankings"]["problems"][0]
    assert "no match" in report["latency_heatmap"]["problems"][0]
