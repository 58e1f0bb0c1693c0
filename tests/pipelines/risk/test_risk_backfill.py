"""The risk assets on a real warehouse: two days of a small simulated market through the graph, then the
risk run backfilled over both partitions the way `sofia backfill START END --select ...` does it."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import dagster as dg
import duckdb
import polars as pl
import pytest

from sofia_pipelines.defs.inventory.assets import usd_prices
from sofia_pipelines.materialize import materialize_partitions
from sofia_pipelines.partitions import partition_window
from sofia_pipelines.resources import MarketSourceResource
from sofia_runtime import paths
from sofia_runtime.journal import journal_files, read_records, verify

pytestmark = pytest.mark.slow

DAYS = ["2026-10-30", "2026-10-31"]
RISK = "risk_backtest,risk_monte_carlo,risk_limits"


class SmallMarket(MarketSourceResource):
    """The embedded simulator over two days, three bases and two venues: the same code, less data."""

    def get(self):
        from sofia_runtime.simulator import MarketSimulator

        return MarketSimulator(days=2, bases=("BTC", "ETH", "SOL"), venues=("binance", "okx"))


@pytest.fixture
def code_location(data_dir):
    from sofia_pipelines.definitions import defs
    from sofia_pipelines.resources import warehouse_resource

    return dg.Definitions.merge(
        dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks, schedules=defs.schedules, jobs=defs.jobs),
        dg.Definitions(resources={**defs.resources, "warehouse": warehouse_resource(), "market_source": SmallMarket()}))


def _rows(sql, params=()):
    with duckdb.connect(str(paths.warehouse_path()), read_only=True) as conn:
        return conn.sql(sql, params=list(params)).pl()


def test_risk_backfill_over_two_partitions(code_location, data_dir):
    instance = dg.DagsterInstance.ephemeral()
    risk = dg.AssetSelection.assets(*RISK.split(","))
    upstream = (risk.upstream() - risk).without_checks()  # the upstream checks are their own tests
    assets = [*code_location.assets, *code_location.asset_checks]
    started = time.perf_counter()
    for day in DAYS:  # only what the risk run reads
        result = dg.materialize(assets, instance=instance, partition_key=day, selection=upstream,
                                resources=code_location.resources)
        assert result.success

    upstream_s = time.perf_counter() - started
    summary = materialize_partitions(code_location, DAYS, instance, select=RISK, log_level="WARNING")
    print(f"upstream {upstream_s:.1f} s, risk backfill {summary.wall_seconds:.1f} s: "
          + ", ".join(f"{k} {v.seconds:.1f} s" for k, v in sorted(summary.assets.items())))
    assert summary.checks_failed == []
    assert {name: len(a.partitions) for name, a in summary.assets.items()} == {
        "risk_backtest": 2, "risk_monte_carlo": 2, "risk_limits": 2}

    pnl = _rows("SELECT * FROM analytics.risk_backtest_pnl ORDER BY day, strategy")
    assert pnl.group_by("day").len().sort("day")["len"].to_list() == [3, 3]  # two strategies and the book
    for day, rows in pnl.group_by("day"):
        book = rows.filter(pl.col("strategy") == "book").row(0, named=True)
        parts = rows.filter(pl.col("strategy") != "book")
        assert book["net_usd"] == pytest.approx(parts["net_usd"].sum())
        for r in rows.iter_rows(named=True):  # the identity the table states
            assert r["net_usd"] == pytest.approx(r["gross_usd"] - r["fees_usd"] + r["funding_usd"] - r["tax_usd"])
    mm = pnl.filter(pl.col("strategy") == "mm_lite")
    assert (mm["decisions"] > 0).all() and mm["fills"].sum() > 0 and (mm["seconds"] < 30).all()

    fills = _rows("SELECT * FROM analytics.risk_backtest_fills WHERE day = ?", [DAYS[1]])
    day_pnl = pnl.filter(pl.col("day").cast(pl.Utf8) == DAYS[1])
    assert fills.height == day_pnl.filter(pl.col("strategy") == "book")["fills"][0]
    usdt = fills.filter(pl.col("symbol").str.contains("/USDT"))
    assert float(usdt.filter(pl.col("strategy") == "mm_lite")["fee"].sum()) == pytest.approx(
        day_pnl.filter(pl.col("strategy") == "mm_lite")["fees_usd"][0])
    assert fills["ts"].dt.date().cast(pl.Utf8).unique().to_list() == [DAYS[1]]

    # the fills are the paper venue's: its own record holds every one, and the journal's chain verifies
    scratch = paths.data_dir() / "backtest" / DAYS[1] / "mm_lite"
    venue_trades = {json.loads(line)["trade"]["id"]: json.loads(line)["trade"]
                    for f in (scratch / "paper_venue").glob("*.jsonl") for line in f.read_text().splitlines()
                    if json.loads(line)["t"] == "trade"}
    mine = fills.filter(pl.col("strategy") == "mm_lite")
    assert set(mine["trade_id"].to_list()) == set(venue_trades)
    for r in mine.iter_rows(named=True):
        assert Decimal(venue_trades[r["trade_id"]]["price"]) == r["price"]
    journal = journal_files(scratch / f"backtest-mm_lite-{DAYS[1]}")
    assert journal and verify(journal) is None
    kinds = [rec["kind"] for _, _, rec in read_records(journal)]
    assert kinds[0] == "start" and kinds[-1] == "stop" and "decision" in kinds
    assert not (paths.data_dir() / "paper_venue" / f"backtest-mm_lite-{DAYS[1]}").exists()

    # one day of history is too little for a Monte Carlo; two days are enough
    mc = _rows("SELECT * FROM analytics.risk_monte_carlo ORDER BY day")
    assert mc["day"].cast(pl.Utf8).unique().to_list() == [DAYS[1]]
    assert set(mc["method"]) == {"bootstrap", "student_t"} and set(mc["scope"]) == {"book", "mm_lite", "funding_farmer"}
    assert (mc["paths"] == 10_000).all() and (mc["history_days"] == 2).all()
    assert _rows("SELECT count(*) AS n FROM analytics.risk_mc_quantiles")["n"][0] > 0

    limits = _rows("SELECT * FROM analytics.risk_limits WHERE symbol = 'BTC/USDT' AND venue = 'binance' ORDER BY day")
    assert limits.height == 2
    records = instance.fetch_materializations(dg.AssetKey("risk_limits"), limit=10).records
    meta = {r.asset_materialization.partition: r.asset_materialization.metadata for r in records}
    assert meta[DAYS[0]]["scale_factor_after"].value == 1.0  # no Monte Carlo: the defaults
    factor = meta[DAYS[1]]["scale_factor_after"].value
    risk = mc.filter((pl.col("scope") == "book") & (pl.col("metric") == "cvar_99_1d"))["value"].max()
    assert factor == pytest.approx(1 + 2 / 30 * (min(max(20_000 / risk, 0.25), 2.0) - 1))  # the rule in risk.yaml
    assert meta[DAYS[1]]["history_days"].value == 2
    btc = _btc(DAYS[1])
    assert limits["max_position"][0] * _btc(DAYS[0]) == pytest.approx(50_000.0)  # risk.yaml's default
    assert limits["max_position"][1] * btc == pytest.approx(50_000.0 * factor)
    assert meta[DAYS[1]]["max_position_usd_after"].value == pytest.approx(50_000.0 * factor)
    mc_meta = instance.fetch_materializations(dg.AssetKey("risk_monte_carlo"), limit=10).records
    charts = {r.asset_materialization.partition: r.asset_materialization.metadata for r in mc_meta}[DAYS[1]]
    assert charts["fan_chart"].value.startswith("![chart](data:image/png;base64,")
    assert charts["drawdown_histogram"].value.startswith("![chart](data:image/png;base64,")

    assert summary.checks_passed >= 4  # backtest_adds_up and limits_within_budget on both days

    # a re-run replays the same day to the same fills
    before = fills.sort("strategy", "trade_id").select("trade_id", "price", "amount", "fee")
    materialize_partitions(code_location, [DAYS[1]], instance, select="risk_backtest", log_level="WARNING")
    again = _rows("SELECT * FROM analytics.risk_backtest_fills WHERE day = ?", [DAYS[1]])
    assert again.sort("strategy", "trade_id").select("trade_id", "price", "amount", "fee").equals(before)


def _btc(day):
    start, end = partition_window(day)
    with duckdb.connect(str(paths.warehouse_path()), read_only=True) as conn:
        return usd_prices(conn, start, end)["BTC"]
