"""The Monte Carlo's estimators against closed forms and slow loop references, the block bootstrap's memory
of volatility clustering, the Student-t fit, reproducibility from the seed, and memory at 100,000 paths."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from scipy import integrate, stats

from sofia_pipelines.defs.risk.monte_carlo import (MonteCarloConfig, RiskHistory, acf_abs, block_bootstrap_indices,
                                                   fit_student_t, max_drawdown, multivariate_t, normal_var_cvar,
                                                   run_monte_carlo, summarize_paths, t_scope_days, t_var_cvar,
                                                   var_cvar)


# --- slow, obviously correct references -----------------------------------------------------------------
def ref_var_cvar(pnl, alpha):
    """The m = ceil(n (1 - alpha)) worst outcomes, picked one by one."""
    left = [float(v) for v in pnl]
    m = max(1, math.ceil(len(left) * (1 - alpha) - 1e-9))
    worst = []
    for _ in range(m):
        i = min(range(len(left)), key=lambda j: left[j])
        worst.append(left.pop(i))
    return -worst[-1], -sum(worst) / m


def ref_max_drawdown(daily):
    cum, peak, dd = 0.0, 0.0, 0.0
    for x in daily:
        cum += x
        peak = max(peak, cum)
        dd = max(dd, peak - cum)
    return dd


def garch(n, seed, omega=1e-6, a=0.12, b=0.85):
    rng = np.random.default_rng(seed)
    var, out = omega / (1 - a - b), np.empty(n)
    for t in range(n):
        out[t] = math.sqrt(var) * rng.standard_normal()
        var = omega + a * out[t] ** 2 + b * var
    return out


# --- closed forms ------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.95, 0.99])
def test_normal_var_cvar_closed_form_and_samples(alpha):
    mu, sigma = 40.0, 1000.0
    var, cvar = normal_var_cvar(mu, sigma, alpha)
    assert var == pytest.approx(-(mu + sigma * stats.norm.ppf(1 - alpha)))
    q = mu + sigma * stats.norm.ppf(1 - alpha)  # the P&L quantile
    tail_mean = integrate.quad(lambda x: x * stats.norm.pdf(x, mu, sigma), -np.inf, q)[0] / (1 - alpha)
    assert cvar == pytest.approx(-tail_mean, rel=1e-7)
    sample = np.random.default_rng(3).normal(mu, sigma, 400_000)
    v, c = var_cvar(sample, alpha)
    assert v == pytest.approx(var, rel=0.02) and c == pytest.approx(cvar, rel=0.02)


@pytest.mark.parametrize("df", [3.0, 5.0, 12.0])
@pytest.mark.parametrize("alpha", [0.95, 0.99])
def test_student_t_var_cvar_closed_form_and_samples(df, alpha):
    mu, scale = -15.0, 700.0
    var, cvar = t_var_cvar(mu, scale, df, alpha)
    assert var == pytest.approx(-(mu + scale * stats.t.ppf(1 - alpha, df)))
    q = mu + scale * stats.t.ppf(1 - alpha, df)
    tail_mean = integrate.quad(lambda x: x * stats.t.pdf(x, df, mu, scale), -np.inf, q)[0] / (1 - alpha)
    assert cvar == pytest.approx(-tail_mean, rel=1e-6)
    sample = stats.t.rvs(df, mu, scale, size=600_000, random_state=np.random.default_rng(4))
    v, c = var_cvar(sample, alpha)
    assert v == pytest.approx(var, rel=0.03) and c == pytest.approx(cvar, rel=0.05)


def test_fat_tails_make_the_99_var_larger_than_the_normal_one_of_equal_variance():
    df, scale = 4.0, 500.0
    sigma = scale * math.sqrt(df / (df - 2))
    assert t_var_cvar(0, scale, df, 0.99)[1] > normal_var_cvar(0, sigma, 0.99)[1]


# --- estimators vs loops --------------------------------------------------------------------------------
def test_var_cvar_matches_the_loop_reference_on_small_inputs():
    rng = np.random.default_rng(5)
    for n in (1, 2, 3, 7, 19, 20, 21, 100, 257):
        for alpha in (0.5, 0.9, 0.95, 0.99):
            x = rng.standard_t(3, n) * 100
            assert var_cvar(x, alpha) == pytest.approx(ref_var_cvar(x, alpha), abs=1e-9), (n, alpha)
    assert var_cvar([5.0, -10.0, 3.0, -2.0], 0.75) == (10.0, 10.0)  # the single worst of four
    assert var_cvar([5.0, -10.0, 3.0, -2.0], 0.5) == (2.0, 6.0)


def test_max_drawdown_matches_the_loop_reference():
    assert max_drawdown(np.array([1.0, -3.0, 2.0, -1.0, 5.0])) == 3.0
    assert max_drawdown(np.array([-2.0, 1.0])) == 2.0  # the start is a peak
    assert max_drawdown(np.array([1.0, 2.0])) == 0.0
    rng = np.random.default_rng(6)
    paths = rng.normal(0.1, 1.0, (40, 60))
    assert max_drawdown(paths) == pytest.approx([ref_max_drawdown(p) for p in paths])


def test_path_summaries_match_loops():
    rng = np.random.default_rng(7)
    x = rng.normal(5.0, 100.0, (30, 2, 25))  # (horizon, scopes, paths)
    limit = 150.0
    s = summarize_paths(x, limit)
    for j in range(2):
        for p in range(25):
            d = x[:, j, p]
            mean, sd = sum(d) / len(d), float(np.std(d, ddof=1))
            down = math.sqrt(sum(min(v, 0.0) ** 2 for v in d) / len(d))
            assert s.total[j, p] == pytest.approx(sum(d))
            assert s.first_day[j, p] == d[0]
            assert s.drawdown[j, p] == pytest.approx(ref_max_drawdown(d))
            assert s.sharpe[j, p] == pytest.approx(mean / sd * math.sqrt(365))
            assert s.sortino[j, p] == pytest.approx(mean / down * math.sqrt(365))
            assert s.hit_days[j, p] == sum(v <= -limit for v in d)
            assert s.hit[j, p] == any(v <= -limit for v in d)


# --- bootstrap -------------------------------------------------------------------------------------------
def test_block_bootstrap_indices_are_circular_blocks():
    idx = block_bootstrap_indices(np.random.default_rng(8), n_days=10, paths=50, horizon=23, block=4)
    assert idx.shape == (23, 50) and idx.min() >= 0 and idx.max() <= 9
    for p in range(50):
        for start in range(0, 23, 4):
            run = idx[start:start + 4, p]
            assert all((b - a) % 10 == 1 for a, b in zip(run, run[1:]))


def test_block_bootstrap_keeps_the_autocorrelation_of_absolute_returns_and_iid_destroys_it():
    r = garch(4000, seed=9)
    original = acf_abs(r)
    assert original > 0.15  # the series clusters
    rng = np.random.default_rng(10)
    blocks = acf_abs(r[block_bootstrap_indices(rng, r.size, 200, r.size, block=50)].T).mean()
    iid = acf_abs(r[block_bootstrap_indices(rng, r.size, 200, r.size, block=1)].T).mean()
    assert blocks == pytest.approx(original, rel=0.15)
    assert abs(iid) < 0.02


# --- the Student-t model ---------------------------------------------------------------------------------
def test_student_t_fit_recovers_df_scale_and_correlation():
    rng = np.random.default_rng(11)
    corr = np.array([[1.0, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 1.0]])
    n, df = 20_000, 5.0
    z = rng.standard_normal((n, 3)) @ np.linalg.cholesky(corr).T
    y = np.array([10.0, 0.0, -1.0]) + z * np.array([100.0, 1.0, 0.02]) / np.sqrt(rng.chisquare(df, n) / df)[:, None]
    fit = fit_student_t(y)
    assert fit.df == pytest.approx(df, rel=0.15)
    assert fit.scale == pytest.approx([100.0, 1.0, 0.02], rel=0.05)
    assert fit.corr == pytest.approx(corr, abs=0.05)
    draws = multivariate_t(np.random.default_rng(12), 200_000, fit)
    assert np.corrcoef(draws.T) == pytest.approx(fit.corr, abs=0.02)
    assert stats.kurtosis(draws[:, 0]) > 1.0  # fat tails, as a t with df ~5


def test_constant_and_short_histories_fit_without_failing():
    y = np.column_stack([np.zeros(2), [1.0, -1.0], [0.5, 0.7]])
    fit = fit_student_t(y)
    assert fit.scale[0] == 0.0 and np.all(np.isfinite(fit.chol))
    with pytest.raises(ValueError, match="at least 2"):
        fit_student_t(np.ones((1, 3)))


def test_folded_simulation_is_exactly_the_multivariate_t_times_the_weights():
    h = small_history()
    fit, w = fit_student_t(h.joint()), h.weights()
    folded = t_scope_days(np.random.default_rng(13), fit, w, paths=500, horizon=1)[0]  # (scopes, paths)
    full = multivariate_t(np.random.default_rng(13), 500, fit) @ w
    assert folded.T == pytest.approx(full, rel=1e-9, abs=1e-9)


# --- the run ---------------------------------------------------------------------------------------------
def small_history(n=40, seed=14) -> RiskHistory:
    rng = np.random.default_rng(seed)
    market = garch(n, seed).reshape(n, 1) * 30 + rng.normal(0, 0.01, (n, 3))
    trading = np.column_stack([20 + 800 * market[:, 0] + rng.normal(0, 50, n), rng.normal(5, 10, n)])
    return RiskHistory(tuple(range(n)), ("mm_lite", "funding_farmer"), ("BTC/USDT", "ETH/USDT", "SOL/USDT"),
                       trading, market, np.array([[3000.0, -1000.0, 0.0], [5000.0, 0.0, -5000.0]]))


def test_weights_add_the_carried_positions_and_sum_the_book():
    h = small_history()
    day = h.joint()[0] @ h.weights()
    carried = h.exposure @ h.market[0]
    assert day[1:] == pytest.approx(h.trading[0] + carried)
    assert day[0] == pytest.approx(day[1:].sum())


def test_same_seed_same_numbers_other_seed_other_numbers():
    h = small_history()
    cfg = MonteCarloConfig(paths=3000, horizon_days=20, seed=1, max_chunk_mb=1)  # several chunks
    a, b = run_monte_carlo(h, cfg, 500.0), run_monte_carlo(h, cfg, 500.0)
    c = run_monte_carlo(h, cfg.model_copy(update={"seed": 2}), 500.0)
    assert a.chunk_paths < cfg.paths
    assert a.metrics() == b.metrics() and a.quantiles() == b.quantiles()
    assert np.array_equal(a.fan["student_t"], b.fan["student_t"])
    va = {(r["method"], r["scope"], r["metric"]): r["value"] for r in a.metrics()}
    vc = {(r["method"], r["scope"], r["metric"]): r["value"] for r in c.metrics()}
    assert va[("student_t", "book", "var_99_horizon")] != vc[("student_t", "book", "var_99_horizon")]
    assert va[("bootstrap", "book", "max_drawdown_mean")] != vc[("bootstrap", "book", "max_drawdown_mean")]


def test_simulated_book_var_meets_the_fitted_closed_form():
    h = small_history()
    cfg = MonteCarloConfig(paths=40_000, horizon_days=5, seed=3)
    result = run_monte_carlo(h, cfg, 1e9)
    loc, scale = result.fit.scope_t(h.weights())
    got = {(r["method"], r["scope"], r["metric"]): r["value"] for r in result.metrics()}
    for alpha, tol in ((0.95, 0.03), (0.99, 0.06)):
        var, cvar = t_var_cvar(loc[0], scale[0], result.fit.df, alpha)
        pct = int(alpha * 100)
        assert got[("student_t", "book", f"var_{pct}_1d")] == pytest.approx(var, rel=tol)
        assert got[("student_t", "book", f"cvar_{pct}_1d")] == pytest.approx(cvar, rel=2 * tol)
    # the bootstrap's one-day figures are the history's own, day for day
    hist_var = var_cvar(h.joint() @ h.weights()[:, 0], 0.95)[0]
    assert got[("bootstrap", "book", "var_95_1d")] == pytest.approx(hist_var, rel=0.1)


def test_metrics_cover_every_method_scope_and_figure():
    h = small_history()
    result = run_monte_carlo(h, MonteCarloConfig(paths=500, horizon_days=10), 200.0)
    rows = result.metrics()
    names = {r["metric"] for r in rows}
    assert {"var_95_1d", "var_99_1d", "cvar_95_1d", "cvar_99_1d", "var_99_horizon", "cvar_99_horizon",
            "max_drawdown_mean", "max_drawdown_p99", "sharpe", "sortino", "p_hit_daily_loss_limit"} <= names
    assert {(r["method"], r["scope"]) for r in rows} == {(m, s) for m in ("bootstrap", "student_t")
                                                         for s in ("book", "mm_lite", "funding_farmer")}
    sharpe = [r for r in rows if r["metric"] == "sharpe"]
    assert all(r["ci_low"] <= r["value"] <= r["ci_high"] for r in sharpe)
    for r in rows:
        if r["metric"].startswith("cvar_"):
            var = next(x for x in rows if (x["method"], x["scope"], x["metric"]) ==
                       (r["method"], r["scope"], r["metric"][1:]))
            assert r["value"] >= var["value"] - 1e-9
    assert result.fan["bootstrap"].shape == (500, 10)
    with pytest.raises(ValueError, match="at least 2"):
        run_monte_carlo(RiskHistory((0,), (), (), np.zeros((1, 0)), np.zeros((1, 0)), np.zeros((0, 0))),
                        MonteCarloConfig(), 1.0)


def _peak_traced(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_100k_paths_run_in_chunks_of_bounded_memory():
    h = small_history()
    cfg = MonteCarloConfig(paths=100_000, horizon_days=60, max_chunk_mb=32)
    peak = _peak_traced(lambda: run_monte_carlo(h, cfg, 500.0))
    whole = 100_000 * 60 * (h.joint().shape[1] + 1) * 8  # the normals and mixing of every path at once
    # a chunk's arrays, plus the per-path summaries (100k x 3 scopes x 7 figures) and the fan's paths
    assert peak < 120 * 2**20 and whole > 2.5 * peak, f"peak {peak / 2**20:.0f} MiB"


@pytest.mark.slow
def test_100k_paths_over_a_year_on_every_symbol_fit_in_memory():
    from sofia_pipelines.defs.fees.compute import load_yaml

    symbols = sorted({m["symbol"] for m in load_yaml("markets.yaml")["markets"]})
    rng = np.random.default_rng(15)
    n = 60
    h = RiskHistory(tuple(range(n)), ("mm_lite", "funding_farmer"), tuple(symbols), rng.normal(0, 100, (n, 2)),
                    rng.standard_t(4, (n, len(symbols))) * 0.02, rng.normal(0, 1000, (2, len(symbols))))
    cfg = MonteCarloConfig(paths=100_000, horizon_days=365)
    peak = _peak_traced(lambda: run_monte_carlo(h, cfg, 2000.0))
    assert peak < 1.0 * 2**30, f"peak {peak / 2**20:.0f} MiB"  # whole: 100k x 365 x 17 x 8 B = 5 GiB
