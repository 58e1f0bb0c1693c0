"""Fee precedence, tier selection and the fee assets in a real warehouse."""

from datetime import date
from decimal import Decimal

import dagster as dg
import polars as pl
import pytest

from sofia_pipelines.defs.fees import assets, checks
from sofia_pipelines.defs.fees.compute import ccxt_static_fees, fee_table, load_yaml, markets_frame
from sofia_runtime.fees import FeeSchedule

MARKETS = pl.DataFrame({"venue": ["binance", "kraken", "kraken", "okx"],
                        "symbol": ["BTC/USDT", "BTC/USD", "ETH/USD", "BTC/USDT:USDT"],
                        "market": ["spot", "spot", "spot", "perp"], "base": ["BTC", "BTC", "ETH", "BTC"],
                        "quote": ["USDT", "USD", "USD", "USDT"], "price_tick": [0.01] * 4, "amount_step": [1e-5] * 4,
                        "min_amount": [1e-5] * 4, "min_notional": [5.0] * 4})
OVERRIDES = {"desk_volume_30d_usd": 2_000_000, "checked": date(2026, 11, 1), "trading": [
    {"venue": "binance", "market": "spot", "valid_from": date(2024, 1, 1), "source": "page",
     "tiers": [{"tier": "VIP0", "min_volume_30d_usd": 0, "maker": 0.001, "taker": 0.001},
               {"tier": "VIP1", "min_volume_30d_usd": 1_000_000, "maker": 0.0009, "taker": 0.001},
               {"tier": "VIP2", "min_volume_30d_usd": 5_000_000, "maker": 0.0008, "taker": 0.001}]},
    {"venue": "okx", "market": "perp", "valid_from": date(2024, 1, 1), "source": "page", "funding_interval_hours": 8,
     "tiers": [{"tier": "Lv1", "min_volume_30d_usd": 0, "maker": 0.0002, "taker": 0.0005}]}]}


def test_override_beats_fetched_beats_static_and_tier_follows_volume():
    fetched = {("kraken", "BTC/USD"): (0.0016, 0.0026), ("binance", "BTC/USDT"): (0.5, 0.5)}
    df = fee_table(MARKETS, OVERRIDES, fetched, static=lambda venue: (0.0025, 0.004))
    binance = df.filter((pl.col("venue") == "binance") & (pl.col("valid_from") == date(2024, 1, 1)))
    assert binance.height == 3 and binance.filter(pl.col("selected"))["tier"].to_list() == ["VIP1"]
    assert binance.filter(pl.col("selected"))["maker"][0] == 0.0009  # override, not the fetched 0.5
    # the days before the override period (older data) take the next source, in a period that ends at the override
    (before,) = df.filter((pl.col("venue") == "binance") & (pl.col("valid_from") < date(2024, 1, 1))).rows(named=True)
    assert (before["maker"], before["valid_from"], before["valid_to"], before["selected"]) == (
        0.5, date(2000, 1, 1), date(2024, 1, 1), True)
    assert before["source"] == "fetch_trading_fees binance (before the override period from 2024-01-01)"
    kraken = df.filter(pl.col("venue") == "kraken").sort("symbol")
    assert kraken.select("maker", "taker").rows() == [(0.0016, 0.0026), (0.0025, 0.004)]
    assert kraken["source"].to_list() == ["fetch_trading_fees kraken", "ccxt static schedule kraken"]
    okx = df.filter(pl.col("venue") == "okx")
    assert okx["funding_interval_hours"][0] == 8.0


def test_fee_schedule_lookup_and_decimal_amounts():
    schedule = FeeSchedule(fee_table(MARKETS, OVERRIDES, {}, static=lambda v: (0.002, 0.003)))
    assert schedule.rate("binance", "BTC/USDT", "maker", date(2026, 10, 1)) == 0.0009
    assert schedule.fee("okx", "BTC/USDT:USDT", "taker", date(2026, 10, 1), Decimal("10000")) == Decimal("5.00000000")
    # 2023: before the file's schedule for binance spot; ccxt's static schedule (here 0.003) stands in
    assert schedule.rate("binance", "BTC/USDT", "taker", date(2023, 6, 1)) == 0.003
    assert schedule.rate("binance", "BTC/USDT", "taker", date(2024, 1, 1)) == 0.001


def test_checked_in_config_covers_every_market_with_sane_fees():
    df = fee_table(markets_frame(load_yaml("markets.yaml")), load_yaml("fees.yaml"), {})
    today = date(2026, 11, 1)
    selected = df.filter(pl.col("selected") & (pl.col("valid_from") <= today)
                         & (pl.col("valid_to").is_null() | (pl.col("valid_to") > today)))
    assert selected.group_by("venue", "symbol").len()["len"].max() == 1
    assert selected.height == 38
    assert selected.filter((pl.col("venue") == "bybit") & (pl.col("market") == "perp"))["taker"].unique().to_list() == [0.00055]
    assert selected.filter(pl.col("venue") == "btcturk").select("maker", "taker").unique().rows() == [(0.0005, 0.0009)]


def test_fee_assets_and_blocking_checks(resources):
    result = dg.materialize([assets.markets, assets.fee_table_asset, assets.withdrawal_fees_asset, assets.tax_rules,
                             checks.fees_within_bounds, checks.every_market_has_a_fee, checks.tax_rules_well_formed],
                            resources=resources)
    assert all(e.passed for e in result.get_asset_check_evaluations())
    rows = {m.asset_key.to_user_string(): m.event_specific_data.materialization.metadata["dagster/row_count"].value
            for m in result.get_asset_materialization_events()}
    assert rows["markets"] == 38 and rows["tax_rules"] == 5 and rows["fee_table"] > 38


def _two_periods() -> dict:
    old = {"venue": "binance", "market": "spot", "valid_from": date(2024, 1, 1), "source": "page of 2024",
           "tiers": [{"tier": "VIP0", "min_volume_30d_usd": 0, "maker": 0.001, "taker": 0.001}]}
    new = {"venue": "binance", "market": "spot", "valid_from": date(2026, 3, 1), "source": "page of 2026",
           "tiers": [{"tier": "VIP0", "min_volume_30d_usd": 0, "maker": 0.0008, "taker": 0.00095},
                     {"tier": "VIP1", "min_volume_30d_usd": 1_000_000, "maker": 0.0006, "taker": 0.0009}]}
    return {**OVERRIDES, "trading": [new, old, *OVERRIDES["trading"][1:]]}


def test_effective_dated_overrides_keep_every_period():
    df = fee_table(MARKETS, _two_periods(), {}, static=lambda v: (0.002, 0.003))
    binance = df.filter(pl.col("venue") == "binance").sort("valid_from", "tier")
    assert binance.select("tier", "valid_from", "valid_to", "selected").rows() == [
        ("default", date(2000, 1, 1), date(2024, 1, 1), True),  # before the file's periods: ccxt's static fee
        ("VIP0", date(2024, 1, 1), date(2026, 3, 1), True),   # the first period ends where the next starts
        ("VIP0", date(2026, 3, 1), None, False),
        ("VIP1", date(2026, 3, 1), None, True)]               # 2M of 30-day volume reaches VIP1 from March
    schedule = FeeSchedule(df)
    assert schedule.rate("binance", "BTC/USDT", "taker", date(2025, 6, 1)) == 0.001
    assert schedule.rate("binance", "BTC/USDT", "taker", date(2026, 3, 1)) == 0.0009
    assert checks.markets_without_one_fee(MARKETS, df, date(2025, 6, 1)).is_empty()
    assert checks.markets_without_one_fee(MARKETS, df, date(2026, 10, 1)).is_empty()
    # before any override period the fallback is in force: no market is without a fee on any day
    assert checks.markets_without_one_fee(MARKETS, df, date(2023, 6, 1)).is_empty()


def test_overlapping_override_periods_are_refused():
    config = _two_periods()
    config["trading"][1] = {**config["trading"][1], "valid_to": date(2026, 6, 1)}
    with pytest.raises(ValueError, match="binance spot overlap"):
        fee_table(MARKETS, config, {})


def test_no_schedule_anywhere_takes_the_configured_default_or_fails():
    bittrex = pl.DataFrame({"venue": ["bittrex", "kraken"], "symbol": ["ADA/BTC", "BCH/EUR"], "market": ["spot"] * 2})
    import ccxt

    assert "bittrex" not in ccxt.exchanges and ccxt_static_fees("bittrex") is None
    df = fee_table(bittrex, {**OVERRIDES, "default": {"maker": 0.0015, "taker": 0.0025}}, {}).sort("venue")
    assert df.select("venue", "maker", "taker", "source").rows() == [
        ("bittrex", 0.0015, 0.0025, "default (no schedule known)"),
        ("kraken", 0.0016, 0.0026, "ccxt static schedule kraken")]  # ccxt.kraken().fees['trading'], offline
    with pytest.raises(ValueError, match="no fee for bittrex ADA/BTC.*no `default`"):
        fee_table(bittrex, OVERRIDES, {})
    assert load_yaml("fees.yaml")["default"] == {"maker": 0.001, "taker": 0.001}


def test_keys_are_read_under_the_runtimes_names(monkeypatch):
    monkeypatch.setenv("SOFIA_SOURCE", "ccxt:binance")
    monkeypatch.setenv("SOFIA_BINANCE_API_KEY", "k")
    monkeypatch.setenv("SOFIA_BINANCE_API_SECRET", "wrong name")
    monkeypatch.delenv("SOFIA_BINANCE_SECRET", raising=False)
    assert assets._keyed_exchanges() == {}
    monkeypatch.setenv("SOFIA_BINANCE_SECRET", "s")
    exchange = assets._keyed_exchanges()["binance"]
    assert (exchange.apiKey, exchange.secret) == ("k", "s")
