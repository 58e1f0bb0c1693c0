"""Funding carry: annualized from the observed interval (8 h, 4 h, real jittered timestamps), net of costs."""

from datetime import datetime, timedelta

import polars as pl
import pytest

from sofia_pipelines.defs.funding.compute import CarryConfig, funding_opportunities, observed_intervals

T0 = datetime(2026, 10, 20)
REAL = "freqtrade/futures/binance_XRP_USDT_USDT_8h_funding_rate.parquet"  # in the held-out data


def _funding(venue, symbol, every_h, rate, n=12):
    return pl.DataFrame({"venue": venue, "symbol": symbol, "ts": [T0 + timedelta(hours=every_h * i) for i in range(n)],
                         "funding_rate": [rate] * n})


def _books(venue, base, spot_mid=100.0, perp_mid=100.05, spread=0.0002, n=20):
    rows = []
    for i in range(n):
        ts = T0 + timedelta(minutes=i)
        for sym, market, mid in ((f"{base}/USDT", "spot", spot_mid), (f"{base}/USDT:USDT", "perp", perp_mid + 0.01 * (i % 2))):
            rows.append({"venue": venue, "symbol": sym, "market": market, "ts": ts, "bid": mid * (1 - spread / 2),
                         "ask": mid * (1 + spread / 2), "bid_size": 1.0, "ask_size": 1.0})
    return pl.DataFrame(rows)


def _fees(venue, base, spot_taker=0.001, perp_taker=0.0005):
    return pl.DataFrame({"venue": [venue] * 2, "symbol": [f"{base}/USDT", f"{base}/USDT:USDT"],
                         "taker": [spot_taker, perp_taker], "selected": [True, True]})


def test_real_funding_history_interval_despite_millisecond_jitter(holdout):
    real = pl.read_parquet(holdout / REAL).select(pl.from_epoch("timestamp", time_unit="ms").alias("ts"), "funding_rate")
    real = real.with_columns(pl.lit("binance").alias("venue"), pl.lit("XRP/USDT:USDT").alias("symbol"))
    stats = observed_intervals(real).row(0, named=True)
    assert stats["observed_interval_hours"] == 8.0 and stats["n"] == 91


def test_annualized_from_observed_interval_and_break_even():
    funding = pl.concat([_funding("a", "X/USDT:USDT", 8, 0.0003), _funding("b", "X/USDT:USDT", 4, 0.0003)])
    books = pl.concat([_books("a", "X"), _books("b", "X")])
    fees = pl.concat([_fees("a", "X"), _fees("b", "X")])
    out = funding_opportunities(funding, books, fees, CarryConfig(holding_hours=720, basis_risk_multiple=0))
    a = out.filter(pl.col("venue") == "a").row(0, named=True)
    b = out.filter(pl.col("venue") == "b").row(0, named=True)
    assert a["annualized_funding"] == pytest.approx(0.0003 * 3 * 365)
    assert b["annualized_funding"] == pytest.approx(0.0003 * 6 * 365)  # 4-hour contract pays twice as often
    costs = 2 * (0.001 + 0.0005) + 2 * 0.0002
    assert a["fees_cost"] == pytest.approx(0.003) and a["spread_cost"] == pytest.approx(0.0004, rel=1e-6)
    assert a["breakeven_hours"] == pytest.approx(costs / (0.0003 / 8), rel=1e-6)
    assert a["direction"] == "long_spot_short_perp" and a["offered"] and b["offered"]


def test_rejections_say_why():
    funding = pl.concat([_funding("a", "X/USDT:USDT", 8, 0.00001), _funding("a", "Y/USDT:USDT", 8, -0.0005),
                         _funding("a", "Z/USDT:USDT", 8, 0.001, n=2)])
    books = pl.concat([_books("a", "X"), _books("a", "Z")])
    fees = pl.concat([_fees("a", "X"), _fees("a", "Y"), _fees("a", "Z")])
    out = {r["symbol"]: r for r in funding_opportunities(funding, books, fees, CarryConfig()).iter_rows(named=True)}
    assert not out["X/USDT:USDT"]["offered"] and out["X/USDT:USDT"]["reason"].startswith("costs exceed carry")
    assert out["Y/USDT:USDT"]["direction"] == "short_spot_long_perp"
    assert out["Y/USDT:USDT"]["reason"] == ("cannot price both legs, absent: perp spread (books or candles), spot "
                                            "spread (books or candles), basis (spot and perp prices at the same times)")
    assert out["X/USDT:USDT"]["method"] == "spread=perp:books,spot:books;basis=books"
    assert out["Z/USDT:USDT"]["reason"] == "too few funding observations"
