"""Risk (H) as pure functions: the configuration (config/risk.yaml), the limits per venue and symbol and how
the risk run scales them, the market's daily returns, and the history the Monte Carlo draws from."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from sofia_pipelines.defs.fees.compute import CONFIG_DIR, load_yaml
from sofia_pipelines.validation import validated
from sofia_pipelines.defs.risk.monte_carlo import MonteCarloConfig, RiskHistory
from sofia_runtime.config import STRATEGIES
from sofia_runtime.schemas import RISK_LIMITS

CONFIG_FILE = "risk.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DefaultLimits(_Strict):
    max_position_usd: float = Field(gt=0)
    max_notional_usd: float = Field(gt=0)
    max_open_orders: int = Field(ge=1)
    daily_loss_limit_usd: float = Field(gt=0)


class StrategyBacktest(_Strict):
    max_instruments: int | None = Field(None, ge=1, description="only the strategy's N best instruments by "
                                                                "symbol_rankings; null: all it asks for")
    runtime: dict = Field(default_factory=dict, description="RuntimeConfig fields for the backtest, e.g. "
                                                            "{mm_lite: {requote_s: 120}}")


class BacktestConfig(_Strict):
    strategies: dict[str, StrategyBacktest] = Field(default_factory=lambda: {
        "mm_lite": StrategyBacktest(), "funding_farmer": StrategyBacktest()})

    @field_validator("strategies")
    @classmethod
    def _known(cls, value: dict) -> dict:
        unknown = sorted(set(value) - set(STRATEGIES))
        if unknown:
            raise ValueError(f"unknown strategy {unknown}; the runtime has {list(STRATEGIES)}")
        if not value:
            raise ValueError("no strategy to backtest")
        return value


class ScalingConfig(_Strict):
    metric: str = Field("cvar_99_1d", description="the book's Monte Carlo figure held to the risk budget")
    min_factor: float = Field(0.25, gt=0)
    max_factor: float = Field(2.0, gt=0)
    full_weight_days: int = Field(30, ge=1, description="days of backtest history for the factor to count fully; "
                                                        "with fewer it is pulled towards 1 in proportion")

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if not re.fullmatch(r"c?var_(95|99)_1d", value):
            raise ValueError(f"{value!r} is not one of var_95_1d, var_99_1d, cvar_95_1d, cvar_99_1d")
        return value


class ScheduleConfig(_Strict):
    time_utc: str = Field("01:30", description="HH:MM UTC; the run is for the previous day's partition")
    running: bool = Field(True, description="the schedule's default status")

    @field_validator("time_utc")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        m = re.fullmatch(r"(\d{1,2}):(\d{2})", value)
        if not m or int(m[1]) > 23 or int(m[2]) > 59:
            raise ValueError(f"{value!r} is not a time HH:MM")
        return value

    @property
    def hour(self) -> int:
        return int(self.time_utc.split(":")[0])

    @property
    def minute(self) -> int:
        return int(self.time_utc.split(":")[1])


class RiskConfig(_Strict):
    risk_budget_usd: float = Field(gt=0)
    default: DefaultLimits
    backtest: BacktestConfig = BacktestConfig()
    monte_carlo: MonteCarloConfig = MonteCarloConfig()
    scaling: ScalingConfig = ScalingConfig()
    schedule: ScheduleConfig = ScheduleConfig()


def risk_config(data: dict | None = None, origin: str | None = None) -> RiskConfig:
    """config/risk.yaml validated; an error names the file and every bad field."""
    origin = origin or str(CONFIG_DIR / CONFIG_FILE)
    if data is None:
        data = load_yaml(CONFIG_FILE)
    return validated(RiskConfig, data, origin)


# --- limits ------------------------------------------------------------------------------------------
def risk_limits_frame(markets: pl.DataFrame, prices_usd: dict[str, float], config: RiskConfig,
                      factor: float = 1.0) -> pl.DataFrame:
    """Limits per venue and symbol: the config's defaults (no venue-symbol may lose more than its share of the
    budget) with max_position and the daily loss limit multiplied by `factor`; the loss limit never exceeds
    the whole budget."""
    d = config.default
    venues = markets["venue"].n_unique()
    loss = min(d.daily_loss_limit_usd, config.risk_budget_usd / max(venues, 1))
    rows = []
    for m in markets.iter_rows(named=True):
        price = prices_usd.get(m["base"])
        if price is None or not price > 0:
            continue
        rows.append({"venue": m["venue"], "symbol": m["symbol"], "max_position": d.max_position_usd * factor / price,
                     "max_notional_usd": d.max_notional_usd, "max_open_orders": d.max_open_orders,
                     "daily_loss_limit_usd": min(loss * factor, config.risk_budget_usd)})
    return RISK_LIMITS.conform(pl.DataFrame(rows, schema=RISK_LIMITS.polars_schema), "risk_limits")


@dataclass(frozen=True)
class Scaling:
    factor: float  # what the limits are multiplied by
    raw_factor: float | None  # budget / risk
    clipped_factor: float | None  # raw within [min_factor, max_factor]
    weight: float  # credibility of the history, in [0, 1]
    risk_usd: float | None  # the book's figure the budget is held against
    history_days: int
    rule: str


SCALING_RULE = ("factor = 1 + w * (clip(budget / R, min_factor, max_factor) - 1), R = the book's {metric} "
                "(largest of the bootstrap and Student-t estimates, USD), w = min(1, history days / "
                "{full_weight_days}); max_position and daily_loss_limit are multiplied by it (the loss limit "
                "capped at the budget). No Monte Carlo for the day: factor 1, the config defaults.")


def limit_scale(risk_usd: float | None, history_days: int, budget_usd: float, cfg: ScalingConfig) -> Scaling:
    """The factor that brings the book's risk figure within the budget (P&L risk taken as proportional to the
    position limits), kept within bounds and pulled towards 1 when the history is short."""
    rule = SCALING_RULE.format(metric=cfg.metric, full_weight_days=cfg.full_weight_days)
    if risk_usd is None or history_days <= 0 or not math.isfinite(risk_usd):
        return Scaling(1.0, None, None, 0.0, risk_usd, history_days, rule)
    raw = math.inf if risk_usd <= 0 else budget_usd / risk_usd
    clipped = min(max(raw, cfg.min_factor), cfg.max_factor)
    weight = min(1.0, history_days / cfg.full_weight_days)
    return Scaling(1.0 + weight * (clipped - 1.0), raw, clipped, weight, risk_usd, history_days, rule)


def book_risk(mc: pl.DataFrame, metric: str) -> tuple[float | None, int]:
    """The book's `metric` from a day's Monte Carlo rows (the larger of the methods) and its history length."""
    rows = mc.filter((pl.col("scope") == "book") & (pl.col("metric") == metric))
    if rows.is_empty():
        return None, 0
    return float(rows["value"].max()), int(rows["history_days"].max())


# --- the Monte Carlo's inputs -----------------------------------------------------------------------
def market_daily_returns(first_last: pl.DataFrame) -> pl.DataFrame:
    """Simple return of each symbol per day, from each venue's first open and last close of the day (the
    median across venues): columns day, symbol, ret."""
    return (first_last.filter((pl.col("first_open") > 0) & (pl.col("last_close") > 0))
            .with_columns((pl.col("last_close") / pl.col("first_open") - 1.0).alias("ret"))
            .group_by("day", "symbol").agg(pl.col("ret").median())
            .sort("day", "symbol"))


def risk_history(pnl: pl.DataFrame, returns: pl.DataFrame, positions: pl.DataFrame,
                 strategies: list[str]) -> tuple[RiskHistory, list[str]]:
    """The Monte Carlo's history: days on which every strategy has a backtest and the market has returns;
    the symbols with a return on each of those days; the strategies' carried positions summed by symbol.
    Also notes on what was left out."""
    notes = []
    trading = (pnl.filter(pl.col("strategy").is_in(strategies))
               .pivot(on="strategy", index="day", values="net_usd"))
    for s in strategies:
        if s not in trading.columns:
            trading = trading.with_columns(pl.lit(None, dtype=pl.Float64).alias(s))
    trading = trading.select("day", *strategies)
    full = trading.drop_nulls()
    if full.height < trading.height:
        notes.append(f"{trading.height - full.height} day(s) without a backtest of every strategy left out")
    market = returns.pivot(on="symbol", index="day", values="ret") if returns.height else \
        pl.DataFrame(schema={"day": pl.Date})
    joined = full.join(market, on="day", how="inner").sort("day")
    if joined.height < full.height:
        notes.append(f"{full.height - joined.height} backtest day(s) without market returns left out")
    symbols = sorted(c for c in market.columns if c != "day" and joined[c].null_count() == 0)
    dropped = sorted(c for c in market.columns if c != "day" and c not in symbols)
    if dropped:
        notes.append(f"symbols without a return on every day left out: {dropped}")
    exposure = np.zeros((len(strategies), len(symbols)))
    col = {s: j for j, s in enumerate(symbols)}
    unpriced = set()
    for r in positions.iter_rows(named=True):
        if r["strategy"] not in strategies:
            continue
        if r["symbol"] in col:
            exposure[strategies.index(r["strategy"]), col[r["symbol"]]] += r["notional_usd"]
        else:
            unpriced.add(r["symbol"])
    if unpriced:
        notes.append(f"carried positions in symbols without market returns left out: {sorted(unpriced)}")
    history = RiskHistory(tuple(joined["day"].to_list()), tuple(strategies), tuple(symbols),
                          joined.select(strategies).to_numpy().astype(float).reshape(joined.height, len(strategies)),
                          joined.select(symbols).to_numpy().astype(float).reshape(joined.height, len(symbols)),
                          exposure)
    return history, notes


# --- what the checks hold the output to ----------------------------------------------------------------
def backtest_problems(pnl: pl.DataFrame, fills: pl.DataFrame) -> list[str]:
    """What is wrong with a day's backtest P&L and fills: the book not the strategies' sum, a row whose net is
    not gross - fees + funding - tax, a strategy whose stored fills differ from its engine's count."""
    problems = []
    parts, book = pnl.filter(pl.col("strategy") != "book"), pnl.filter(pl.col("strategy") == "book")
    if book.height != 1:
        problems.append(f"{book.height} book rows, expected 1")
    else:
        for col in ("net_usd", "gross_usd", "fees_usd", "funding_usd", "tax_usd", "fills"):
            if abs(book[col][0] - parts[col].sum()) > 1e-6 * max(1.0, abs(book[col][0])):
                problems.append(f"book {col} {book[col][0]} is not the strategies' sum {parts[col].sum()}")
    for r in pnl.iter_rows(named=True):
        if abs(r["net_usd"] - (r["gross_usd"] - r["fees_usd"] + r["funding_usd"] - r["tax_usd"])) \
                > 1e-6 * max(1.0, abs(r["gross_usd"])):
            problems.append(f"{r['strategy']}: net_usd is not gross - fees + funding - tax")
        counted = fills.filter(pl.col("strategy") == r["strategy"]).height
        if r["strategy"] != "book" and counted != r["fills"]:
            problems.append(f"{r['strategy']}: {counted} fills stored, the engine counted {r['fills']}")
    return problems


def limits_problems(limits: pl.DataFrame, defaults: pl.DataFrame, config: RiskConfig) -> list[str]:
    """What is wrong with a day's limits against the config's defaults at the day's prices."""
    joined = defaults.join(limits, on=["venue", "symbol"], how="left", suffix="_day")
    missing = joined.filter(pl.col("max_position_day").is_null())
    factors = (joined["max_position_day"] / joined["max_position"]).drop_nulls()
    lo, hi = config.scaling.min_factor, config.scaling.max_factor
    problems = []
    if missing.height:
        problems.append(f"{missing.height} market(s) without limits, first {missing['venue'][0]} "
                        f"{missing['symbol'][0]}")
    if factors.len() and factors.max() - factors.min() > 1e-9 * factors.max():
        problems.append(f"max_position factors differ across markets ({factors.min():.6g} to {factors.max():.6g})")
    if factors.len() and not lo * (1 - 1e-12) <= factors[0] <= hi * (1 + 1e-12):
        problems.append(f"max_position factor {factors[0]:.6g} outside [{lo}, {hi}]")
    loss = limits["daily_loss_limit_usd"]
    bad = limits.filter(~((loss > 0) & (loss <= config.risk_budget_usd)))
    if bad.height:
        problems.append(f"daily loss limit outside (0, {config.risk_budget_usd}] for {bad['venue'][0]} "
                        f"{bad['symbol'][0]}: {bad['daily_loss_limit_usd'][0]}")
    return problems
