"""The ccxt source on recorded Binance payloads, parsed by ccxt itself: no network.

The payloads are ccxt's own static test fixtures (real Binance responses) and its load_markets() output, read in
place from the held-out data (ccxt/); the funding-rate history is Binance's /fapi/v1/fundingRate shape filled with
real XRP/USDT:USDT rates from the held-out freqtrade data."""

import json
from datetime import datetime
from pathlib import Path

import ccxt
import polars as pl
import pytest

from sofia_pipelines.defs.market_data.ccxt_source import CcxtSource
from sofia_runtime.schemas import RAW_TABLES

class RecordedBinance(ccxt.binance):
    """ccxt's Binance with its HTTP layer answered from recorded payloads; every request is kept."""

    def __init__(self, holdout: Path):
        super().__init__({"enableRateLimit": False})
        self.set_markets(json.loads((holdout / "ccxt" / "markets" / "binance.json").read_text()))
        self.recorded = json.loads((holdout / "ccxt" / "response" / "binance.json").read_text())["methods"]
        funding = holdout / "freqtrade" / "futures" / "binance_XRP_USDT_USDT_8h_funding_rate.parquet"
        self.funding = [{"symbol": "XRPUSDT", "fundingTime": t, "fundingRate": f"{r:.8f}"}
                        for t, r in pl.read_parquet(funding).head(6).rows()]
        self.requests: list[str] = []
        self.fail_time = False

    def case(self, method: str, symbol: str) -> dict:
        return next(c for c in self.recorded[method] if c["input"][0] == symbol)

    def fetch(self, url, method="GET", headers=None, body=None):
        self.requests.append(url)
        if "/fapi/v1/klines" in url:
            return self.case("fetchOHLCV", "BTC/USDT:USDT")["httpResponse"]
        if "/api/v3/klines" in url:
            return self.case("fetchOHLCV", "BTC/USDT")["httpResponse"]
        if "/fapi/v1/depth" in url:
            return self.case("fetchOrderBook", "BTC/USDT:USDT")["httpResponse"]
        if "/api/v3/depth" in url:
            return self.case("fetchOrderBook", "BTC/USDT")["httpResponse"]
        if "aggTrades" in url:
            return self.case("fetchTrades", "BTC/USDT")["httpResponse"]
        if "/fapi/v1/fundingRate" in url:
            return self.funding
        if "/time" in url:
            if self.fail_time:
                raise ccxt.RequestTimeout("binance GET /api/v3/time timed out")
            return {"serverTime": 1710327661939}
        raise AssertionError(f"unexpected request {url}")


@pytest.fixture
def binance(holdout):
    return RecordedBinance(holdout)


def test_candles_parsed_by_ccxt_and_paginated_to_the_window(binance):
    src = CcxtSource(["binance"], exchanges={"binance": binance}, symbols=["BTC/USDT"])
    recorded = binance.case("fetchOHLCV", "BTC/USDT")
    first_ts = recorded["parsedResponse"][0][0]
    start = datetime.utcfromtimestamp(first_ts / 1000)
    df = src.load("candles", start, datetime(2024, 2, 1))
    assert df.schema == RAW_TABLES["candles"].polars_schema
    assert df.rows() == [("binance", "BTC/USDT", "spot", "1m", datetime.utcfromtimestamp(t / 1000), o, h, l, c, v)
                         for t, o, h, l, c, v in recorded["parsedResponse"]]
    # the replayed page does not advance past its last bar, so paging stops instead of looping
    assert sum("/api/v3/klines" in u for u in binance.requests) == 2


def test_book_trades_funding_and_latency(binance):
    src = CcxtSource(["binance"], exchanges={"binance": binance}, symbols=["BTC/USDT", "XRP/USDT:USDT"],
                     clock=lambda: 1710327661.939)
    window = (datetime(2021, 1, 1), datetime(2025, 1, 1))
    books = src.load("books", *window)
    spot = books.filter(pl.col("symbol") == "BTC/USDT")
    assert spot.select("bid", "ask", "bid_size", "ask_size").row(0) == (42574.3, 42574.31, 0.0107, 0.0087)

    trades = src.load("trades", *window)
    assert trades.filter(pl.col("symbol") == "BTC/USDT").select("trade_id", "side", "price", "amount").row(0) == \
        ("2913537567", "buy", 73238.7, 0.00109)

    funding = src.load("funding", *window)
    assert funding["symbol"].unique().to_list() == ["XRP/USDT:USDT"]
    assert funding["funding_rate"].to_list() == [0.0001] * 6

    latency = src.load("latency", *window)
    assert latency.row(0)[:2] == ("binance", "public_rest") and latency["ok"][0]
    binance.fail_time = True
    failed = src.load("latency", *window)
    assert not failed["ok"][0] and "RequestTimeout" in failed["error"][0] and failed["latency_ms"][0] is None


def test_unknown_venue_is_refused():
    with pytest.raises(ValueError, match="unknown venue"):
        CcxtSource(["binanse"])


def test_recorded_venue_through_the_raw_assets(resources, holdout):
    import dagster as dg

    from sofia_pipelines.defs.market_data import assets
    from sofia_pipelines.resources import MarketSourceResource

    exchange = RecordedBinance(holdout)

    class RecordedSource(MarketSourceResource):
        def get(self):
            return CcxtSource(["binance"], exchanges={"binance": exchange}, symbols=["BTC/USDT"],
                              clock=lambda: datetime(2024, 1, 30, 12).timestamp())

    result = dg.materialize([assets.raw_candles, assets.raw_books, assets.raw_fx],
                            resources={**resources, "market_source": RecordedSource(spec="ccxt:binance")},
                            partition_key="2024-01-30")
    meta = {m.asset_key.path[-1]: m.event_specific_data.materialization.metadata
            for m in result.get_asset_materialization_events()}
    assert meta["candles"]["dagster/row_count"].value == 3  # the three recorded bars, all on 2024-01-30
    assert meta["books"]["dagster/row_count"].value == 1
    assert "has no fx" in meta["fx"]["note"].value
