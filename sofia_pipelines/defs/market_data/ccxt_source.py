"""Market data from live venues through ccxt's unified API (network needed; tests replay recorded payloads).

Candles (`fetch_ohlcv`, 1m, paginated), trades (`fetch_trades`, paginated), funding rates
(`fetch_funding_rate_history`) and top of book (`fetch_order_book`: one snapshot, taken now) per symbol;
latency samples by timing `fetch_time` against the public REST endpoint. ccxt's own rate limiter paces calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta, timezone

import ccxt
import polars as pl

from sofia_runtime.schemas import RAW_TABLES

DEFAULT_BASES = ("BTC", "ETH", "SOL", "XRP", "AVAX", "DOGE")
PAGE = 1000


def _ms(t: datetime) -> int:
    return int(t.replace(tzinfo=timezone.utc).timestamp() * 1000)


def _ts(ms) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).replace(tzinfo=None)


def _fetch(ex: ccxt.Exchange, method: str, symbol: str, **kwargs):
    """`ex.<method>(symbol, …)`. A response ccxt's own parser trips on (a field of the wrong type: TypeError,
    KeyError …) is a ccxt.BadResponse naming the venue, call and symbol, as the responses ccxt refuses itself are."""
    try:
        return getattr(ex, method)(symbol, **kwargs)
    except ccxt.BaseError:
        raise
    except (TypeError, KeyError, IndexError, ValueError, AttributeError) as exc:
        raise ccxt.BadResponse(f"{ex.id} {method} {symbol}: the response does not parse: "
                               f"{type(exc).__name__}: {exc}") from exc


class CcxtSource:
    def __init__(self, venues: Sequence[str], exchanges: dict[str, ccxt.Exchange] | None = None,
                 symbols: Sequence[str] | None = None, days: int = 7, clock: Callable[[], float] = time.time):
        unknown = [v for v in venues if v not in ccxt.exchanges]
        if unknown:
            raise ValueError(f"ccxt source: unknown venue(s) {unknown}")
        self.venues = list(venues)
        self.name = "ccxt:" + ",".join(self.venues)
        self._exchanges = exchanges or {}
        self._symbols = list(symbols) if symbols else None
        self._days, self._clock = days, clock

    def exchange(self, venue: str) -> ccxt.Exchange:
        if venue not in self._exchanges:
            self._exchanges[venue] = getattr(ccxt, venue)({"enableRateLimit": True})
        ex = self._exchanges[venue]
        if not ex.markets:
            ex.load_markets()
        return ex

    def symbols(self, venue: str) -> list[str]:
        markets = self.exchange(venue).markets
        if self._symbols:
            return [s for s in self._symbols if s in markets]
        wanted = {f"{b}/{q}" for b in DEFAULT_BASES for q in ("USDT", "TRY")} | {f"{b}/USDT:USDT" for b in DEFAULT_BASES}
        return sorted(s for s in markets if s in wanted)

    def provides(self) -> frozenset[str]:
        return frozenset({"candles", "books", "trades", "funding", "latency"})

    def available_days(self) -> list[date]:
        today = datetime.fromtimestamp(self._clock(), tz=timezone.utc).date()
        return [today - timedelta(days=i) for i in range(self._days, 0, -1)]

    def load(self, table: str, start: datetime, end: datetime) -> pl.DataFrame:
        rows = []
        for venue in self.venues:
            rows += getattr(self, f"_{table}")(venue, start, end)
        schema = RAW_TABLES[table]
        # rows fill the table's leading columns; the nullable ones after them (local_ts, mark_price …) stay null
        df = pl.DataFrame(rows, schema=list(schema.columns)[:len(rows[0])], orient="row") if rows else schema.empty()
        return schema.conform(df, f"{self.name} {table}").filter((pl.col("ts") >= start) & (pl.col("ts") < end))

    def _market(self, venue: str, symbol: str) -> str:
        return "perp" if self.exchange(venue).markets[symbol].get("swap") else "spot"

    def _candles(self, venue, start, end):
        ex, out = self.exchange(venue), []
        for symbol in self.symbols(venue):
            market, since = self._market(venue, symbol), _ms(start)
            while since < _ms(end):
                page = _fetch(ex, "fetch_ohlcv", symbol, timeframe="1m", since=since, limit=PAGE)
                if not page or page[-1][0] < since:
                    break
                out += [(venue, symbol, market, "1m", _ts(t), o, h, l, c, v) for t, o, h, l, c, v in page]
                since = page[-1][0] + 60_000
        return out

    def _trades(self, venue, start, end):
        ex, out = self.exchange(venue), []
        for symbol in self.symbols(venue):
            market, since = self._market(venue, symbol), _ms(start)
            while since < _ms(end):
                page = _fetch(ex, "fetch_trades", symbol, since=since, limit=PAGE)
                if not page or page[-1]["timestamp"] < since:
                    break
                out += [(venue, symbol, market, _ts(t["timestamp"]), str(t["id"]), t["side"], t["price"], t["amount"])
                        for t in page]
                since = page[-1]["timestamp"] + 1
        return out

    def _funding(self, venue, start, end):
        ex, out = self.exchange(venue), []
        if not ex.has.get("fetchFundingRateHistory"):
            return out
        for symbol in self.symbols(venue):
            if self._market(venue, symbol) != "perp":
                continue
            history = _fetch(ex, "fetch_funding_rate_history", symbol, since=_ms(start), limit=PAGE)
            out += [(venue, symbol, _ts(h["timestamp"]), h["fundingRate"]) for h in history]
        return out

    def _books(self, venue, start, end):
        ex, out = self.exchange(venue), []
        for symbol in self.symbols(venue):
            book = _fetch(ex, "fetch_order_book", symbol, limit=5)
            if not book["bids"] or not book["asks"]:
                continue
            taken = book["timestamp"] or int(self._clock() * 1000)
            (bid, bid_size), (ask, ask_size) = book["bids"][0][:2], book["asks"][0][:2]
            out.append((venue, symbol, self._market(venue, symbol), _ts(taken), bid, ask, bid_size, ask_size))
        return out

    def _latency(self, venue, start, end):
        ex = self.exchange(venue)
        taken = _ts(int(self._clock() * 1000))
        began = time.perf_counter()
        try:
            ex.fetch_time()
        except ccxt.BaseError as exc:
            return [(venue, "public_rest", taken, None, False, f"{type(exc).__name__}: {exc}"[:200])]
        return [(venue, "public_rest", taken, (time.perf_counter() - began) * 1000, True, None)]
