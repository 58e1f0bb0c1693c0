"""Risk configuration, the limits and their scaling by the risk run, the Monte Carlo's inputs from frames,
and the daily risk schedule evaluated with Dagster's own API."""

from __future__ import annotations

from datetime import date, datetime, timezone

import dagster as dg
import polars as pl
import pytest

from sofia_pipelines.defs.fees.compute import load_yaml
from sofia_pipelines.defs.risk.backtest import BacktestError, backtest_config, best_instruments
from sofia_pipelines.defs.risk.compute import (ScalingConfig, backtest_problems, book_risk, limit_scale,
                                               limits_problems, market_daily_returns, risk_config, risk_history,
                                               risk_limits_frame)
from sofia_runtime.limits import Limits

MARKETS = pl.DataFrame({"venue": ["a", "a", "b"], "symbol": ["BTC/USDT", "ETH/USDT", "BTC/USDT"],
                        "market": ["spot"] * 3, "base": ["BTC", "ETH", "BTC"], "quote": ["USDT"] * 3,
                        "price_tick": [0.1] * 3, "amount_step": [1e-5] * 3, "min_amount": [1e-5] * 3,
                        "min_notional": [5.0] * 3})
PRICES = {"BTC": 50_000.0, "ETH": 2_500.0, "USDT": 1.0}


def test_the_shipped_config_validates():
    cfg = risk_config()
    assert cfg.monte_carlo.paths == 10_000 and cfg.schedule.time_utc == "01:30"
    assert set(cfg.backtest.strategies) == {"mm_lite", "funding_farmer"}


@pytest.mark.parametrize("change, field", [
    (lambda d: d["monte_carlo"].update(paths=5), "monte_carlo.paths"),
    (lambda d: d["schedule"].update(time_utc="25:00"), "schedule.time_utc"),
    (lambda d: d["scaling"].update(metric="var_90_1d"), "scaling.metric"),
    (lambda d: d["backtest"]["strategies"].update(arbitrage={}), "backtest.strategies"),
    (lambda d: d["default"].pop("max_position_usd"), "default.max_position_usd"),
    (lambda d: d["monte_carlo"].update(typo=1), "monte_carlo.typo"),
])
def test_bad_config_names_the_file_and_field(change, field):
    data = load_yaml("risk.yaml")
    change(data)
    with pytest.raises(ValueError, match=rf"risk\.yaml: .*field '{field}'"):
        risk_config(data)


def test_backtest_runtime_overrides_are_the_runtimes_own_validation(monkeypatch):
    monkeypatch.setenv("SOFIA_RUNTIME_GATE__THRESHOLD_USD", "7")  # the live runtime's setting stays out
    cfg = backtest_config("mm_lite", "2026-10-31", {"mm_lite": {"requote_s": 90}})
    assert cfg.mm_lite.requote_s == 90 and cfg.gate.threshold_usd == 0.0 and cfg.speed == 0.0
    assert cfg.resolved_runtime_id == "backtest-mm_lite-2026-10-31" and cfg.mode == "paper"
    with pytest.raises(BacktestError, match="backtest.strategies.mm_lite.runtime"):
        backtest_config("mm_lite", "2026-10-31", {"mm_lite": {"requote_s": 0}})


def test_best_instruments_by_ranking():
    ranks = pl.DataFrame({"venue": ["a", "b", "a"], "symbol": ["X", "X", "Y"], "rank": [2, 1, 3]})
    inst = {("a", "X"), ("b", "X"), ("a", "Y"), ("c", "Z")}
    assert best_instruments(inst, ranks, 2) == {("b", "X"), ("a", "X")}
    assert best_instruments(inst, ranks, None) == inst


def test_limits_at_defaults_and_scaled():
    cfg = risk_config()
    base = risk_limits_frame(MARKETS, PRICES, cfg)
    # 2 venues: each venue-symbol's loss within budget / venues = 10,000, so the default 2,000 stands
    assert base["daily_loss_limit_usd"].to_list() == [2000.0] * 3
    assert base["max_position"].to_list() == pytest.approx([1.0, 20.0, 1.0])  # 50,000 USD at the day's price
    scaled = risk_limits_frame(MARKETS, PRICES, cfg, 1.5)
    assert scaled["max_position"].to_list() == pytest.approx([1.5, 30.0, 1.5])
    assert scaled["daily_loss_limit_usd"].to_list() == [3000.0] * 3
    assert scaled["max_notional_usd"].to_list() == base["max_notional_usd"].to_list()
    huge = risk_limits_frame(MARKETS, PRICES, cfg, 50.0)
    assert huge["daily_loss_limit_usd"].max() == cfg.risk_budget_usd  # never above the whole budget
    assert Limits(scaled, 5.0, 40).daily_loss_limit_usd == 3000.0  # what the runtime reads from it


def test_scaling_rule():
    cfg = ScalingConfig(metric="cvar_99_1d", min_factor=0.25, max_factor=2.0, full_weight_days=30)
    full = limit_scale(8_000.0, 60, 20_000.0, cfg)
    assert full.raw_factor == 2.5 and full.clipped_factor == 2.0 and full.weight == 1.0 and full.factor == 2.0
    tight = limit_scale(40_000.0, 30, 20_000.0, cfg)
    assert tight.factor == 0.5  # the book's CVaR is twice the budget: halve the limits
    short = limit_scale(40_000.0, 6, 20_000.0, cfg)
    assert short.weight == pytest.approx(0.2) and short.factor == pytest.approx(1 + 0.2 * (0.5 - 1))
    extreme = limit_scale(1e9, 30, 20_000.0, cfg)
    assert extreme.factor == 0.25  # floor
    assert limit_scale(-5.0, 30, 20_000.0, cfg).factor == 2.0  # never loses: the cap
    none = limit_scale(None, 0, 20_000.0, cfg)
    assert none.factor == 1.0 and none.raw_factor is None and "defaults" in none.rule


def test_book_risk_takes_the_larger_method():
    mc = pl.DataFrame({"method": ["bootstrap", "student_t", "student_t"], "scope": ["book", "book", "mm_lite"],
                       "metric": ["cvar_99_1d"] * 3, "value": [900.0, 1200.0, 5000.0], "history_days": [7, 7, 7]})
    assert book_risk(mc, "cvar_99_1d") == (1200.0, 7)
    assert book_risk(mc.clear(), "cvar_99_1d") == (None, 0)


def test_market_returns_and_history_from_frames():
    d1, d2, d3 = date(2026, 10, 29), date(2026, 10, 30), date(2026, 10, 31)
    first_last = pl.DataFrame({
        "venue": ["a", "b", "a", "b", "a", "a"], "symbol": ["BTC/USDT"] * 4 + ["ETH/USDT", "ETH/USDT"],
        "day": [d1, d1, d2, d2, d1, d2], "first_open": [100.0, 100.0, 110.0, 110.0, 10.0, 10.0],
        "last_close": [110.0, 112.0, 99.0, 99.0, 11.0, 9.5]})
    returns = market_daily_returns(first_last)
    assert returns.filter(pl.col("symbol") == "BTC/USDT")["ret"].to_list() == pytest.approx([0.11, -0.1])
    pnl = pl.DataFrame({"day": [d1, d1, d2, d2, d3], "strategy": ["mm_lite", "funding_farmer"] * 2 + ["mm_lite"],
                        "net_usd": [10.0, 1.0, -20.0, 2.0, 5.0]})
    positions = pl.DataFrame({"strategy": ["mm_lite", "mm_lite", "funding_farmer", "funding_farmer"],
                              "venue": ["a", "b", "a", "a"], "symbol": ["BTC/USDT", "BTC/USDT", "ETH/USDT", "DOGE/USDT"],
                              "position": [0.1, 0.2, 1.0, 5.0], "mark": [0.0] * 4,
                              "notional_usd": [1000.0, 2000.0, -500.0, 7.0]})
    history, notes = risk_history(pnl, returns, positions, ["mm_lite", "funding_farmer"])
    assert history.days == (d1, d2)  # d3 lacks funding_farmer's backtest and the market
    assert history.symbols == ("BTC/USDT", "ETH/USDT")
    assert history.trading.tolist() == [[10.0, 1.0], [-20.0, 2.0]]
    assert history.exposure.tolist() == [[3000.0, 0.0], [0.0, -500.0]]
    assert any("DOGE/USDT" in n for n in notes) and any("every strategy" in n for n in notes)


def test_daily_schedule_requests_the_previous_days_risk_run():
    from sofia_pipelines.definitions import defs

    schedule = defs.resolve_schedule_def("daily_risk_schedule")
    cfg = risk_config().schedule
    assert schedule.cron_schedule == f"{cfg.minute} {cfg.hour} * * *" and schedule.execution_timezone == "UTC"
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 1, cfg.hour, cfg.minute,
                                                                          tzinfo=timezone.utc))
    result = schedule.evaluate_tick(context)
    assert len(result.run_requests) == 1
    request = result.run_requests[0]
    assert request.partition_key == "2026-10-31"
    assert schedule.job_name == "daily_risk"
    job = defs.resolve_job_def(schedule.job_name)
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == {
        "risk_backtest", "risk_monte_carlo", "risk_limits", "serving_snapshot"}
    later = schedule.evaluate_tick(dg.build_schedule_context(
        scheduled_execution_time=datetime(2027, 3, 1, cfg.hour, cfg.minute, tzinfo=timezone.utc)))
    assert later.run_requests[0].partition_key == "2027-02-28"


def test_risk_assets_depend_on_the_run_before_them():
    from sofia_pipelines.definitions import defs

    graph = defs.resolve_asset_graph()
    parents = lambda key: {k.to_user_string() for k in graph.get(dg.AssetKey(key)).parent_keys}  # noqa: E731
    assert "risk_monte_carlo" in parents("risk_limits")
    assert "risk_backtest" in parents("risk_monte_carlo")
    # a day's Monte Carlo reads the trailing window of backtests, so backfills run earlier days first
    mapping = graph.get(dg.AssetKey("risk_monte_carlo")).partition_mappings[dg.AssetKey("risk_backtest")]
    assert isinstance(mapping, dg.TimeWindowPartitionMapping) and mapping.end_offset == 0
    assert mapping.start_offset == -(risk_config().monte_carlo.history_days - 1)
    # the backtest trades on the config's limits, never on the limits its own run produces
    assert "risk_limits" not in parents("risk_backtest")
    assert {"fill_model", "fee_table", "session_schedule", "funding_opportunities", "raw/books"} <= parents("risk_backtest")


def test_limits_check_finds_tampered_rows():
    cfg = risk_config()
    defaults = risk_limits_frame(MARKETS, PRICES, cfg)
    assert limits_problems(risk_limits_frame(MARKETS, PRICES, cfg, 1.7), defaults, cfg) == []
    assert "outside [0.25, 2.0]" in limits_problems(risk_limits_frame(MARKETS, PRICES, cfg, 3.0), defaults, cfg)[0]
    uneven = risk_limits_frame(MARKETS, PRICES, cfg).with_columns(
        pl.when(pl.col("venue") == "b").then(pl.col("max_position") * 1.1).otherwise(pl.col("max_position"))
        .alias("max_position"))
    assert "differ across markets" in limits_problems(uneven, defaults, cfg)[0]
    loose = defaults.with_columns(pl.lit(1e9).alias("daily_loss_limit_usd"))
    assert "daily loss limit outside" in limits_problems(loose, defaults, cfg)[0]
    assert "without limits" in limits_problems(defaults.head(2), defaults, cfg)[0]


def test_backtest_check_finds_inconsistent_rows():
    from sofia_runtime.schemas import RISK_BACKTEST_FILLS, RISK_BACKTEST_PNL

    def row(strategy, net, gross, fees, funding, tax, fills):
        return {"strategy": strategy, "net_usd": net, "gross_usd": gross, "fees_usd": fees, "funding_usd": funding,
                "tax_usd": tax, "end_exposure_usd": 0.0, "decisions": 1, "passed": 1, "orders": 1, "fills": fills,
                "instruments": 1, "events": 1, "seconds": 0.1}
    good = pl.DataFrame([row("a", 7.0, 10.0, 4.0, 1.0, 0.0, 1), row("b", -1.0, 0.0, 1.0, 0.0, 0.0, 0),
                         row("book", 6.0, 10.0, 5.0, 1.0, 0.0, 1)], schema=RISK_BACKTEST_PNL.polars_schema)
    fills = RISK_BACKTEST_FILLS.conform(pl.DataFrame([{
        "strategy": "a", "ts": datetime(2026, 10, 31, 1), "trade_id": "t1", "client_order_id": "c", "tag": "q",
        "venue": "x", "symbol": "BTC/USDT", "side": "buy", "liquidity": "maker", "price": 1.0, "amount": 1.0,
        "fee": 0.001, "fee_currency": "USDT", "notional_usd": 1.0}]), "test")
    assert backtest_problems(good, fills) == []
    bad_sum = good.with_columns(pl.when(pl.col("strategy") == "book").then(99.0).otherwise(pl.col("net_usd"))
                                .alias("net_usd"))
    assert any("strategies' sum" in p for p in backtest_problems(bad_sum, fills))
    assert "a: 0 fills stored, the engine counted 1" in backtest_problems(good, fills.clear())
