"""Analytics at scale: the project's own computations over the scale data's Parquet files, against the same
computation in pandas.

Engine (what the project runs): the dbt marts' SQL (`dbt/models/marts/*.sql` over `dbt/models/staging/*.sql`,
rendered with the project's macros, staging as views over `read_parquet`) in DuckDB for the hourly liquidity and
latency marts; `latency.compute.latency_heatmap` (polars) over every latency probe; `symbols.compute.
symbol_rankings` (polars) on the liquidity mart. Baseline: the same four results in pandas, read from the same
files. Both sides' outputs are compared (they must agree) before any figure is reported.

    .venv/bin/python bench/bench_analytics.py            # over the 90 days × 20 symbols of bench_data.py
    .venv/bin/python bench/bench_analytics.py --quick    # 3 days × 5 symbols

Targets: engine ≥ 10× faster than pandas; engine peak resident memory < 4 GiB.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data import FULL, QUICK, ensure_scale_data  # noqa: E402
from common import DEFAULT_WORK, RESULTS_DIR, ROOT, command, emit, fmt, row, run_child, worker, write_result  # noqa: E402

DBT = ROOT / "dbt"
OUTPUTS = ("mart_hourly_liquidity", "mart_hourly_latency", "latency_heatmap", "symbol_rankings")
KEYS = {"mart_hourly_liquidity": ["venue", "symbol", "hour"], "mart_hourly_latency": ["venue", "endpoint", "hour"],
        "latency_heatmap": ["venue", "endpoint", "view", "bucket"], "symbol_rankings": ["venue", "symbol"]}
SPEEDUP_TARGET, PEAK_LIMIT_MIB, AT_SCALE_ROWS = 10.0, 4096, 10_000_000


# --- inputs both sides share ------------------------------------------------------------------------------------
def render_model(name: str, sources: dict[str, str]) -> str:
    """A dbt model's SQL as dbt would compile it for a full build (no partition window), with `source()` pointing
    at `sources` and `ref()` at views of the same name."""
    import jinja2

    path = next((DBT / "models").rglob(f"{name}.sql"))
    macros = "".join(p.read_text() for p in sorted((DBT / "macros").glob("*.sql")))
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    template = env.from_string(macros + "\n" + path.read_text())
    return template.render(
        config=lambda **_: "", var=lambda _name, default=None: default, is_incremental=lambda: False,
        ref=lambda model: model, source=lambda _schema, table: sources[table], this=name,
        target={"schema": "main"}).strip()


def fee_table_for(src: Path):
    """The fee table (config/fees.yaml through `fees.compute.fee_table`) for every venue and symbol in the data, the
    periods in force on the data's last day (as the ranking asset reads it)."""
    import polars as pl

    from sofia_pipelines.defs.fees.compute import fee_table, load_yaml
    from sofia_runtime.fees import in_force

    candles = pl.scan_parquet(src / "candles" / "*.parquet")
    markets = candles.select("venue", "symbol", "market").unique().collect()
    last_day = candles.select(pl.col("ts").max().dt.date()).collect().item()
    table = fee_table(markets.sort("venue", "symbol"), load_yaml("fees.yaml"), {}, static=lambda venue: None)
    return table.filter(in_force(last_day))


# --- the engine: DuckDB (dbt SQL) and polars ----------------------------------------------------------------------
def engine_sql(src: Path) -> dict[str, str]:
    """The staging and mart models' SQL over the scale data's files (rendered before any timing starts)."""
    sources = {t: f"read_parquet('{src / t}/*.parquet')" for t in ("books", "candles", "trades", "latency", "fx")}
    return {m: render_model(m, sources) for m in ("stg_books", "stg_candles", "stg_trades", "stg_latency", "stg_fx",
                                                  "mart_hourly_liquidity", "mart_hourly_latency")}


def run_engine(src: Path, fees, sql: dict[str, str]) -> dict:
    import duckdb
    import polars as pl

    from sofia_pipelines.defs.latency.compute import latency_heatmap
    from sofia_pipelines.defs.symbols.compute import RankingWeights, symbol_rankings

    conn = duckdb.connect()
    for stg in (m for m in sql if m.startswith("stg_")):
        conn.execute(f"CREATE VIEW {stg} AS {sql[stg]}")
    out, seconds = {}, {}
    for mart in ("mart_hourly_liquidity", "mart_hourly_latency"):
        t0 = time.perf_counter()
        out[mart] = conn.sql(sql[mart]).pl()
        seconds[mart] = time.perf_counter() - t0
    conn.close()  # results fetched; the polars steps run without DuckDB's buffers, as each asset has its own connection
    t0 = time.perf_counter()
    probes = pl.read_parquet(src / "latency" / "*.parquet", columns=["venue", "endpoint", "ts", "latency_ms", "ok"])
    out["latency_heatmap"] = latency_heatmap(probes)
    seconds["latency_heatmap"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out["symbol_rankings"] = symbol_rankings(out["mart_hourly_liquidity"], fees, RankingWeights())
    seconds["symbol_rankings"] = time.perf_counter() - t0
    return {"frames": out, "seconds": seconds}


# --- the baseline: pandas -----------------------------------------------------------------------------------------
def _quote(symbols):
    return symbols.str.split(":").str[0].str.split("/").str[1]


def _latency_aggs(df, keys: list[str]):
    g = df.groupby(keys, sort=False)
    base = g.agg(samples=("ok", "size"), failures=("failed", "sum"))
    q = df[df["ok"]].groupby(keys, sort=False)["latency_ms"].quantile([0.5, 0.95, 0.99]).unstack()
    q.columns = ["p50_ms", "p95_ms", "p99_ms"]
    out = base.join(q, how="left")
    out["error_rate"] = out["failures"] / out["samples"]
    return out.reset_index()


def run_pandas(src: Path, fees, _sql=None) -> dict:
    import numpy as np
    import pandas as pd

    seconds, out = {}, {}
    t0 = time.perf_counter()
    # books and trades a day file at a time: every aggregate is per hour, so this is exact, and all 90 days of
    # books at once would take pandas ~15 GiB
    parts = []
    for f in sorted((src / "books").glob("*.parquet")):
        books = pd.read_parquet(f, columns=["venue", "symbol", "market", "ts", "bid", "ask", "bid_size", "ask_size"])
        books["hour"] = books["ts"].dt.floor("h")
        books["mid"] = (books["bid"] + books["ask"]) / 2
        books["spread_bps"] = (books["ask"] - books["bid"]) / books["mid"] * 1e4
        books["depth_quote"] = (books["bid_size"] * books["bid"] + books["ask_size"] * books["ask"]) / 2
        parts.append(books.groupby(["venue", "symbol", "market", "hour"], sort=False).agg(
            mid_mean=("mid", "mean"), spread_bps_mean=("spread_bps", "mean"), spread_bps_p50=("spread_bps", "median"),
            depth_quote_mean=("depth_quote", "mean"), n_books=("mid", "size")).reset_index())
        del books
    b = pd.concat(parts, ignore_index=True)
    candles = pd.read_parquet(src / "candles", columns=["venue", "symbol", "market", "ts", "close", "volume"])
    candles = candles.sort_values(["venue", "symbol", "ts"], ignore_index=True)
    candles["log_return"] = np.log(candles["close"] / candles.groupby(["venue", "symbol"], sort=False)["close"].shift())
    candles["hour"] = candles["ts"].dt.floor("h")
    candles["volume_quote"] = candles["volume"] * candles["close"]
    c = candles.groupby(["venue", "symbol", "market", "hour"], sort=False).agg(
        volume_base=("volume", "sum"), volume_quote=("volume_quote", "sum"),
        volatility_1m=("log_return", "std")).reset_index()
    del candles
    parts = []
    for f in sorted((src / "trades").glob("*.parquet")):
        trades = pd.read_parquet(f, columns=["venue", "symbol", "ts"])
        trades["hour"] = trades["ts"].dt.floor("h")
        parts.append(trades.groupby(["venue", "symbol", "hour"], sort=False).size().rename("trades").reset_index())
    t = pd.concat(parts, ignore_index=True)
    fx = pd.read_parquet(src / "fx")
    fx = fx[fx["pair"] == "USD/TRY"]
    fx = fx.assign(hour=fx["ts"].dt.floor("h")).groupby("hour")["rate"].mean().rename("usd_try").reset_index()
    j = b.merge(c, on=["venue", "symbol", "hour"], how="outer", suffixes=("", "_c"))
    j["market"] = j["market"].fillna(j.pop("market_c"))
    j["n_books"] = j["n_books"].fillna(0)
    j = j.merge(t, on=["venue", "symbol", "hour"], how="left").merge(fx, on="hour", how="left")
    j["trades"] = j["trades"].fillna(0)
    quote = _quote(j["symbol"])
    qpu = np.where(quote.isin(["USDT", "USDC", "USD"]), 1.0, np.where(quote == "TRY", j["usd_try"], np.nan))
    liq = pd.DataFrame({"venue": j["venue"], "symbol": j["symbol"], "market": j["market"], "hour": j["hour"],
                        "mid_mean": j["mid_mean"], "spread_bps_mean": j["spread_bps_mean"],
                        "spread_bps_p50": j["spread_bps_p50"], "depth_usd_mean": j["depth_quote_mean"] / qpu,
                        "volume_base": j["volume_base"].fillna(0), "volume_usd": j["volume_quote"].fillna(0) / qpu,
                        "trades": j["trades"], "volatility_1m": j["volatility_1m"], "n_books": j["n_books"]})
    out["mart_hourly_liquidity"] = liq
    seconds["mart_hourly_liquidity"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    lat = pd.read_parquet(src / "latency", columns=["venue", "endpoint", "ts", "latency_ms", "ok"])
    lat["failed"] = ~lat["ok"]
    lat["hour"] = lat["ts"].dt.floor("h")
    out["mart_hourly_latency"] = _latency_aggs(lat, ["venue", "endpoint", "hour"])
    seconds["mart_hourly_latency"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    lat["hour_of_day"] = lat["ts"].dt.hour
    lat["hour_of_week"] = lat["ts"].dt.weekday * 24 + lat["hour_of_day"]
    views = []
    for view in ("hour_of_day", "hour_of_week"):
        v = _latency_aggs(lat, ["venue", "endpoint", view]).rename(columns={view: "bucket"})
        views.append(v.assign(view=view))
    out["latency_heatmap"] = pd.concat(views, ignore_index=True).drop(columns="failures")
    seconds["latency_heatmap"] = time.perf_counter() - t0
    del lat

    t0 = time.perf_counter()
    weights = {"liquidity": 0.4, "spread": 0.25, "volatility": 0.1, "cost": 0.25}
    fees_pd = fees.to_pandas()
    taker = fees_pd[fees_pd["selected"]].assign(taker_bps=lambda d: d["taker"] * 1e4)[["venue", "symbol", "taker_bps"]]
    per = liq.groupby(["venue", "symbol"], sort=False).agg(
        volume_usd_per_hour=("volume_usd", "mean"), depth_usd=("depth_usd_mean", "mean"),
        spread_bps=("spread_bps_mean", "mean"), volatility_1m=("volatility_1m", "mean")).reset_index()
    r = per.merge(taker, on=["venue", "symbol"], how="inner")
    n = max(len(r) - 1, 1)

    def pct(s, descending=False):
        return ((-s if descending else s).rank(method="average") - 1) / n

    r["liquidity_score"] = (pct(r["volume_usd_per_hour"]) + pct(r["depth_usd"])) / 2
    r["spread_score"] = pct(r["spread_bps"], descending=True)
    r["volatility_score"] = pct(r["volatility_1m"])
    r["cost_score"] = pct(r["taker_bps"] + r["spread_bps"] / 2, descending=True)
    r["score"] = sum(weights[k] * r[f"{k}_score"] for k in weights)
    r["rank"] = r["score"].rank(method="first", ascending=False).astype("int64")
    out["symbol_rankings"] = r.sort_values("rank", ignore_index=True)
    seconds["symbol_rankings"] = time.perf_counter() - t0
    return {"frames": out, "seconds": seconds}


# --- checking that both computed the same thing -------------------------------------------------------------------
def compare(engine_dir: Path, pandas_dir: Path) -> dict:
    """Per output: rows on each side, rows of one side without a match on the other (joined on the keys), and
    the largest relative difference over the numeric columns both have. `problems` lists every disagreement
    (rows missing on a side, nulls on one side only, values off by more than 1e-6 relative); the figures are
    still reported then, with the disagreement in the row's notes."""
    import polars as pl

    report = {}
    for name in OUTPUTS:
        e, p = pl.read_parquet(engine_dir / f"{name}.parquet"), pl.read_parquet(pandas_dir / f"{name}.parquet")
        keys = KEYS[name]
        p = p.with_columns([pl.col(k).cast(e.schema[k]) for k in keys])
        joined = e.join(p, on=keys, how="inner", suffix="__pd")
        problems = []
        if joined.height != e.height or joined.height != p.height:
            only_e = e.join(p, on=keys, how="anti")
            problems.append(f"{e.height - joined.height:,} of {e.height:,} engine rows and {p.height - joined.height:,} "
                            f"of {p.height:,} pandas rows have no match on the other side (e.g. engine "
                            f"{only_e.select(keys).head(2).rows()})")
        worst, where = 0.0, None
        for col in e.columns:
            if col in keys or f"{col}__pd" not in joined.columns or not e.schema[col].is_numeric():
                continue
            a, b = pl.col(col).cast(pl.Float64), pl.col(f"{col}__pd").cast(pl.Float64)
            stats = joined.select(
                ((a - b).abs() / pl.max_horizontal(a.abs(), b.abs(), pl.lit(1e-12))).max().alias("rel"),
                (a.is_null() != b.is_null()).sum().alias("null_mismatch"))
            rel, nulls = stats["rel"][0] or 0.0, stats["null_mismatch"][0]
            if nulls:
                problems.append(f"{col}: {nulls} rows null on one side only")
            if rel > worst:
                worst, where = rel, col
        if worst > 1e-6:
            problems.append(f"{where}: differs by up to {worst:.2e} (relative)")
        report[name] = {"rows": e.height, "pandas_rows": p.height, "max_rel_diff": worst, "problems": problems}
    return report


def work_worker(side: str, src: Path, dump: Path | None) -> dict:
    fees = fee_table_for(src)
    sql = engine_sql(src) if side == "engine" else None
    if side == "engine":  # each side's library is imported before the timing starts
        import duckdb  # noqa: F401
    else:
        import pandas  # noqa: F401
    t0 = time.perf_counter()
    res = (run_engine if side == "engine" else run_pandas)(src, fees, sql)
    seconds = time.perf_counter() - t0
    if dump:
        dump.mkdir(parents=True, exist_ok=True)
        for name, frame in res["frames"].items():
            if side == "engine":
                frame.write_parquet(dump / f"{name}.parquet")
            else:
                frame.to_parquet(dump / f"{name}.parquet", index=False)
    return {"seconds": seconds, "parts": res["seconds"], "rows": {k: len(v) for k, v in res["frames"].items()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=f"{QUICK[0]} days × {QUICK[1]} symbols")
    p.add_argument("--days", type=int)
    p.add_argument("--symbols", type=int)
    p.add_argument("--runs", type=int, help="runs of each side (default 3; quick 2)")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK)
    p.add_argument("--out", type=Path)
    p.add_argument("--worker", choices=["engine", "pandas"], help=argparse.SUPPRESS)
    p.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--dump", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        emit(work_worker(args.worker, args.src, args.dump))
        return 0

    days = args.days or (QUICK if args.quick else FULL)[0]
    symbols = args.symbols or (QUICK if args.quick else FULL)[1]
    runs = args.runs or (2 if args.quick else 3)
    src = ensure_scale_data(args.work, days, symbols)
    meta = json.loads((src / "done.json").read_text())
    n_rows = sum(meta["rows"].values())
    print(f"analytics at scale over {src} ({n_rows:,} rows, {meta['bytes'] / 2**30:.2f} GiB Parquet); "
          f"{runs} run(s) per side, interleaved")
    dumps = {side: args.work / "analytics-out" / side for side in ("engine", "pandas")}
    results = {"engine": [], "pandas": []}
    for i in range(runs):
        for side in ("engine", "pandas"):  # interleaved, so load on the machine hits both alike
            extra = ["--dump", dumps[side]] if i == 0 else []
            res = run_child(worker("bench_analytics.py", "--worker", side, "--src", src, *extra)).check()
            results[side].append({**res.payload, "peak_rss_mib": res.peak_rss_mib, "cpu_s": res.cpu_s})
            parts = ", ".join(f"{k} {v:.2f}" for k, v in res.payload["parts"].items())
            print(f"  run {i + 1} {side:>6}: {res.payload['seconds']:.2f} s ({parts}); peak RSS "
                  f"{res.peak_rss_mib:,.0f} MiB", flush=True)
        if i == 0:
            agreement = compare(dumps["engine"], dumps["pandas"])
            for k, v in agreement.items():
                state = "DISAGREE: " + "; ".join(v["problems"]) if v["problems"] else "agree"
                print(f"  {k}: {v['rows']:,} rows, max rel diff {v['max_rel_diff']:.1e}, {state}", flush=True)
    eng = [r["seconds"] for r in results["engine"]]
    pds = [r["seconds"] for r in results["pandas"]]
    size = f"{days} days × {symbols} symbols"
    args_text = [] if (days, symbols) == FULL else (["--quick"] if args.quick and not (args.days or args.symbols)
                                                      else ["--days", str(days), "--symbols", str(symbols)])
    cmd = command("bench_analytics.py", *args_text)
    group = "analytics at scale"
    parts = {side: {k: sorted(r["parts"][k] for r in results[side])[len(results[side]) // 2]
                    for k in results[side][0]["parts"]} for side in results}
    disagreements = [f"{k}: {'; '.join(v['problems'])}" for k, v in agreement.items() if v["problems"]]
    agree_text = ("outputs compared equal (rel. diff ≤ 1e-6)" if not disagreements
                  else "OUTPUTS DISAGREE with pandas: " + " | ".join(disagreements))
    part_text = "; ".join(f"{k}: {parts['engine'][k]:.2f} s vs {parts['pandas'][k]:.2f} s" for k in parts["engine"])
    at_scale = n_rows >= AT_SCALE_ROWS  # the speed-up target is for tens of millions of rows, not a smoke test
    rows = [
        row(f"{group}: marts, heatmap, ranking ({size})", group, eng, "s", cmd, baseline=pds, baseline_unit="s",
            baseline_name="pandas", ratio="baseline/figure",
            target=("ratio", ">=", SPEEDUP_TARGET) if at_scale else None,
            target_text="≥ 10× faster than pandas" + ("" if at_scale else f" (judged from {AT_SCALE_ROWS:,} input rows)"),
            notes=f"{n_rows:,} input rows; DuckDB runs the dbt marts' SQL, polars the heatmap and ranking; medians "
                  f"per part (engine vs pandas): {part_text}; {agree_text}"),
        row(f"{group}: engine peak memory ({size})", group, [r["peak_rss_mib"] for r in results["engine"]], "MiB", cmd,
            target=("figure", "<", PEAK_LIMIT_MIB), target_text="< 4 GiB",
            notes=f"pandas peak {fmt(max(r['peak_rss_mib'] for r in results['pandas']))} MiB"),
    ]
    out = args.out or RESULTS_DIR / ("quick" if args.quick else "") / "analytics.json"
    write_result(out, "analytics", rows, args.quick, {"src": str(src), "input_rows": meta["rows"],
                                                       "runs": results, "agreement": agreement})
    return 0


if __name__ == "__main__":
    sys.exit(main())
