"""Monte Carlo of the book's daily P&L (feature H), in plain numpy: vectorized over paths, chunked so that
100,000 paths fit in memory, seeded and reproducible.

A simulated day is one joint vector y = [trading P&L of each strategy (USD) | simple return of each market
symbol]. A scope's P&L that day is w . y: the strategy's trading P&L (what the backtest of its rules earned,
each day started flat) plus the positions it carries (USD, signed, as the backtest's last day left them)
revalued by the symbols' returns; the book is the sum of the strategies. Two generators of y:

- block bootstrap: paths of whole historical days drawn in circular blocks of consecutive days, so the
  strategies' P&L and the market's moves stay paired and volatility clustering survives;
- Student-t: y = mu + scale * (L z) / sqrt(g / nu), z ~ N(0, I), g ~ chi2(nu) per day (one g for every column:
  a multivariate t), L the Cholesky factor of the columns' correlation (Ledoit-Wolf shrunk, because history is
  short next to the number of symbols); nu and the common scale by maximum likelihood on the pooled
  standardized history, so the market's many columns inform the tails of the few strategy columns.

From each path: P&L on its first day and over the horizon (VaR, CVaR), maximum drawdown of cumulative P&L,
realized Sharpe and Sortino (annualized, 365 trading days), and whether a day loses the daily loss limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import stats

DAYS_PER_YEAR = 365  # crypto trades every day
QUANTILES = (0.01, 0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.99)
FAN_QUANTILES = (0.05, 0.25, 0.50, 0.75, 0.95)
METHODS = ("bootstrap", "student_t")


class MonteCarloConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    paths: int = Field(10_000, ge=100, description="simulated paths per method")
    horizon_days: int = Field(30, ge=1, description="days per path")
    block_days: int = Field(5, ge=1, description="block length of the bootstrap (capped at the history's length)")
    seed: int = Field(20261101, ge=0)
    history_days: int = Field(365, ge=2, description="trailing partitions of backtest and market history used")
    min_history_days: int = Field(2, ge=2, description="fewer days of history than this: no Monte Carlo")
    max_chunk_mb: float = Field(256.0, gt=0, description="memory for one chunk of paths (the arrays of a chunk)")
    fan_paths: int = Field(2000, ge=10, description="paths kept whole for the fan chart")
    ci: float = Field(0.95, gt=0, lt=1, description="coverage of the Sharpe and Sortino intervals")
    df_min: float = Field(3.0, gt=2.0, description="Student-t degrees of freedom are kept within [df_min, df_max]")
    df_max: float = Field(50.0, gt=2.0)

    @model_validator(mode="after")
    def _bounds(self):
        if self.df_max < self.df_min:
            raise ValueError(f"df_max {self.df_max} is below df_min {self.df_min}")
        if self.min_history_days > self.history_days:
            raise ValueError(f"min_history_days {self.min_history_days} exceeds history_days {self.history_days}")
        return self


@dataclass(frozen=True)
class RiskHistory:
    """What the Monte Carlo draws from: one row per historical day."""
    days: tuple
    strategies: tuple[str, ...]
    symbols: tuple[str, ...]
    trading: np.ndarray  # (days, strategies) USD
    market: np.ndarray  # (days, symbols) simple returns
    exposure: np.ndarray  # (strategies, symbols) USD carried, signed

    def __post_init__(self):
        n, s, m = len(self.days), len(self.strategies), len(self.symbols)
        for name, arr, shape in (("trading", self.trading, (n, s)), ("market", self.market, (n, m)),
                                 ("exposure", self.exposure, (s, m))):
            if arr.shape != shape:
                raise ValueError(f"risk history: {name} has shape {arr.shape}, expected {shape}")
            bad = ~np.isfinite(arr)
            if bad.any():
                i = tuple(int(x) for x in np.argwhere(bad)[0])
                raise ValueError(f"risk history: {name}{list(i)} is not finite ({arr[i]})")

    @property
    def scopes(self) -> tuple[str, ...]:
        return ("book", *self.strategies)

    def joint(self) -> np.ndarray:
        return np.hstack([self.trading, self.market])

    def weights(self) -> np.ndarray:
        """(columns, scopes): a scope's daily P&L is joint_row @ weights[:, scope]."""
        s, m = len(self.strategies), len(self.symbols)
        w = np.zeros((s + m, 1 + s))
        for j in range(s):
            w[j, 0] = w[j, 1 + j] = 1.0
            w[s:, 1 + j] = self.exposure[j]
        w[s:, 0] = self.exposure.sum(axis=0)
        return w


# --- closed forms (the parametric model's 1-day figures, and the tests' yardstick) ----------------------
def normal_var_cvar(mu: float, sigma: float, alpha: float) -> tuple[float, float]:
    """VaR and CVaR (losses, positive) at confidence `alpha` of N(mu, sigma^2) P&L."""
    z = stats.norm.ppf(alpha)
    return sigma * z - mu, sigma * stats.norm.pdf(z) / (1 - alpha) - mu


def t_var_cvar(mu: float, scale: float, df: float, alpha: float) -> tuple[float, float]:
    """VaR and CVaR of P&L = mu + scale * T, T standard Student-t with `df` degrees of freedom."""
    t = stats.t.ppf(alpha, df)
    es = stats.t.pdf(t, df) / (1 - alpha) * (df + t * t) / (df - 1)
    return scale * t - mu, scale * es - mu


# --- estimators on samples --------------------------------------------------------------------------
def var_cvar(pnl: np.ndarray, alpha: float) -> tuple[float, float]:
    """Historical VaR and CVaR at `alpha` of P&L samples: the m = ceil(n (1 - alpha)) worst outcomes;
    VaR is minus the m-th worst, CVaR minus their mean. Losses are positive."""
    x = np.asarray(pnl, dtype=float).ravel()
    if x.size == 0:
        raise ValueError("var_cvar: no samples")
    m = max(1, math.ceil(x.size * (1 - alpha) - 1e-9))
    tail = np.partition(x, m - 1)[:m]
    return float(-tail.max()), float(-tail.mean())


def max_drawdown(daily: np.ndarray) -> np.ndarray:
    """Largest fall of cumulative P&L from its running peak (the start, 0, counts as a peak), along the last
    axis; >= 0, in the P&L's units."""
    cum = np.cumsum(daily, axis=-1)
    peak = np.maximum.accumulate(cum, axis=-1)
    np.maximum(peak, 0.0, out=peak)
    peak -= cum
    return peak.max(axis=-1)


# --- generators -------------------------------------------------------------------------------------
def block_bootstrap_indices(rng: np.random.Generator, n_days: int, paths: int, horizon: int,
                            block: int) -> np.ndarray:
    """(horizon, paths) indices of historical days, time-major: each path is circular blocks of `block`
    consecutive days from uniform starts (Politis-Romano), so dependence within a block is kept."""
    block = max(1, min(block, n_days))
    n_blocks = -(-horizon // block)
    starts = rng.integers(0, n_days, size=(n_blocks, paths))
    idx = starts[:, None, :] + np.arange(block)[None, :, None]
    np.subtract(idx, n_days, out=idx, where=idx >= n_days)  # wrap around; cheaper than %
    return idx.reshape(n_blocks * block, paths)[:horizon]


@dataclass(frozen=True)
class StudentTFit:
    mu: np.ndarray  # (k,)
    scale: np.ndarray  # (k,) t scale per column (0 for a constant column)
    corr: np.ndarray  # (k, k)
    df: float
    shrinkage: float  # Ledoit-Wolf weight on the identity
    chol: np.ndarray = field(repr=False)

    def scope_t(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Location and scale of each scope's one-day P&L, which is exactly Student-t with `df` (a linear
        combination of a multivariate t)."""
        a = self.chol.T @ (self.scale[:, None] * w)
        return self.mu @ w, np.sqrt((a * a).sum(axis=0))


def ledoit_wolf_shrinkage(x: np.ndarray) -> float:
    """Ledoit-Wolf (2004) weight on the scaled identity for the covariance of centred rows `x` (n, p)."""
    n, p = x.shape
    s = x.T @ x / n
    mu = np.trace(s) / p
    d2 = ((s - mu * np.eye(p)) ** 2).sum() / p
    if d2 <= 0:
        return 1.0
    b2 = sum((((np.outer(r, r) - s) ** 2).sum()) for r in x) / (n * n) / p
    return float(min(b2, d2) / d2)


def fit_student_t(y: np.ndarray, df_min: float = 3.0, df_max: float = 50.0) -> StudentTFit:
    """Multivariate Student-t of the rows of `y` (days, columns): per-column mean and scale, a common df and
    scale factor fitted by maximum likelihood on the pooled standardized values, and the Ledoit-Wolf shrunk
    correlation."""
    n, k = y.shape
    if n < 2:
        raise ValueError(f"fit_student_t: {n} day(s) of history; at least 2 are needed")
    mu = y.mean(axis=0)
    sd = y.std(axis=0, ddof=1)
    live = sd > 1e-12 * np.maximum(1.0, np.abs(mu))
    corr = np.eye(k)
    scale = np.zeros(k)
    df, shrink = df_max, 1.0
    if live.any():
        u = (y[:, live] - mu[live]) / sd[live]
        pooled = u.ravel()
        df_fit, _, c = stats.t.fit(pooled, floc=0)
        df = float(np.clip(df_fit, df_min, df_max))
        if df != df_fit:
            _, _, c = stats.t.fit(pooled, fdf=df, floc=0)
        scale[live] = sd[live] * c
        if live.sum() > 1:
            shrink = ledoit_wolf_shrinkage(u)
            cov = (1 - shrink) * (u.T @ u / n) + shrink * np.eye(int(live.sum())) * (u * u).mean()
            d = np.sqrt(np.diag(cov))
            corr[np.ix_(live, live)] = cov / np.outer(d, d)
    try:
        chol = np.linalg.cholesky(corr)
    except np.linalg.LinAlgError:  # numerically semi-definite: nudge towards the identity
        chol = np.linalg.cholesky(0.999 * corr + 0.001 * np.eye(k))
    return StudentTFit(mu, scale, corr, df, shrink, chol)


def multivariate_t(rng: np.random.Generator, n: int, fit: StudentTFit) -> np.ndarray:
    """(n, k) draws of the fitted multivariate t: Cholesky-correlated normals over one chi-square mixing
    variable per row."""
    z = rng.standard_normal((len(fit.mu), n))
    g = rng.chisquare(fit.df, n)
    return fit.mu + ((fit.chol @ z) / np.sqrt(g / fit.df)).T * fit.scale


class Buffers:
    """Arrays reused from chunk to chunk: a fresh 100 MB array per chunk costs page faults that rival the
    arithmetic done in it."""

    def __init__(self):
        self._flat: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype=np.float64) -> np.ndarray:
        size = math.prod(shape)
        flat = self._flat.get(name)
        if flat is None or flat.size < size or flat.dtype != dtype:
            flat = self._flat[name] = np.empty(size, dtype)
        return flat[:size].reshape(shape)


def t_scope_days(rng: np.random.Generator, fit: StudentTFit, w: np.ndarray, paths: int, horizon: int,
                 buffers: Buffers | None = None) -> np.ndarray:
    """(horizon, scopes, paths) daily P&L of the multivariate t, time-major, with the Cholesky factor, scales
    and weights folded into one (scopes, columns) matrix so the simulated columns are never materialized:
    for one day it is exactly `multivariate_t(rng, paths, fit) @ w` from the same draws. The normals are drawn
    a day at a time, each day's folded while still in cache: the same stream, in the same order, as one
    (horizon, columns, paths) array, without that array."""
    buffers = buffers or Buffers()
    a = (fit.scale[:, None] * w).T @ fit.chol
    z = buffers.get("z", (len(fit.mu), paths))
    out = buffers.get("x", (horizon, w.shape[1], paths))
    for day in out:
        np.matmul(a, rng.standard_normal(out=z), out=day)
    g = rng.chisquare(fit.df, (horizon, paths))
    np.divide(fit.df, g, out=g)
    out *= np.sqrt(g, out=g)[:, None, :]
    out += (fit.mu @ w)[None, :, None]
    return out


# --- the run ----------------------------------------------------------------------------------------
@dataclass
class PathSummaries:
    """Per scope and path: arrays of shape (scopes, paths)."""
    first_day: np.ndarray
    total: np.ndarray
    drawdown: np.ndarray
    sharpe: np.ndarray
    sortino: np.ndarray
    hit: np.ndarray  # some day lost at least the daily loss limit
    hit_days: np.ndarray  # how many days did


def summarize_paths(x: np.ndarray, loss_limit: float) -> PathSummaries:
    """Summaries of daily P&L `x` (horizon, ...), time-major; the arrays returned have the shape of x[0].
    This is the Monte Carlo's hot spot after the random draws. Everything is carried day by day over whole
    (scopes x paths) slices, which stay in cache: cumulative P&L, its running peak and the drawdown (a few times
    faster than numpy's cumsum and maximum.accumulate, which run each path's days one after another), and the
    sums of squares and loss-limit days (faster than whole-array passes, and the same sums in the same order)."""
    horizon, shape = x.shape[0], x.shape[1:]
    cum, peak, drawdown, sumsq, downsq = (np.zeros(shape) for _ in range(5))
    hit_days = np.zeros(shape, dtype=np.intp)
    scratch, neg = np.empty(shape), np.empty(shape)
    losing = np.empty(shape, dtype=np.bool_)
    for day in x:
        cum += day
        np.maximum(peak, cum, out=peak)
        np.subtract(peak, cum, out=scratch)
        np.maximum(drawdown, scratch, out=drawdown)
        sumsq += np.multiply(day, day, out=scratch)
        np.minimum(day, 0.0, out=neg)
        downsq += np.multiply(neg, neg, out=scratch)
        hit_days += np.less_equal(neg, -loss_limit, out=losing)
    total = cum
    mean = total / horizon
    downside = np.sqrt(downsq / horizon)
    root = math.sqrt(DAYS_PER_YEAR)
    with np.errstate(invalid="ignore", divide="ignore"):
        # one-pass variance; a path whose variance is lost in rounding against its mean counts as constant
        var = (sumsq - total * mean) / (horizon - 1) if horizon > 1 else np.zeros(shape)
        var = np.where(var > 1e-12 * sumsq / horizon, var, 0.0)
        sd = np.sqrt(var)
        sharpe = np.where(sd > 0, mean / sd * root, np.nan)
        sortino = np.where(downside > 0, mean / downside * root, np.nan)
    return PathSummaries(x[0].copy(), total, drawdown, sharpe, sortino, hit_days > 0, hit_days)


@dataclass
class MonteCarloResult:
    scopes: tuple[str, ...]
    paths: int
    horizon_days: int
    history_days: int
    summaries: dict[str, PathSummaries]  # per method
    fan: dict[str, np.ndarray]  # per method: (fan_paths, horizon) cumulative book P&L
    fit: StudentTFit
    block_days: int
    chunk_paths: int
    loss_limit: float
    market_var_99: dict[str, np.ndarray] = field(default_factory=dict)  # per method: (symbols,) 1-day, returns

    def metrics(self, ci: float = 0.95) -> list[dict]:
        """One row per method, scope and metric: value and, for Sharpe and Sortino, the interval across paths."""
        lo, hi = (1 - ci) / 2 * 100, (1 + ci) / 2 * 100
        rows = []
        for method, s in self.summaries.items():
            for i, scope in enumerate(self.scopes):
                def row(metric, value, low=None, high=None):
                    rows.append({"method": method, "scope": scope, "metric": metric, "value": float(value),
                                 "ci_low": None if low is None else float(low),
                                 "ci_high": None if high is None else float(high)})
                for alpha in (0.95, 0.99):
                    pct = int(round(alpha * 100))
                    v1, c1 = var_cvar(s.first_day[i], alpha)
                    vh, ch = var_cvar(s.total[i], alpha)
                    row(f"var_{pct}_1d", v1)
                    row(f"cvar_{pct}_1d", c1)
                    row(f"var_{pct}_horizon", vh)
                    row(f"cvar_{pct}_horizon", ch)
                row("expected_pnl_horizon", s.total[i].mean())
                row("max_drawdown_mean", s.drawdown[i].mean())
                for q in (0.5, 0.95, 0.99):
                    row(f"max_drawdown_p{int(round(q * 100))}", np.quantile(s.drawdown[i], q))
                for name, values in (("sharpe", s.sharpe[i]), ("sortino", s.sortino[i])):
                    finite = values[np.isfinite(values)]
                    if finite.size:
                        row(name, np.median(finite), np.percentile(finite, lo), np.percentile(finite, hi))
                row("p_hit_daily_loss_limit", s.hit[i].mean())
                row("p_hit_daily_loss_limit_per_day", s.hit_days[i].sum() / (self.paths * self.horizon_days))
        return rows

    def quantiles(self) -> list[dict]:
        rows = []
        for method, s in self.summaries.items():
            for i, scope in enumerate(self.scopes):
                for quantity, values in (("pnl_1d", s.first_day[i]), ("pnl_horizon", s.total[i]),
                                         ("max_drawdown", s.drawdown[i])):
                    for q, v in zip(QUANTILES, np.quantile(values, QUANTILES)):
                        rows.append({"method": method, "scope": scope, "quantity": quantity, "q": q,
                                     "value": float(v)})
        return rows


def chunk_paths(cfg: MonteCarloConfig, columns: int, scopes: int) -> int:
    """Paths per chunk so one chunk's arrays (normals, mixing, scope P&L and its reductions) fit max_chunk_mb.
    Each chunk draws from a stream of its own, so this also fixes which numbers a path gets: the bound stays as
    it is although the normals and reductions no longer take whole (horizon x paths) arrays."""
    per_path = 8 * cfg.horizon_days * (columns + 1 + 6 * scopes)
    return int(max(1, min(cfg.paths, cfg.max_chunk_mb * 2**20 // per_path)))


def _chunks(total: int, size: int):
    for start in range(0, total, size):
        yield start, min(size, total - start)


def _merge(parts: list[PathSummaries]) -> PathSummaries:
    return PathSummaries(*(np.concatenate([getattr(p, f) for p in parts], axis=-1)
                           for f in PathSummaries.__dataclass_fields__))


def run_monte_carlo(history: RiskHistory, cfg: MonteCarloConfig, loss_limit: float) -> MonteCarloResult:
    """Both methods over `cfg.paths` paths of `cfg.horizon_days` days, chunk by chunk; each chunk draws from
    its own stream spawned from (seed, method), so the numbers depend only on the config and the history."""
    n = len(history.days)
    if n < cfg.min_history_days:
        raise ValueError(f"Monte Carlo: {n} day(s) of history, at least {cfg.min_history_days} needed")
    y, w = history.joint(), history.weights()
    per_day_t = np.ascontiguousarray((y @ w).T)  # (scopes, days): each historical day on today's book
    fit = fit_student_t(y, cfg.df_min, cfg.df_max)
    size = chunk_paths(cfg, y.shape[1], w.shape[1])
    n_chunks = -(-cfg.paths // size)
    block = min(cfg.block_days, n)
    summaries, fans, market = {}, {}, {}
    buffers = Buffers()
    for m, method in enumerate(METHODS):
        streams = np.random.SeedSequence([cfg.seed, m]).spawn(n_chunks)
        parts, fan_parts, kept = [], [], 0
        first_market = []
        for (start, count), ss in zip(_chunks(cfg.paths, size), streams):
            rng = np.random.default_rng(ss)
            if method == "bootstrap":
                idx = block_bootstrap_indices(rng, n, count, cfg.horizon_days, block)
                x = buffers.get("x", (cfg.horizon_days, w.shape[1], count))
                for j, column in enumerate(per_day_t):
                    x[:, j, :] = column[idx]
                parts.append(summarize_paths(x, loss_limit))  # (horizon, scopes, paths)
                book = x[:, 0, :]
                if history.symbols:
                    first_market.append(history.market[idx[0]])
            else:
                x = t_scope_days(rng, fit, w, count, cfg.horizon_days, buffers)
                parts.append(summarize_paths(x, loss_limit))
                book = x[:, 0, :]
                if history.symbols:  # one more day per path of the whole vector, for the market's own figures
                    first_market.append(multivariate_t(rng, count, fit)[:, len(history.strategies):])
            if kept < cfg.fan_paths:
                take = min(count, cfg.fan_paths - kept)
                fan_parts.append(np.cumsum(book[:, :take], axis=0).T)
                kept += take
        summaries[method] = _merge(parts)
        fans[method] = np.concatenate(fan_parts)
        if first_market:
            returns = np.concatenate(first_market)
            # each symbol's var_cvar(returns[:, j], 0.99)[0]: minus its m-th smallest return
            m_worst = max(1, math.ceil(returns.shape[0] * (1 - 0.99) - 1e-9))
            market[method] = -np.partition(returns, m_worst - 1, axis=0)[m_worst - 1]
    return MonteCarloResult(history.scopes, cfg.paths, cfg.horizon_days, n, summaries, fans, fit, block, size,
                            loss_limit, market)


def fan_quantiles(fan: np.ndarray) -> np.ndarray:
    """(len(FAN_QUANTILES), horizon + 1) quantiles of cumulative P&L by day, starting at 0."""
    q = np.quantile(fan, FAN_QUANTILES, axis=0)
    return np.hstack([np.zeros((len(FAN_QUANTILES), 1)), q])


def acf_abs(x: np.ndarray, lag: int = 1) -> np.ndarray:
    """Autocorrelation at `lag` of |x| along the last axis (one value per row)."""
    a = np.abs(np.asarray(x, dtype=float))
    a = a - a.mean(axis=-1, keepdims=True)
    num = (a[..., lag:] * a[..., :-lag]).sum(axis=-1)
    den = (a * a).sum(axis=-1)
    return num / den
