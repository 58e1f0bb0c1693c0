"""The whole default selection on real exchange files, read in place from the held-out data, as a desk would point
Sofia at its archives: three real days through Dagster's own API, then the paper runtime on the real tape.

- 2019-10-12, Binance XRP/ETH spot: 1m and 5m candles and 4,134 public trades (freqtrade's test data);
- 2021-11-21, Binance XRP/USDT:USDT perp: 5m and 1h candles and three 8-hourly funding rates;
- 2021-01-08, Binance BTC/USDT spot: 451 best bid/ask updates and the 2,001 trades of the same 46 seconds.
"""

from __future__ import annotations

from datetime import date, datetime

import dagster as dg
import duckdb
import polars as pl
import pytest

from sofia_pipelines.materialize import materialize_partitions
from sofia_runtime import paths
from sofia_runtime.snapshot import load_current

pytestmark = pytest.mark.slow

LINKS = {  # the name a file has in the source folder -> where it is in the held-out data
    "binance_XRP_ETH_1m.parquet": "freqtrade/spot/binance_XRP_ETH_1m.parquet",
    "binance_XRP_ETH_5m.parquet": "freqtrade/spot/binance_XRP_ETH_5m.parquet",
    "binance_XRP_ETH_trades.parquet": "freqtrade/trades/binance_XRP_ETH_trades.parquet",
    "binance_XRP_USDT_USDT_5m_futures.parquet": "freqtrade/futures/binance_XRP_USDT_USDT_5m_futures.parquet",
    "binance_XRP_USDT_USDT_1h_futures.parquet": "freqtrade/futures/binance_XRP_USDT_USDT_1h_futures.parquet",
    "binance_XRP_USDT_USDT_8h_funding_rate.parquet": "freqtrade/futures/binance_XRP_USDT_USDT_8h_funding_rate.parquet",
    "binance_BTC_USDT_quotes.parquet": "nautilus/binance__btcusdt-quotes.parquet",
    "binance_BTC_USDT_trades.parquet": "nautilus/binance__btcusdt-trades.parquet",
    "markets/binance.json": "ccxt/markets/binance.json",
}
DAYS = ["2019-10-12", "2021-11-21", "2021-01-08"]  # the tape last: its snapshot ends up CURRENT


def _day(df: pl.DataFrame, day: str, column: str = "timestamp") -> pl.DataFrame:
    ts = pl.col(column)
    if df.schema[column] == pl.Int64:
        ts = pl.from_epoch(ts, time_unit="ms")
    return df.filter(ts.dt.replace_time_zone(None).dt.date() == date.fromisoformat(day))


@pytest.fixture
def real_market(tmp_path, holdout, data_dir, monkeypatch):
    root = tmp_path / "market"
    for name, source in LINKS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(holdout / source)
    monkeypatch.setenv("SOFIA_SOURCE", f"files:{root}")
    from sofia_pipelines.definitions import defs
    from sofia_pipelines.resources import market_source_resource, warehouse_resource

    code_location = dg.Definitions.merge(
        dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks, sensors=defs.sensors,
                       schedules=defs.schedules, jobs=defs.jobs),
        dg.Definitions(resources={**defs.resources, "warehouse": warehouse_resource(),
                                  "market_source": market_source_resource()}))
    summary = materialize_partitions(code_location, DAYS, dg.DagsterInstance.ephemeral())
    return summary, holdout


def _rows(conn, sql: str) -> list[tuple]:
    return conn.execute(sql).fetchall()


def test_the_default_selection_on_three_real_days_then_a_paper_run_on_the_real_tape(real_market, data_dir):
    summary, holdout = real_market
    # the one run that failed is the XRP/ETH day's snapshot, refused, not published: XRP/ETH has no USD value in
    # 2019 (no ETH/USDT in the data), so no risk limit can be set and there is nothing the runtime could trade
    assert len(summary.failed_runs) == 1 and "[2019-10-12]" in summary.failed_runs[0], summary.failed_runs
    assert "snapshot_publishable" in summary.failed_runs[0] or "serving_snapshot" in summary.failed_runs[0]
    assert summary.checks_failed == ["serving_snapshot:snapshot_publishable [2019-10-12]"]
    # what could not be computed is a warning naming the input, never a traceback
    warned = "\n".join(summary.checks_warned)
    assert "latency_heatmap_inputs_complete [2019-10-12]" in warned and "no latency probes" in warned

    spot_1m = pl.read_parquet(holdout / LINKS["binance_XRP_ETH_1m.parquet"])
    spot_5m = pl.read_parquet(holdout / LINKS["binance_XRP_ETH_5m.parquet"])
    spot_trades = pl.read_parquet(holdout / LINKS["binance_XRP_ETH_trades.parquet"])
    perp_5m = pl.read_parquet(holdout / LINKS["binance_XRP_USDT_USDT_5m_futures.parquet"])
    perp_1h = pl.read_parquet(holdout / LINKS["binance_XRP_USDT_USDT_1h_futures.parquet"])
    funding = pl.read_parquet(holdout / LINKS["binance_XRP_USDT_USDT_8h_funding_rate.parquet"])
    with duckdb.connect(str(paths.warehouse_path()), read_only=True) as conn:
        candles = dict(((d.isoformat(), s, tf), n) for d, s, tf, n in _rows(
            conn, "SELECT CAST(ts AS DATE), symbol, timeframe, count(*) FROM raw.candles GROUP BY ALL"))
        assert candles == {  # every bar of the day, of each timeframe, as in the files
            ("2019-10-12", "XRP/ETH", "1m"): _day(spot_1m, "2019-10-12").height,
            ("2019-10-12", "XRP/ETH", "5m"): _day(spot_5m, "2019-10-12").height,
            ("2021-11-21", "XRP/USDT:USDT", "5m"): _day(perp_5m, "2021-11-21").height,
            ("2021-11-21", "XRP/USDT:USDT", "1h"): _day(perp_1h, "2021-11-21").height,
        }
        assert sorted(candles.values()) == [5, 271, 288, 1440]  # the perp's 5m bars end at 22:30, its 1h at 04:00
        assert _rows(conn, "SELECT DISTINCT venue FROM raw.candles UNION SELECT DISTINCT venue FROM raw.trades "
                           "UNION SELECT DISTINCT venue FROM raw.funding") == [("binance",)]
        trades = dict(_rows(conn, "SELECT CAST(ts AS DATE)::VARCHAR, count(*) FROM raw.trades GROUP BY 1"))
        assert trades == {"2019-10-12": _day(spot_trades, "2019-10-12").height, "2021-01-08": 2001}
        assert trades["2019-10-12"] == 4134
        assert _rows(conn, "SELECT count(*), count(DISTINCT ts) FROM raw.books") == [(428, 428)]

        # funding carry of the real perp: the day's three rates, annualized over their observed 8 h interval
        rates = _day(funding, "2021-11-21")["funding_rate"].to_list()
        assert rates == [0.00013862, 0.0001, 0.00019881]
        by_hand = sum(rates) / len(rates) * (24 / 8) * 365
        offers = _rows(conn, "SELECT venue, symbol, mean_funding_rate, observed_interval_hours, "
                             "annualized_funding, offered, reason FROM analytics.funding_opportunities "
                             "WHERE day = '2021-11-21'")
        assert len(offers) == 1, offers
        (offer,) = offers
        assert offer[:2] == ("binance", "XRP/USDT:USDT") and offer[3] == 8.0
        assert offer[2] == pytest.approx(sum(rates) / 3) and offer[4] == pytest.approx(by_hand, rel=1e-9)
        assert by_hand == pytest.approx(0.159662, rel=1e-5)  # 15.97 % a year
        assert offer[5] is False and "spot" in offer[6]  # no spot leg in the data: carry known, not offered

        # a session schedule on the real tape: BTC/USDT trades in its one recorded hour (spread from the books,
        # volume from the trades); the candle-only days have hours, each off with the reason
        schedule = _rows(conn, "SELECT day::VARCHAR, symbol, hour, active, reason FROM analytics.session_schedule "
                               "ORDER BY day, symbol, hour")
        assert [r for r in schedule if r[0] == "2021-01-08"] == [
            ("2021-01-08", "BTC/USDT", 0, True, "liquid, cheap and fast")]
        assert {r[1] for r in schedule if r[0] == "2021-11-21"} == {"XRP/USDT:USDT"}
        assert all(r[4] for r in schedule)
        (liquidity,) = _rows(conn, "SELECT volume_base, volume_source, usd_method FROM marts.mart_hourly_liquidity "
                                   "WHERE symbol = 'BTC/USDT'")
        quantity = pl.read_parquet(holdout / LINKS["binance_BTC_USDT_trades.parquet"])["quantity"].sum()
        assert liquidity[0] == pytest.approx(quantity) and liquidity[1:] == ("trades", "par")

        # the markets: from the ccxt dump where it has the pair, else inferred from the prices, and named
        markets = {(v, s): src for v, s, src in _rows(conn, "SELECT venue, symbol, source FROM analytics.markets")}
        assert set(markets) == {("binance", "BTC/USDT"), ("binance", "XRP/ETH"), ("binance", "XRP/USDT:USDT")}
        assert markets[("binance", "XRP/ETH")].startswith("inferred")

        # the risk backtest replayed the real tape and said which strategies it could not replay elsewhere
        pnl = {(d, s): (ev, n) for d, s, ev, n in _rows(
            conn, "SELECT day::VARCHAR, strategy, events, instruments FROM analytics.risk_backtest_pnl")}
        assert pnl[("2021-01-08", "mm_lite")] == (428 + 2001, 1)

    snapshot = load_current(paths.serving_dir())
    assert snapshot.manifest["partition"] == "2021-01-08"
    assert snapshot.tables["replay_books"].height == 428 and snapshot.tables["replay_trades"].height == 2001

    # the paper runtime on the graph's own snapshot: a router parent order fills against the real book
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "sofia_runtime.cli", "run", "--strategy", "router",
                           "--order", "buy 0.01 BTC/USDT", "--speed", "0", "--port", "0", "--runtime-id", "real-tape"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    from sofia_runtime.journal import journal_files, read_records, verify

    files = journal_files(paths.audit_dir() / "real-tape")
    assert verify(files) is None
    fills = [r["payload"] for _, _, r in read_records(files) if r["kind"] == "fill"]
    asks = pl.read_parquet(holdout / LINKS["binance_BTC_USDT_quotes.parquet"])["ask"]
    assert fills and sum(float(f["amount"]) for f in fills) == pytest.approx(0.01)
    assert all(asks.min() <= float(f["price"]) for f in fills)
    assert datetime.fromisoformat(snapshot.manifest["created_at"]) <= datetime.now(snapshot.created_at.tzinfo)
