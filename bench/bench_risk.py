"""Monte Carlo risk benchmark (feature H), not a test: wall time of `run_monte_carlo` for 10,000 and 100,000
paths over a one-year horizon (365 days) on every symbol of config/markets.yaml and both strategies, beside
the time numpy alone takes to draw the same random numbers (same generator, streams, chunks, shapes and
dtypes, into reused arrays as the Monte Carlo does), as a ratio. Median of several runs, with min and max.

    make bench-risk        (or: .venv/bin/python bench/bench_risk.py [--repeat N])

Figures go to bench/results/risk.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sofia_pipelines.defs.fees.compute import load_yaml  # noqa: E402
from sofia_pipelines.defs.risk.monte_carlo import (METHODS, Buffers, MonteCarloConfig, RiskHistory,  # noqa: E402
                                                   chunk_paths, run_monte_carlo)

HORIZON = 365
STRATEGIES = ("mm_lite", "funding_farmer")


def history(n_days: int = 120, seed: int = 11) -> RiskHistory:
    """A year-like history: GARCH(1,1) returns with a common factor for every symbol the desk trades, and
    strategy P&L that partly follows the market. Only its shape matters for the timing."""
    symbols = tuple(sorted({m["symbol"] for m in load_yaml("markets.yaml")["markets"]}))
    rng = np.random.default_rng(seed)
    var = np.full(len(symbols), 0.03 ** 2)
    market = np.empty((n_days, len(symbols)))
    for d in range(n_days):
        shock = 0.7 * rng.standard_t(4) + 0.3 * rng.standard_t(4, len(symbols))
        market[d] = np.sqrt(var) * shock / np.sqrt(2)
        var = 2e-5 + 0.1 * market[d] ** 2 + 0.85 * var
    trading = np.column_stack([40 + 300 * market[:, 0] * 50 + rng.normal(0, 150, n_days),
                               25 + rng.normal(0, 60, n_days)])
    exposure = rng.normal(0, 4000, (len(STRATEGIES), len(symbols)))
    return RiskHistory(tuple(range(n_days)), STRATEGIES, symbols, trading, market, exposure)


def draw_only(h: RiskHistory, cfg: MonteCarloConfig) -> None:
    """The random numbers `run_monte_carlo` draws, and nothing else."""
    k, scopes, n = len(h.strategies) + len(h.symbols), 1 + len(h.strategies), len(h.days)
    size = chunk_paths(cfg, k, scopes)
    n_chunks = -(-cfg.paths // size)
    block = min(cfg.block_days, n)
    buffers = Buffers()
    df = 5.0
    for m, method in enumerate(METHODS):
        streams = np.random.SeedSequence([cfg.seed, m]).spawn(n_chunks)
        for c, ss in enumerate(streams):
            count = min(size, cfg.paths - c * size)
            rng = np.random.default_rng(ss)
            if method == "bootstrap":
                rng.integers(0, n, size=(-(-cfg.horizon_days // block), count))
            else:
                rng.standard_normal(out=buffers.get("z", (k, count * cfg.horizon_days)))
                rng.chisquare(df, count * cfg.horizon_days)
                rng.standard_normal((k, count))
                rng.chisquare(df, count)


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def stats_of(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": len(times)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (100,000 paths: at least 3)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "risk.json")
    args = parser.parse_args(argv)
    h = history()
    results = []
    print(f"Monte Carlo risk: {len(h.symbols)} symbols + {len(h.strategies)} strategies, horizon {HORIZON} days, "
          f"{len(h.days)} days of history, both methods (block bootstrap + multivariate Student-t)")
    print(f"{'paths':>8} {'monte carlo s (min-max)':>26} {'numpy draws s (min-max)':>26} {'ratio':>7}")
    for paths in (10_000, 100_000):
        cfg = MonteCarloConfig(paths=paths, horizon_days=HORIZON)
        repeat = args.repeat if paths <= 10_000 else max(3, args.repeat // 2 + 1)
        run_monte_carlo(h, MonteCarloConfig(paths=200, horizon_days=HORIZON), 2000.0)  # warm up
        mc, draws = [], []
        for _ in range(repeat):  # interleaved, so load on the machine hits both alike
            mc += timed(lambda: run_monte_carlo(h, cfg, 2000.0), 1)
            draws += timed(lambda: draw_only(h, cfg), 1)
        m, d = stats_of(mc), stats_of(draws)
        ratio = m["median_s"] / d["median_s"]
        columns, scopes = len(h.strategies) + len(h.symbols), 1 + len(h.strategies)
        results.append({"paths": paths, "horizon_days": HORIZON, "chunk_paths": chunk_paths(cfg, columns, scopes),
                        "monte_carlo": m, "numpy_draws": d, "ratio": ratio})
        print(f"{paths:>8,} {m['median_s']:>10.3f} ({m['min_s']:.3f}-{m['max_s']:.3f}) "
              f"{d['median_s']:>10.3f} ({d['min_s']:.3f}-{d['max_s']:.3f}) {ratio:>6.2f}x")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_mib:,.0f} MiB; target ratio <= 1.5x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "risk_monte_carlo", "created_at": datetime.now(timezone.utc).isoformat(),
        "machine": {"python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform()},
        "symbols": len(h.symbols), "strategies": len(h.strategies), "history_days": len(h.days),
        "peak_rss_mib": peak_mib, "target_ratio": 1.5, "results": results}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
