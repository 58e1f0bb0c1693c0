"""Markets for whatever the data holds: real ccxt load_markets() dumps, inference from real tapes, and the markets
and fee assets over a real warehouse of real files."""

import json
from datetime import timedelta

import dagster as dg
import duckdb
import polars as pl
import pytest

from sofia_pipelines.defs.fees import assets, checks
from sofia_pipelines.defs.fees.compute import load_yaml, markets_frame
from sofia_pipelines.defs.fees.markets import (DECIMAL_PLACES, INFERRED, TICK_SIZE, dump_markets, find_market_dumps,
                                               inferred_markets, precision_mode)
from sofia_pipelines.resources import MarketSourceResource
from sofia_pipelines.warehouse import read_window, replace_rows, replace_window
from sofia_runtime import paths
from sofia_runtime.schemas import FEE_TABLE, MARKETS, RAW_TABLES, SchemaError
from sofia_runtime.simulator import MarketSimulator


@pytest.fixture(scope="module")
def dumps(holdout):
    found, notes = find_market_dumps(holdout / "ccxt" / "markets")
    assert notes == []
    return found


def _filter(info: dict, kind: str, field: str) -> float:
    return float(next(f[field] for f in info["filters"] if f["filterType"] == kind))


def test_binance_dump_in_decimal_places_becomes_tick_sizes(dumps):
    path, dump = dumps["binance"]
    assert precision_mode("binance", dump)[0] == DECIMAL_PLACES  # although today's ccxt says tick sizes for binance
    rows = {r["symbol"]: r for r in dump_markets("binance", path, dump, ["XRP/USDT", "XRP/USDT:USDT", "BTC/USDT",
                                                                          "NOPE/USDT"]).iter_rows(named=True)}
    assert set(rows) == {"XRP/USDT", "XRP/USDT:USDT", "BTC/USDT"}
    for symbol, row in rows.items():  # the exchange's own filters in `info` agree with the converted precision
        info = dump[symbol]["info"]
        assert row["price_tick"] == _filter(info, "PRICE_FILTER", "tickSize"), symbol
        assert row["amount_step"] == _filter(info, "LOT_SIZE", "stepSize"), symbol
    assert rows["XRP/USDT"]["amount_step"] == 1.0 and rows["XRP/USDT"]["min_notional"] == 5.0
    assert rows["XRP/USDT:USDT"]["market"] == "perp" and rows["XRP/USDT:USDT"]["amount_step"] == 0.1
    assert "decimal places" in rows["BTC/USDT"]["source"] and "binance.json" in rows["BTC/USDT"]["source"]


def test_bybit_okx_btcturk_dumps_hold_tick_sizes(dumps):
    for venue in ("bybit", "okx", "btcturk"):
        assert precision_mode(venue, dumps[venue][1])[0] == TICK_SIZE
    bybit = dump_markets("bybit", *dumps["bybit"], ["XRP/USDT", "BTC/USDT:USDT"]).sort("symbol")
    info = {s: dumps["bybit"][1][s]["info"] for s in bybit["symbol"]}
    assert bybit["price_tick"].to_list() == [float(info["BTC/USDT:USDT"]["priceFilter"]["tickSize"]),
                                             float(info["XRP/USDT"]["priceFilter"]["tickSize"])] == [0.1, 0.0001]
    assert bybit.filter(pl.col("symbol") == "XRP/USDT").select("amount_step", "min_amount").row(0) == (0.01, 0.44)
    btcturk = dump_markets("btcturk", *dumps["btcturk"], ["BTC/TRY"])
    assert btcturk.select("price_tick", "amount_step", "min_notional").row(0) == (1.0, 1e-08, 99.91)


def test_a_dump_is_told_by_content_under_any_name(tmp_path, dumps):
    real = dumps["okx"][1]
    subset = {s: real[s] for s in ("BTC/USDT", "ETH/USDT:USDT")}
    (tmp_path / "venues" / "okx").mkdir(parents=True)
    (tmp_path / "venues" / "okx" / "instruments-2024.json").write_text(json.dumps(subset))
    (tmp_path / "unnamed.json").write_text(json.dumps(subset))
    (tmp_path / "candles.json").write_text(json.dumps([[1, 2, 3, 1, 2, 5]]))
    (tmp_path / "other.json").write_text(json.dumps({"a": {"b": 1}}))
    found, notes = find_market_dumps(tmp_path)
    assert list(found) == ["okx"] and found["okx"][0].name == "instruments-2024.json"
    assert len(notes) == 1 and "unnamed.json" in notes[0] and "no ccxt exchange id" in notes[0]
    (tmp_path / "bybit").mkdir()
    (tmp_path / "bybit" / "dump.json").write_text(json.dumps(subset))
    assert list(find_market_dumps(tmp_path / "bybit")[0]) == ["bybit"]  # the source folder's own name counts


def test_a_stub_market_without_precision_is_an_error_naming_file_and_field(dumps):
    with pytest.raises(SchemaError, match=r"binance.json, field 'BTC/USDT:USDT-231229.precision.price'"):
        dump_markets("binance", *dumps["binance"], ["BTC/USDT:USDT-231229"])


def _tag(df: pl.DataFrame, venue: str, symbol: str, market: str, timeframe: str | None = None) -> pl.DataFrame:
    df = df.with_columns(pl.col("timestamp").cast(pl.Datetime("ms")).alias("ts"), venue=pl.lit(venue),
                         symbol=pl.lit(symbol), market=pl.lit(market))
    return df.with_columns(timeframe=pl.lit(timeframe)) if timeframe else df


def _real_raw(holdout) -> dict[str, pl.DataFrame]:
    ft = holdout / "freqtrade"
    candles = pl.concat([RAW_TABLES["candles"].conform(_tag(pl.read_parquet(ft / f), v, s, m, tf), str(f)) for f, v, s, m, tf in (
        ("spot/binance_XRP_ETH_1m.parquet", "binance", "XRP/ETH", "spot", "1m"),
        ("spot/bittrex_ADA_BTC_1m.parquet", "bittrex", "ADA/BTC", "spot", "1m"),
        ("futures/binance_XRP_USDT_USDT_5m_futures.parquet", "binance", "XRP/USDT:USDT", "perp", "5m"))])
    trades = _tag(pl.read_parquet(ft / "trades/binance_XRP_ETH_trades.parquet"), "binance", "XRP/ETH", "spot") \
        .rename({"id": "trade_id"})
    funding = _tag(pl.read_parquet(ft / "futures/binance_XRP_USDT_USDT_8h_funding_rate.parquet"), "binance",
                   "XRP/USDT:USDT", "perp")
    return {"candles": candles, "trades": RAW_TABLES["trades"].conform(trades, "trades"),
            "funding": RAW_TABLES["funding"].conform(funding, "funding")}


def test_inferred_from_real_tapes(holdout):
    raw = _real_raw(holdout)
    candles = raw["candles"].filter(pl.col("market") == "spot")
    prices = pl.concat([candles.select("venue", "symbol", pl.concat_list("open", "high", "low", "close")
                                       .alias("price")).explode("price"),
                        raw["trades"].select("venue", "symbol", "price")])
    observed = candles.select("venue", "symbol", "market").unique()
    volumes = candles.select("venue", "symbol", pl.col("volume").alias("amount"))
    got = inferred_markets(observed, prices, raw["trades"].select("venue", "symbol", "amount"), volumes).sort("venue")
    assert got.select("venue", "symbol", "base", "quote", "price_tick", "amount_step", "source").rows() == [
        ("binance", "XRP/ETH", "XRP", "ETH", 1e-08, 1.0, INFERRED),    # Binance's XRPETH: tick 1e-8, whole XRP
        ("bittrex", "ADA/BTC", "ADA", "BTC", 1e-08, 1e-08, INFERRED)]  # satoshi prices, 8-decimal volumes


def _write_raw(tables: dict[str, pl.DataFrame]) -> None:
    with duckdb.connect(str(paths.warehouse_path())) as conn:
        for name, df in tables.items():
            start = df["ts"].min().replace(hour=0, minute=0, second=0, microsecond=0)
            replace_window(conn, "raw", RAW_TABLES[name], df, start, df["ts"].max() + timedelta(days=1))


FEE_ASSETS = [assets.markets, assets.fee_table_asset, checks.every_market_has_a_fee, checks.fees_within_bounds,
              checks.every_observed_market_resolved]


def test_markets_and_fees_for_real_files(data_dir, holdout):
    _write_raw(_real_raw(holdout))
    resources = {"warehouse": assets.DuckDBResource(database=str(paths.warehouse_path())),
                 "market_source": MarketSourceResource(spec=f"files:{holdout / 'ccxt'}")}
    result = dg.materialize(FEE_ASSETS, resources=resources)
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    with duckdb.connect(str(paths.warehouse_path()), read_only=True) as conn:
        markets = read_window(conn, "analytics", MARKETS).sort("venue", "symbol")
        fees = read_window(conn, "analytics", FEE_TABLE).filter(pl.col("selected") & pl.col("valid_to").is_null()) \
            .sort("venue", "symbol")  # the fees in force now
    assert markets["symbol"].to_list() == ["XRP/ETH", "XRP/USDT:USDT", "ADA/BTC"]
    sources = dict(zip(markets["symbol"], markets["source"]))
    assert sources["XRP/USDT:USDT"].startswith("ccxt load_markets() binance: binance.json, precision in decimal places")
    assert sources["XRP/ETH"] == sources["ADA/BTC"] == INFERRED
    perp = markets.filter(pl.col("symbol") == "XRP/USDT:USDT")
    assert perp.select("price_tick", "amount_step", "min_notional").row(0) == (0.0001, 0.1, 5.0)

    by_symbol = {r["symbol"]: r for r in fees.iter_rows(named=True)}
    assert by_symbol["XRP/ETH"]["source"].startswith("override: binance.com")  # binance spot in config/fees.yaml
    assert by_symbol["XRP/USDT:USDT"]["taker"] == 0.0005                        # binance USDⓈ-M override
    import ccxt

    assert "bittrex" not in ccxt.exchanges  # ccxt dropped bittrex: no static schedule to fall back on
    assert by_symbol["ADA/BTC"]["source"] == "default (no schedule known)"
    assert (by_symbol["ADA/BTC"]["maker"], by_symbol["ADA/BTC"]["taker"]) == (0.001, 0.001)


def test_a_market_in_the_data_without_any_precision_warns(data_dir, holdout):
    funding_only = _real_raw(holdout)["funding"].with_columns(venue=pl.lit("bybit"), symbol=pl.lit("ZZZ/USDT:USDT"))
    _write_raw({"funding": funding_only})
    resources = {"warehouse": assets.DuckDBResource(database=str(paths.warehouse_path())),
                 "market_source": MarketSourceResource(spec="simulated")}
    result = dg.materialize(FEE_ASSETS, resources=resources)
    evaluations = {c.check_name: c for c in result.get_asset_check_evaluations()}
    warn = evaluations["every_observed_market_resolved"]
    assert not warn.passed and warn.severity == dg.AssetCheckSeverity.WARN and "ZZZ/USDT:USDT" in warn.description
    meta = result.asset_materializations_for_node("markets")[0].metadata
    assert "bybit ZZZ/USDT:USDT" in meta["unresolved"].value


def test_simulated_data_resolves_to_the_configured_markets(data_dir):
    sim = MarketSimulator()
    day = sim.day(sim.start)
    # one row per series is all the markets asset reads
    _write_raw({name: day[name].unique(subset=["venue", "symbol"], keep="first")
                for name in ("candles", "books", "trades", "funding")})
    resources = {"warehouse": assets.DuckDBResource(database=str(paths.warehouse_path())),
                 "market_source": MarketSourceResource(spec="simulated")}
    result = dg.materialize(FEE_ASSETS, resources=resources)
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    with duckdb.connect(str(paths.warehouse_path()), read_only=True) as conn:
        markets = read_window(conn, "analytics", MARKETS)
    configured = markets_frame(load_yaml("markets.yaml"))
    assert markets.height == 38
    assert markets.sort("venue", "symbol").equals(configured.sort("venue", "symbol"))


def test_fee_check_fails_for_a_market_without_a_fee(data_dir, resources):
    result = dg.materialize([assets.markets, assets.fee_table_asset], resources=resources)
    assert result.success
    with duckdb.connect(str(paths.warehouse_path())) as conn:
        markets = read_window(conn, "analytics", MARKETS)
        extra = markets.head(1).with_columns(venue=pl.lit("bitstamp"), source=pl.lit("added by the test"))
        replace_rows(conn, "analytics", MARKETS, pl.concat([markets, extra]))
    check_only = dg.materialize([assets.markets, assets.fee_table_asset, checks.every_market_has_a_fee],
                                resources=resources, raise_on_error=False,
                                selection=dg.AssetSelection.checks(checks.every_market_has_a_fee))
    [evaluation] = check_only.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.metadata["without_one_fee"].value == 1
    assert "bitstamp" in evaluation.description


def test_a_warehouse_made_before_markets_had_a_source_takes_the_new_rows(data_dir, resources):
    with duckdb.connect(str(paths.warehouse_path())) as conn:
        conn.execute("CREATE SCHEMA analytics")
        conn.execute("CREATE TABLE analytics.markets (venue VARCHAR, symbol VARCHAR, market VARCHAR, base VARCHAR, "
                     "quote VARCHAR, price_tick DOUBLE, amount_step DOUBLE, min_amount DOUBLE, min_notional DOUBLE)")
    assert dg.materialize([assets.markets], resources=resources).success
    with duckdb.connect(str(paths.warehouse_path()), read_only=True) as conn:
        markets = read_window(conn, "analytics", MARKETS)
    assert markets.height == 38 and markets["source"].null_count() == 0


def test_a_market_with_prices_but_no_amounts_is_left_for_the_caller_to_report():
    observed = pl.DataFrame({"venue": ["bybit"], "symbol": ["ZZZ/USDT"], "market": ["spot"]})
    prices = pl.DataFrame({"venue": ["bybit"] * 3, "symbol": ["ZZZ/USDT"] * 3, "price": [1.0, 1.25, 1.5]})
    amounts = pl.DataFrame(schema={"venue": pl.Utf8, "symbol": pl.Utf8, "amount": pl.Float64})
    assert inferred_markets(observed, prices, amounts, amounts).is_empty()
    volumes = pl.DataFrame({"venue": ["bybit"] * 2, "symbol": ["ZZZ/USDT"] * 2, "amount": [12.5, 3.125]})
    got = inferred_markets(observed, prices, amounts, volumes)
    assert got.select("price_tick", "amount_step").row(0) == (0.25, 0.001)
