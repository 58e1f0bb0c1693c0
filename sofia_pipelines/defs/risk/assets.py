"""Risk (H): the backtest of the strategies' rules, the Monte Carlo on its P&L and the market's returns, the
limits the runtime trades within scaled to the risk budget, and the daily schedule that runs them."""

import time
from datetime import timedelta

import dagster as dg
import numpy as np
import polars as pl
from dagster_duckdb import DuckDBResource

from sofia_pipelines.defs.inventory.assets import usd_prices
from sofia_pipelines.defs.risk.backtest import backtest_snapshot, pnl_frame, replay_blockers, run_backtest
from sofia_pipelines.defs.risk.compute import (book_risk, limit_scale, market_daily_returns, risk_config,
                                               risk_history, risk_limits_frame)
from sofia_pipelines.defs.risk.monte_carlo import (FAN_QUANTILES, MonteCarloResult, fan_quantiles,
                                                   run_monte_carlo, t_var_cvar)
from sofia_pipelines.defs.serving.assets import UNPARTITIONED
from sofia_pipelines.defs.symbols.compute import SYMBOL_RANKINGS
from sofia_pipelines.market_inputs import gaps_check, gaps_metadata, read_gaps, write_gaps
from sofia_pipelines.metadata import markdown_table, png_markdown, preview
from sofia_pipelines.partitions import daily_partitions, partition_window
from sofia_pipelines.warehouse import read_day, read_window, replace_day, table_exists
from sofia_runtime import paths
from sofia_runtime.limits import Limits
from sofia_runtime.schemas import (MARKETS, RAW_TABLES, REPLAY_TABLES, RISK_BACKTEST_FILLS, RISK_BACKTEST_PNL,
                                   RISK_BACKTEST_POSITIONS, RISK_LIMITS, RISK_MC_QUANTILES, RISK_MONTE_CARLO,
                                   SERVING_TABLES)

GROUP = "risk"
SNAPSHOT_TABLES = [name for name in SERVING_TABLES if name != "risk_limits"]
REPLAYED = ("books", "trades", "latency", "funding")


def _limits_at_defaults(conn, start, end, config) -> pl.DataFrame:
    return risk_limits_frame(read_window(conn, "analytics", MARKETS), usd_prices(conn, start, end), config)


@dg.asset(key="risk_backtest", partitions_def=daily_partitions, group_name=GROUP, kinds={"duckdb", "python"},
          deps=[dg.AssetKey(name) for name in SNAPSHOT_TABLES] + [dg.AssetKey("symbol_rankings")]
          + [dg.AssetKey(["raw", t]) for t in REPLAYED],
          description="Each strategy's rules (config/risk.yaml backtest.strategies) replayed over the day by the "
                      "runtime's own engine: the snapshot the serving asset would publish, built in memory with "
                      "the config's default risk limits (not this day's scaled ones, which depend on this run), "
                      "paper venues and their fill model, the gate, fees and tax; journal and venue records under "
                      "<data>/backtest/<day>/<strategy>/. Daily P&L per strategy and for the book "
                      "(analytics.risk_backtest_pnl), the fills it assumed (risk_backtest_fills) and the "
                      "positions it ends with (risk_backtest_positions). A day without books (or markets, fees, a "
                      "fill model) is not replayed: the tables are empty and risk_backtest_inputs_complete (WARN) "
                      "names the strategies and why; a day with books for some minutes replays those minutes.")
def risk_backtest(context: dg.AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
    config = risk_config()
    key = context.partition_key
    start, end = partition_window(key)
    with warehouse.get_connection() as conn:
        tables = {name: read_window(conn, "analytics", SERVING_TABLES[name]) if name in UNPARTITIONED
                  else read_day(conn, "analytics", SERVING_TABLES[name], start.date()) for name in SNAPSHOT_TABLES}
        for name in REPLAY_TABLES:
            tables[name] = read_window(conn, "raw", RAW_TABLES[name.removeprefix("replay_")], start, end)
        tables["risk_limits"] = _limits_at_defaults(conn, start, end, config)
        rankings = read_day(conn, "analytics", SYMBOL_RANKINGS, start.date())
    scratch = paths.data_dir() / "backtest" / key
    strategies = list(config.backtest.strategies)
    why_not = replay_blockers(tables)
    if why_not:
        with warehouse.get_connection() as conn:
            for table in (RISK_BACKTEST_PNL, RISK_BACKTEST_FILLS, RISK_BACKTEST_POSITIONS):
                replace_day(conn, "analytics", table, table.empty(), start.date())
            gaps = write_gaps(conn, "risk_backtest", start.date(),
                              [("*", name, f"not replayed: {why_not}") for name in strategies])
        context.log.warning(f"{key}: no strategy replayed ({', '.join(strategies)}): {why_not}")
        return dg.MaterializeResult(metadata={"dagster/row_count": dg.MetadataValue.int(0),
                                              "status": "not replayed", "strategies_not_replayed": strategies,
                                              "reason": why_not, **gaps_metadata(gaps)})
    snapshot = backtest_snapshot(tables, key, scratch)
    runs = []
    for name, spec in config.backtest.strategies.items():
        run = run_backtest(snapshot, name, spec.runtime, scratch / name, rankings, spec.max_instruments)
        context.log.info(f"{name}: {run.pnl['decisions']:,} decisions, {run.pnl['fills']:,} fills, net "
                         f"{run.pnl['net_usd']:,.2f} USD in {run.pnl['seconds']:.1f} s")
        runs.append(run)
    pnl = pnl_frame(runs)
    fills = pl.concat([r.fills for r in runs])
    positions = pl.concat([r.positions for r in runs])
    replayed = tables["replay_books"]
    with warehouse.get_connection() as conn:
        replace_day(conn, "analytics", RISK_BACKTEST_PNL, pnl, start.date())
        replace_day(conn, "analytics", RISK_BACKTEST_FILLS, fills, start.date())
        replace_day(conn, "analytics", RISK_BACKTEST_POSITIONS, positions, start.date())
        idle = [("*", r.strategy, f"replayed {r.pnl['events']:,} market events with no instrument to trade: the "
                                  f"day's session_schedule, fill_model or funding_opportunities offered none")
                for r in runs if r.pnl["instruments"] == 0]
        gaps = write_gaps(conn, "risk_backtest", start.date(), idle)
    book = pnl.filter(pl.col("strategy") == "book").row(0, named=True)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(pnl.height), "fills": fills.height,
        "book_net_usd": dg.MetadataValue.float(book["net_usd"]),
        "replay_seconds": dg.MetadataValue.float(round(book["seconds"], 2)),
        "replayed_books": f"{replayed.height:,} rows, {replayed['ts'].min()} … {replayed['ts'].max()}",
        "pnl": dg.MetadataValue.md(markdown_table(pnl.select(
            "strategy", "net_usd", "gross_usd", "fees_usd", "funding_usd", "tax_usd", "end_exposure_usd",
            "decisions", "passed", "fills", "instruments", "seconds"))),
        "fills_preview": preview(fills.select("strategy", "ts", "venue", "symbol", "side", "liquidity", "price",
                                              "amount", "fee", "tag")), **gaps_metadata(gaps)})


risk_backtest_inputs_complete = gaps_check("risk_backtest")


def _charts(result: MonteCarloResult):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fan, axes = plt.subplots(1, len(result.fan), figsize=(11, 3.6), sharey=True)
    for ax, (method, paths_) in zip(np.atleast_1d(axes), result.fan.items()):
        q = fan_quantiles(paths_)
        days = np.arange(q.shape[1])
        ax.fill_between(days, q[0], q[-1], alpha=0.25, color="#4c72b0",
                        label=f"{FAN_QUANTILES[0]:.0%}-{FAN_QUANTILES[-1]:.0%}")
        ax.fill_between(days, q[1], q[-2], alpha=0.45, color="#4c72b0",
                        label=f"{FAN_QUANTILES[1]:.0%}-{FAN_QUANTILES[-2]:.0%}")
        ax.plot(days, q[len(q) // 2], color="#1f3a66", label="median")
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_title(f"book cumulative P&L, {method}")
        ax.set_xlabel("day")
        ax.legend(fontsize=7, loc="upper left")
    np.atleast_1d(axes)[0].set_ylabel("USD")
    hist, ax = plt.subplots(figsize=(7, 3.4))
    drawdowns = {method: s.drawdown[0] for method, s in result.summaries.items()}
    lo = min(float(d.min()) for d in drawdowns.values())
    hi = max(float(d.max()) for d in drawdowns.values())
    edges = np.linspace(lo, hi, 61) if hi - lo > 1e-9 * max(1.0, abs(hi)) else np.array([lo - 0.5, hi + 0.5])
    for method, d in drawdowns.items():
        ax.hist(d, bins=edges, alpha=0.5, label=method)
    ax.set_title(f"book maximum drawdown over {result.horizon_days} days")
    ax.set_xlabel("USD")
    ax.set_ylabel("paths")
    ax.legend(fontsize=8)
    return png_markdown(fan), png_markdown(hist)


def _trailing_history() -> dg.TimeWindowPartitionMapping:
    """A day's Monte Carlo reads the backtests and candles of the trailing history window, not only its own day's
    (so a backfill runs the earlier days' backtests first)."""
    return dg.TimeWindowPartitionMapping(start_offset=-(risk_config().monte_carlo.history_days - 1),
                                         allow_nonexistent_upstream_partitions=True)


@dg.asset(key="risk_monte_carlo", partitions_def=daily_partitions, group_name=GROUP, kinds={"duckdb", "numpy"},
          deps=[dg.AssetDep("risk_backtest", partition_mapping=_trailing_history()),
                dg.AssetDep(dg.AssetKey(["raw", "candles"]), partition_mapping=_trailing_history()),
                dg.AssetKey("markets"), dg.AssetKey(["raw", "books"])],
          description="Monte Carlo of the book's and each strategy's daily P&L from the backtest's daily P&L and "
                      "the market's daily returns per symbol (raw candles) up to the day: a block bootstrap of "
                      "historical days and a multivariate Student-t (df and scale by maximum likelihood, Ledoit-Wolf "
                      "shrunk correlation, chi-square mixing over a Cholesky factor), on the positions the backtest "
                      "carries out of the day. VaR and CVaR at 95/99 %, maximum drawdown, Sharpe and Sortino with "
                      "intervals, probability of hitting the daily loss limit (analytics.risk_monte_carlo, "
                      "risk_mc_quantiles), fan chart and drawdown histogram. Paths, horizon, seed in risk.yaml.")
def risk_monte_carlo(context: dg.AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
    config = risk_config()
    mc = config.monte_carlo
    start, end = partition_window(context.partition_key)
    first = start - timedelta(days=mc.history_days - 1)
    strategies = list(config.backtest.strategies)
    with warehouse.get_connection() as conn:
        if not table_exists(conn, "analytics", RISK_BACKTEST_PNL.name):
            raise LookupError("analytics.risk_backtest_pnl does not exist: materialize risk_backtest first")
        pnl = conn.sql("SELECT day, strategy, net_usd FROM analytics.risk_backtest_pnl WHERE day >= ? AND day <= ?",
                       params=[first.date(), start.date()]).pl()
        not_replayed = read_gaps(conn, "risk_backtest", start.date())
        if pnl.filter(pl.col("day") == start.date()).is_empty() and not_replayed.is_empty():
            raise LookupError(f"no backtest for {context.partition_key}: materialize risk_backtest for it first")
        positions = read_day(conn, "analytics", RISK_BACKTEST_POSITIONS, start.date())
        first_last = conn.sql(
            "SELECT venue, symbol, CAST(ts AS DATE) AS day, arg_min(open, ts) AS first_open, "
            "arg_max(close, ts) AS last_close FROM raw.candles WHERE ts >= ? AND ts < ? GROUP BY ALL",
            params=[first, end]).pl() if table_exists(conn, "raw", "candles") else pl.DataFrame(
            schema={"venue": pl.Utf8, "symbol": pl.Utf8, "day": pl.Date, "first_open": pl.Float64,
                    "last_close": pl.Float64})
        loss_limit = Limits(_limits_at_defaults(conn, start, end, config), 1.0, 1).daily_loss_limit_usd
    history, notes = risk_history(pnl, market_daily_returns(first_last), positions, strategies)
    if not not_replayed.is_empty():
        notes.append(f"the day's backtest did not run: {not_replayed['reason'][0]}")
    meta = {"history_days": len(history.days), "symbols": len(history.symbols), "daily_loss_limit_usd": loss_limit,
            "notes": dg.MetadataValue.md("\n".join(f"- {n}" for n in notes) or "none")}
    if len(history.days) < mc.min_history_days:
        with warehouse.get_connection() as conn:
            replace_day(conn, "analytics", RISK_MONTE_CARLO, RISK_MONTE_CARLO.empty(), start.date())
            replace_day(conn, "analytics", RISK_MC_QUANTILES, RISK_MC_QUANTILES.empty(), start.date())
        context.log.warning(f"{len(history.days)} day(s) of history, {mc.min_history_days} needed: no Monte Carlo; "
                            f"risk_limits keeps the config defaults")
        return dg.MaterializeResult(metadata={**meta, "dagster/row_count": dg.MetadataValue.int(0),
                                              "status": "insufficient history" if not_replayed.is_empty()
                                              else "no backtest for the day (see risk_backtest)"})
    t0 = time.perf_counter()
    result = run_monte_carlo(history, mc, loss_limit)
    seconds = time.perf_counter() - t0
    extra = {"paths": mc.paths, "horizon_days": mc.horizon_days, "history_days": len(history.days)}
    metrics = RISK_MONTE_CARLO.conform(pl.DataFrame(result.metrics(mc.ci), schema_overrides={
        "ci_low": pl.Float64, "ci_high": pl.Float64}).with_columns(**{k: pl.lit(v) for k, v in extra.items()}),
        "risk_monte_carlo")
    quantiles = RISK_MC_QUANTILES.conform(pl.DataFrame(result.quantiles()), "risk_mc_quantiles")
    with warehouse.get_connection() as conn:
        replace_day(conn, "analytics", RISK_MONTE_CARLO, metrics, start.date())
        replace_day(conn, "analytics", RISK_MC_QUANTILES, quantiles, start.date())
    fan_png, drawdown_png = _charts(result)
    loc, scale = result.fit.scope_t(history.weights())
    closed = {p: tuple(map(float, t_var_cvar(loc[0], scale[0], result.fit.df, p / 100))) for p in (95, 99)}
    book = metrics.filter(pl.col("scope") == "book").pivot(on="method", index="metric", values="value")
    market = pl.DataFrame({"symbol": list(history.symbols),
                           **{f"var_99_1d_{m}": v for m, v in result.market_var_99.items()}})
    return dg.MaterializeResult(metadata={
        **meta, "dagster/row_count": dg.MetadataValue.int(metrics.height), "seconds": round(seconds, 3),
        "paths": mc.paths, "horizon_days": mc.horizon_days, "seed": mc.seed, "chunk_paths": result.chunk_paths,
        "block_days": result.block_days, "student_t_df": round(result.fit.df, 3),
        "correlation_shrinkage": round(result.fit.shrinkage, 3),
        "book_var_99_1d_closed_form_t": dg.MetadataValue.float(closed[99][0]),
        "book_cvar_99_1d_closed_form_t": dg.MetadataValue.float(closed[99][1]),
        "book": dg.MetadataValue.md(markdown_table(book, 40)),
        "market_var_99_1d (returns)": dg.MetadataValue.md(markdown_table(market, 40)),
        "fan_chart": fan_png, "drawdown_histogram": drawdown_png})


@dg.asset(key="risk_limits", partitions_def=daily_partitions, group_name=GROUP, kinds={"duckdb", "yaml"},
          deps=[dg.AssetKey("markets"), dg.AssetKey(["raw", "books"]), dg.AssetKey("risk_monte_carlo")],
          description="Max position (base units at the day's prices), notional, open orders and daily loss per "
                      "venue and symbol: config/risk.yaml's defaults (each venue-symbol's loss within its share of "
                      "the risk budget) with max_position and daily_loss_limit scaled so the book's Monte Carlo "
                      "risk fits risk_budget_usd: factor = 1 + w * (clip(budget / R, min_factor, max_factor) - 1), "
                      "R = the book's scaling.metric (default 99 % 1-day CVaR, the larger of bootstrap and "
                      "Student-t), w = min(1, history days / full_weight_days); the loss limit is capped at the "
                      "budget. Without a Monte Carlo for the day the defaults stand (factor 1).")
def risk_limits_asset(context: dg.AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
    config = risk_config()
    start, end = partition_window(context.partition_key)
    with warehouse.get_connection() as conn:
        markets = read_window(conn, "analytics", MARKETS)
        prices = usd_prices(conn, start, end)
        risk_usd, history_days = book_risk(read_day(conn, "analytics", RISK_MONTE_CARLO, start.date()),
                                           config.scaling.metric)
        scaling = limit_scale(risk_usd, history_days, config.risk_budget_usd, config.scaling)
        before = risk_limits_frame(markets, prices, config)
        limits = risk_limits_frame(markets, prices, config, scaling.factor)
        replace_day(conn, "analytics", RISK_LIMITS, limits, start.date())
    loss_before = Limits(before, 1.0, 1).daily_loss_limit_usd
    loss_after = Limits(limits, 1.0, 1).daily_loss_limit_usd
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(limits.height),
        "rule": scaling.rule, "risk_budget_usd": config.risk_budget_usd,
        f"book_{config.scaling.metric}_usd": risk_usd if risk_usd is not None else "no Monte Carlo",
        "history_days": scaling.history_days,
        "scale_factor_before": 1.0, "scale_factor_after": dg.MetadataValue.float(scaling.factor),
        "budget_over_risk": scaling.raw_factor if scaling.raw_factor is not None else "n/a",
        "clipped_factor": scaling.clipped_factor if scaling.clipped_factor is not None else "n/a",
        "history_weight": round(scaling.weight, 4),
        "max_position_usd_before": config.default.max_position_usd,
        "max_position_usd_after": config.default.max_position_usd * scaling.factor,
        "book_daily_loss_limit_usd_before": loss_before, "book_daily_loss_limit_usd_after": loss_after,
        "preview": preview(limits)})


daily_risk_job = dg.define_asset_job(
    "daily_risk", selection=dg.AssetSelection.assets("risk_backtest", "risk_monte_carlo", "risk_limits",
                                                     "serving_snapshot"),
    partitions_def=daily_partitions,
    description="The daily risk run: backtest, Monte Carlo and the limits scaled from it, for one day, then a new "
                "serving snapshot so the runtimes trade within them.")


def _daily_risk_schedule() -> dg.ScheduleDefinition:
    schedule = risk_config().schedule
    return dg.build_schedule_from_partitioned_job(
        daily_risk_job, name="daily_risk_schedule", hour_of_day=schedule.hour, minute_of_hour=schedule.minute,
        description=f"Every day at {schedule.time_utc} UTC (risk.yaml schedule.time_utc), the risk run for the "
                    f"previous day's partition.",
        default_status=dg.DefaultScheduleStatus.RUNNING if schedule.running else dg.DefaultScheduleStatus.STOPPED)


daily_risk_schedule = _daily_risk_schedule()
