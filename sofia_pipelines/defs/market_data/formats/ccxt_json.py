"""JSON as ccxt returns it, and the venues' own funding-history responses.

    [[1570752000000, 0.000313, 0.000314, 0.000312, 0.000313, 812.0], …]        ccxt fetch_ohlcv (freqtrade's .json)
    [{"symbol": "BTC/USDT:USDT", "fundingRate": 0.0001, "timestamp": …}, …]   ccxt fetch_funding_rate_history
    [{"id": "…", "timestamp": …, "side": "buy", "price": …, "amount": …}, …]  ccxt fetch_trades (.json.gz too)
    [[1570752011620, "13519807", null, "sell", 0.001413, 23.0, 0.0325], …]  freqtrade's <PAIR>-trades.json.gz
    {"exchange": "binance", "methods": {"fetchOHLCV": [{input, parsedResponse}]}}  ccxt's static response tests
    {"code": "0", "data": [{"instId": "BTC-USDT-SWAP", "fundingRate", "fundingTime"}]}   okx funding-rate-history
    {"retCode": 0, "result": {"category": "linear", "list": [{symbol, fundingRate, fundingRateTimestamp}]}}  bybit
    [{"symbol": "BTCUSDT", "fundingRate": "…", "fundingTime": …}]              binance USDⓈ-M /fapi/v1/fundingRate
    [{"coin": "BTC", "fundingRate": "…", "premium": "…", "time": …}]          hyperliquid fundingHistory
REST responses are small: a file is parsed whole, then yielded in batches. A newest-first payload (okx,
bybit) is turned oldest-first, as ccxt does.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from sofia_pipelines.defs.market_data.formats import BATCH_ROWS, FileHints, fill_from_hints
from sofia_pipelines.defs.market_data.formats.symbols import instrument
from sofia_pipelines.defs.market_data.formats.timestamps import TimeParser
from sofia_runtime.schemas import SchemaError

OHLCV = ("open", "high", "low", "close", "volume")


def _load(path: Path):
    try:
        opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise SchemaError(str(path), f"unreadable JSON: {exc}") from exc
    except RecursionError:
        raise SchemaError(str(path), "unreadable JSON: nested too deeply") from None


def _starts(head: bytes, *tokens: bytes) -> bool:
    text = re.sub(rb"\s+", b"", head[:256])
    return any(text.startswith(t) for t in tokens)


def _records(path: Path, rows: list[dict], fields: dict[str, str], table: str, hints: FileHints,
             time_field: str, sort: bool = False, optional: dict[str, str] | None = None
             ) -> Iterator[tuple[str, pl.DataFrame]]:
    """List of dicts -> frames of `table`; `fields` maps the payload's keys to the table's columns, `optional`
    the keys some entries have (an absent or empty one is null)."""
    origin = str(path)
    for i, r in enumerate(rows):
        missing = [k for k in fields if not isinstance(r, dict) or k not in r]
        if missing:
            raise SchemaError(origin, f"entry has no {missing}; expected keys {list(fields)}", row=i + 1,
                              field=missing[0])
    optional = optional or {}
    df = pl.DataFrame([{**{col: (None if r[k] is None else str(r[k])) for k, col in fields.items()},
                        **{col: (str(r[k]) if r.get(k) not in (None, "") else None) for k, col in optional.items()}}
                       for r in rows], schema={c: pl.Utf8 for c in (*fields.values(), *optional.values())})
    df = df.with_columns(TimeParser(origin).parse(df["ts"], time_field, 1))
    if sort and df.height > 1 and df["ts"][0] > df["ts"][-1]:
        df = df.reverse()
    df = fill_from_hints(df, table, hints, origin)
    for start in range(0, max(df.height, 1), BATCH_ROWS):
        yield table, df.slice(start, BATCH_ROWS)


class CcxtOhlcv:
    name = "ccxt OHLCV JSON: [[timestamp, open, high, low, close, volume], …]"

    def matches(self, path: Path, head: bytes) -> bool:
        return _starts(head, b"[[", b"[]")

    def read(self, path: Path, hints: FileHints) -> Iterator[tuple[str, pl.DataFrame]]:
        rows, origin = _load(path), str(path)
        bad = next((i for i, r in enumerate(rows) if not isinstance(r, list) or len(r) != 6), None)
        if bad is not None:
            raise SchemaError(origin, "ccxt OHLCV JSON must be a list of [timestamp, open, high, low, close, volume]",
                              row=bad + 1)
        yield from _records(path, [dict(zip(("timestamp", *OHLCV), r)) for r in rows],
                            {"timestamp": "ts", **{c: c for c in OHLCV}}, "candles", hints, "timestamp")


class FreqtradeTrades:
    """freqtrade's trades JSON: lists with no names in them, so the file name (`…-trades.json[.gz]`) says it."""

    name = "freqtrade trades JSON: [[timestamp, id, type, side, price, amount, cost], …] named *trades*.json[.gz]"
    COLUMNS = ("timestamp", "id", "type", "side", "price", "amount", "cost")

    def matches(self, path: Path, head: bytes) -> bool:
        return _starts(head, b"[[", b"[]") and "trades" in path.name

    def read(self, path: Path, hints: FileHints) -> Iterator[tuple[str, pl.DataFrame]]:
        rows, origin = _load(path), str(path)
        bad = next((i for i, r in enumerate(rows) if not isinstance(r, list) or len(r) != len(self.COLUMNS)), None)
        if bad is not None:
            raise SchemaError(origin, f"freqtrade trades JSON must be a list of {list(self.COLUMNS)}", row=bad + 1)
        yield from _records(path, [dict(zip(self.COLUMNS, r)) for r in rows],
                            {"timestamp": "ts", "id": "trade_id", "side": "side", "price": "price",
                             "amount": "amount"}, "trades", hints, "timestamp")


class CcxtFundingHistory:
    name = "ccxt fetch_funding_rate_history JSON: [{symbol, fundingRate, timestamp, info}, …]"

    def matches(self, path: Path, head: bytes) -> bool:
        return _starts(head, b"[{") and b'"fundingRate"' in head and b'"timestamp"' in head and b'"info"' in head

    def read(self, path: Path, hints: FileHints) -> Iterator[tuple[str, pl.DataFrame]]:
        yield from _records(path, _load(path), {"symbol": "symbol", "timestamp": "ts", "fundingRate": "funding_rate"},
                            "funding", hints, "timestamp", sort=True)


class CcxtTrades:
    name = "ccxt fetch_trades JSON: [{id, timestamp, side, price, amount, info}, …] (gzip too)"

    def matches(self, path: Path, head: bytes) -> bool:
        return _starts(head, b"[{") and all(k in head for k in (b'"side"', b'"price"', b'"amount"', b'"timestamp"'))

    def read(self, path: Path, hints: FileHints) -> Iterator[tuple[str, pl.DataFrame]]:
        yield from _records(path, _load(path), {"id": "trade_id", "timestamp": "ts", "side": "side", "price": "price",
                                                "amount": "amount"}, "trades", hints, "timestamp")


class CcxtResponseTests:
    name = "ccxt static response tests JSON: {exchange, methods: {fetchOHLCV: [{input, parsedResponse}]}}"

    def matches(self, path: Path, head: bytes) -> bool:
        return _starts(head, b'{"exchange"') and any(k in head for k in (b'"methods"', b'"skipKeys"', b'"options"'))

    def read(self, path: Path, hints: FileHints) -> Iterator[tuple[str, pl.DataFrame]]:
        doc = _load(path)
        for case in doc["methods"].get("fetchOHLCV", []):
            args = case.get("input") or []
            params = args[4] if len(args) > 4 and isinstance(args[4], dict) else {}
            if params.get("price"):  # mark/index-price klines: raw.candles holds traded prices
                continue
            symbol, timeframe = args[0], args[1] if len(args) > 1 else "1m"
            case_hints = FileHints(doc["exchange"], symbol, "perp" if ":" in symbol else "spot", timeframe)
            rows = [dict(zip(("timestamp", *OHLCV), r)) for r in case["parsedResponse"]]
            yield from _records(path, rows, {"timestamp": "ts", **{c: c for c in OHLCV}}, "candles", case_hints,
                                "timestamp")


class VenueFundingHistory:
    """A venue's own funding-history REST response; the venue is told by the payload's shape."""

    def __init__(self, venue: str, name: str, probe, rows, fields: dict[str, str], symbol_field: str,
                 optional: dict[str, str] | None = None):
        self.venue, self.name, self._probe, self._rows = venue, name, probe, rows
        self._fields, self._symbol_field, self._optional = fields, symbol_field, optional

    def matches(self, path: Path, head: bytes) -> bool:
        return self._probe(re.sub(rb"\s+", b"", head))

    def read(self, path: Path, hints: FileHints) -> Iterator[tuple[str, pl.DataFrame]]:
        doc, origin = _load(path), str(path)
        rows = self._rows(doc)
        for i, r in enumerate(rows):
            if self._symbol_field not in r:
                raise SchemaError(origin, f"entry has no {self._symbol_field!r}", row=i + 1, field=self._symbol_field)
        raw_symbols = {r[self._symbol_field] for r in rows}
        symbols = {s: self._unified(s, origin) for s in raw_symbols}
        rows = [{**r, "_symbol": symbols[r[self._symbol_field]]} for r in rows]
        hints = FileHints(self.venue, market="perp")
        yield from _records(path, rows, {"_symbol": "symbol", **self._fields}, "funding", hints,
                            next(k for k, v in self._fields.items() if v == "ts"), sort=True, optional=self._optional)

    def _unified(self, raw: str, origin: str) -> str:
        if self.venue == "hyperliquid":  # perps are margined and settled in USDC: ccxt's BTC/USDC:USDC
            return f"{raw}/USDC:USDC"
        return instrument(self.venue, raw, "perp", origin).symbol


def _bybit_rows(doc):
    if doc.get("result", {}).get("category") not in ("linear", "inverse"):
        raise SchemaError("bybit funding history", "category must be linear or inverse", field="category")
    return doc["result"]["list"]


FORMATS = [
    CcxtResponseTests(), CcxtFundingHistory(), CcxtTrades(), FreqtradeTrades(), CcxtOhlcv(),
    VenueFundingHistory("okx", "okx funding-rate-history response: {code, data: [{instId, fundingRate, fundingTime}]}",
                        lambda h: h.startswith(b'{"code"') and b'"instId"' in h and b'"fundingTime"' in h,
                        lambda d: d["data"], {"fundingTime": "ts", "fundingRate": "funding_rate"}, "instId"),
    VenueFundingHistory("bybit", "bybit funding history response: {retCode, result: {category, list: [{symbol, "
                                 "fundingRate, fundingRateTimestamp}]}}",
                        lambda h: h.startswith(b'{"retCode"') and b'"fundingRateTimestamp"' in h,
                        _bybit_rows, {"fundingRateTimestamp": "ts", "fundingRate": "funding_rate"}, "symbol"),
    VenueFundingHistory("binance", "binance USDⓈ-M funding-rate response: [{symbol, fundingRate, fundingTime}]",
                        lambda h: h.startswith(b'[{"symbol"') and b'"fundingTime"' in h and b'"info"' not in h,
                        lambda d: d, {"fundingTime": "ts", "fundingRate": "funding_rate"}, "symbol",
                        optional={"markPrice": "mark_price"}),
    VenueFundingHistory("hyperliquid", "hyperliquid fundingHistory response: [{coin, fundingRate, premium, time}]",
                        lambda h: h.startswith(b'[{"coin"') and b'"fundingRate"' in h and b'"time"' in h,
                        lambda d: d, {"time": "ts", "fundingRate": "funding_rate"}, "coin"),
]
