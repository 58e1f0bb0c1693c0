"""The live venue: base.Venue on top of ccxt.async_support, with idempotent order placement.

create_order always sends a client order id, the same one on every attempt. It retries only when the outcome is
unknown (ccxt's NetworkError family, and OperationFailed such as binance's 5xx / -1001 "internal error", which
binance documents as "execution status unknown") and, before sending again, asks the venue whether the lost attempt
reached it, so an order is never placed twice. Rejections (InvalidOrder, InsufficientFunds ...) are never retried.
ccxt's errors are mapped to base.py's. API keys live only inside the ccxt exchange object: they are scrubbed
from every message and log line this module emits. ccxt is imported lazily so paper mode starts fast.

Market data (`live_events`) comes from ccxt.pro's websocket streams where ccxt supports them for the venue (best bid
and ask, else the order book), and from polling the REST order book otherwise or while the stream is down. The
stream uses a second, keyless ccxt.pro object: public data needs no keys, so none can reach its logs.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import time
import logging
import re
import uuid
from collections.abc import Iterable, Mapping
from contextlib import aclosing
from urllib.parse import urlsplit

from sofia_runtime.exchange import base

log = logging.getLogger(__name__)

# Per exchange id. binance: only spot markets, and no sapi calls (currencies, margin pairs) on load_markets.
_DEFAULT_OPTIONS: dict[str, dict] = {
    "binance": {
        "fetchCurrencies": False,
        "fetchMargins": False,
        "fetchMarkets": {"types": ["spot"]},
        "fetchOpenOrders": {"warnWithoutSymbol": False},
        "createOrder": {"quoteOrderQty": False},  # a market order's amount stays in base units even with a price
    },
}


class AuthenticationError(base.ExchangeError):
    """The venue refused the keys (wrong key or secret, missing permission, IP not whitelisted)."""


def env_names(venue: str) -> tuple[str, str]:
    v = re.sub(r"[^A-Z0-9]", "_", venue.upper())
    return f"SOFIA_{v}_API_KEY", f"SOFIA_{v}_SECRET"


def live_preconditions(mode: str, allow_live: bool, env: Mapping[str, str], venue: str) -> list[str]:
    """Every condition still missing before live trading may start, as sentences; empty when all hold."""
    missing = []
    if mode != "live":
        missing.append(f"--mode is {mode}, not live")
    if not allow_live:
        missing.append("allow_live is false in the configuration")
    if venue:  # without a venue there are no key variables to name (SOFIA__API_KEY would mislead)
        missing += [f"{name} is not set" for name in env_names(venue) if not env.get(name)]
    return missing


def stream_method_for(exchange_id: str) -> str | None:
    """The ccxt.pro method that streams the venue's best bid and ask, or None when ccxt has no websocket support."""
    import ccxt.pro

    cls = getattr(ccxt.pro, exchange_id, None)
    has = cls().has if cls is not None else {}
    return next((m for m, key in (("watch_bids_asks", "watchBidsAsks"), ("watch_order_book", "watchOrderBook"))
                 if has.get(key)), None)


def keys_from_env(venue: str, env: Mapping[str, str]) -> tuple[str, str]:
    names = env_names(venue)
    unset = [n for n in names if not env.get(n)]
    if unset:
        raise ValueError(f"{' and '.join(unset)} not set")
    return env[names[0]], env[names[1]]


def _rebase(api, base_url: str):
    """Every url of a ccxt urls['api'] tree (a string or nested dicts) moved to base_url, paths kept."""
    if isinstance(api, str):
        return base_url.rstrip("/") + urlsplit(api).path
    return {k: _rebase(v, base_url) for k, v in api.items()}


def _rebased_urls(api: dict, base_url: str | None, ws_url: str | None) -> dict:
    """ccxt's urls['api'] with REST urls moved to base_url and websocket urls (the 'ws' tree) to ws_url."""
    rest = {k: v for k, v in api.items() if k != "ws"}
    out = _rebase(rest, base_url) if base_url is not None else rest
    if "ws" in api:
        out["ws"] = _rebase(api["ws"], ws_url) if ws_url is not None else api["ws"]
    return out


class _RedactingLogger:
    """Stands in for ccxt's logger: ccxt logs request headers, which carry the API key, at DEBUG."""

    def __init__(self, logger: logging.Logger, scrub):
        self._logger, self._scrub = logger, scrub

    def _log(self, level: int, msg, *args, **_):
        if self._logger.isEnabledFor(level):
            self._logger.log(level, "%s", self._scrub(str(msg) % args if args else str(msg)))

    def debug(self, msg, *args, **kw):
        self._log(logging.DEBUG, msg, *args)

    def info(self, msg, *args, **kw):
        self._log(logging.INFO, msg, *args)

    def warning(self, msg, *args, **kw):
        self._log(logging.WARNING, msg, *args)

    def error(self, msg, *args, **kw):
        self._log(logging.ERROR, msg, *args)


class LiveVenue:
    def __init__(self, name: str, api_key: str, secret: str, urls: dict | None = None, retries: int = 3,
                 backoff_s: float = 0.2, options: dict | None = None, base_url: str | None = None,
                 timeout_s: float = 10.0, rate_limit_ms: float | None = None, ws_url: str | None = None):
        import ccxt.async_support as ccxt_async

        self._ccxt = ccxt_async
        self.name = name
        self.retries, self.backoff_s = retries, backoff_s
        self._options = {**_DEFAULT_OPTIONS.get(name, {}), **(options or {})}
        self._ex = getattr(ccxt_async, name)({
            "apiKey": api_key, "secret": secret, "enableRateLimit": True, "timeout": int(timeout_s * 1000),
            "options": self._options,
            "logger": _RedactingLogger(logging.getLogger(f"{__name__}.ccxt"), self._scrub),
            # ms per unit of request weight; None keeps ccxt's figure for the venue
            **({"rateLimit": rate_limit_ms} if rate_limit_ms is not None else {}),
        })
        self._base_url, self._ws_url, self._stream = base_url, ws_url, None
        api = _rebased_urls(self._ex.urls["api"], base_url, None)
        if urls:
            api = {**api, **urls}
        self._ex.urls = {**self._ex.urls, "api": api}
        self._own_order_ids: set[str] = set()
        self._symbols: set[str] = set()
        self._seen_trades: set[str] = set()
        self._since: dict[str, int] = {}
        self._new_trades: list[dict] = []

    @classmethod
    def for_local_server(cls, name: str, base_url: str, key: str, secret: str, **kw) -> "LiveVenue":
        return cls(name, key, secret, base_url=base_url, **kw)

    def __repr__(self) -> str:
        return f"LiveVenue(name={self.name!r}, retries={self.retries}, backoff_s={self.backoff_s})"

    @staticmethod
    def new_client_order_id() -> str:
        return "sofia-" + uuid.uuid4().hex[:26]  # binance allows 36 chars of [.A-Za-z:/0-9_-]

    # ---- secrets and errors
    def _scrub(self, text: str) -> str:
        ex = getattr(self, "_ex", None)
        for secret in (getattr(ex, "apiKey", None), getattr(ex, "secret", None)):
            if secret and len(secret) >= 4:
                text = text.replace(secret, "***")
        return text

    def _map_error(self, e: Exception, order: bool = False) -> base.ExchangeError:
        c = self._ccxt
        msg = self._scrub(f"{type(e).__name__}: {e}")
        table = [(c.RequestTimeout, base.RequestTimeout), ((c.DDoSProtection, c.RateLimitExceeded), base.RateLimitExceeded),
                 (c.ExchangeNotAvailable, base.ExchangeNotAvailable), (c.OperationFailed, base.NetworkError),
                 (c.OrderNotFound, base.OrderNotFound), (c.InsufficientFunds, base.InsufficientFunds),
                 (c.InvalidOrder, base.InvalidOrder), (c.AuthenticationError, AuthenticationError)]
        if order:  # binance answers filter failures (-1013 NOTIONAL, -1111 precision...) as bad requests
            table.append(((c.BadRequest, c.ArgumentsRequired), base.InvalidOrder))
        return next((dst(msg) for src, dst in table if isinstance(e, src)), base.ExchangeError(msg))

    async def _call(self, method: str, *args, order: bool = False):
        try:
            return await getattr(self._ex, method)(*args)
        except self._ccxt.BaseError as e:
            raise self._map_error(e, order) from None  # the ccxt chain could carry unscrubbed text

    def _remember(self, order: dict) -> dict:
        self._own_order_ids.add(str(order["id"]))
        self._symbols.add(order["symbol"])
        return order

    # ---- the Venue protocol
    async def create_order(self, symbol: str, type: str, side: str, amount: float, price: float | None = None,
                           params: dict | None = None) -> dict:
        params = dict(params or {})
        cid = params.pop("clientOrderId", None) or params.pop("newClientOrderId", None) or self.new_client_order_id()
        params["clientOrderId"] = cid
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
                try:
                    found = await self.find_order(cid, symbol)
                except base.NetworkError as e:
                    last = e  # still can't tell whether the venue has it: never send blind
                    continue
                if found is not None:
                    log.info("create_order %s: the venue already has it after a network error", cid)
                    return found
            try:
                return self._remember(await self._ex.create_order(symbol, type, side, amount, price, dict(params)))
            except self._ccxt.OperationFailed as e:  # NetworkError and the venue's "status unknown" answers
                last = e
                log.warning("create_order %s attempt %d/%d: %s", cid, attempt + 1, self.retries + 1, self._scrub(repr(e)))
            except self._ccxt.InvalidOrder as e:
                # an earlier attempt may land after find_order looked: the venue then refuses the same id again
                if attempt and "Duplicate order" in str(e) and (found := await self.find_order(cid, symbol)):
                    return found
                raise self._map_error(e, order=True) from None
            except self._ccxt.BaseError as e:
                raise self._map_error(e, order=True) from None
        raise base.NetworkError(self._scrub(f"create_order {cid} on {symbol}: no answer after {self.retries + 1} "
                                            f"attempts and its outcome is unknown: {last!r}"))

    async def cancel_order(self, id: str, symbol: str, params: dict | None = None) -> dict:
        order = await self._call("cancel_order", id, symbol, dict(params or {}))
        # binance names the cancel request clientOrderId and the order's own one origClientOrderId
        orig = (order.get("info") or {}).get("origClientOrderId")
        return {**order, "clientOrderId": orig} if orig else order

    async def fetch_order(self, id: str | None, symbol: str, params: dict | None = None) -> dict:
        return await self._call("fetch_order", id, symbol, dict(params or {}))

    async def find_order(self, client_order_id: str, symbol: str) -> dict | None:
        key = "origClientOrderId" if self._ex.id.startswith("binance") else "clientOrderId"
        try:
            return self._remember(await self._call("fetch_order", None, symbol, {key: client_order_id}))
        except base.OrderNotFound:
            return None

    async def fetch_open_orders(self, symbol: str | None = None) -> list[dict]:
        return await self._call("fetch_open_orders", symbol)

    async def fetch_balance(self) -> dict:
        return await self._call("fetch_balance")

    async def fetch_my_trades(self, symbol: str | None = None, since: int | None = None) -> list[dict]:
        if symbol is not None:
            return await self._call("fetch_my_trades", symbol, since)
        # binance wants a symbol: ask for every symbol this adapter has traded
        return [t for s in sorted(self._symbols) for t in await self._call("fetch_my_trades", s, since)]

    async def poll_trades(self, symbols: Iterable[str] | None = None) -> int:
        """Fetch recent trades and keep the new ones of this adapter's orders for drain_trades; returns how many."""
        n = 0
        for symbol in sorted(symbols or self._symbols):
            for t in await self._call("fetch_my_trades", symbol, self._since.get(symbol)):
                if t.get("timestamp"):
                    self._since[symbol] = max(self._since.get(symbol, 0), t["timestamp"])
                tid = str(t["id"])
                if tid in self._seen_trades or str(t.get("order")) not in self._own_order_ids:
                    continue
                self._seen_trades.add(tid)
                self._new_trades.append(t)
                n += 1
        return n

    def drain_trades(self) -> list[dict]:
        out, self._new_trades = self._new_trades, []
        return out

    async def close(self) -> None:
        if self._stream is not None:
            await self._stream.close()
        await self._ex.close()

    async def fetch_order_book(self, symbol: str, limit: int = 5) -> dict:
        return await self._call("fetch_order_book", symbol, limit)

    # ---- websocket market data
    @functools.cached_property
    def _stream_method(self) -> str | None:
        if self._base_url is not None and self._ws_url is None:
            return None
        return stream_method_for(self._ex.id)

    def stream_method(self) -> str | None:
        """How this venue's books stream (stream_method_for), or None. A venue whose REST url was moved
        elsewhere (a test server, a proxy) streams only with its own websocket url: never the real venue's."""
        return self._stream_method

    def _streamer(self):
        if self._stream is None:
            import ccxt.pro

            ex = getattr(ccxt.pro, self._ex.id)({"enableRateLimit": True, "timeout": self._ex.timeout,
                                                  "options": copy.deepcopy(self._options)})
            ex.urls = {**ex.urls, "api": _rebased_urls(ex.urls["api"], self._base_url, self._ws_url)}
            if self._ex.markets:  # the REST object has loaded them: no second exchangeInfo request
                ex.set_markets(self._ex.markets, self._ex.currencies)
            self._stream = ex
        return self._stream

    async def watch_best(self, symbol: str) -> dict | None:
        """The symbol's top of book once the venue's websocket stream has a new one, as {symbol, timestamp, bid, ask,
        bid_size, ask_size} (None while its book is empty). Connection failures raise base.NetworkError."""
        ex, method = self._streamer(), self.stream_method()
        try:
            if method == "watch_bids_asks":
                await ex.watch_bids_asks([symbol])
                # the latest: messages that arrived after the one that woke us are in ccxt's cache
                t = ex.bidsasks[symbol]
                return {"symbol": symbol, "timestamp": t.get("timestamp"), "bid": t.get("bid"), "ask": t.get("ask"),
                        "bid_size": t.get("bidVolume"), "ask_size": t.get("askVolume")}
            ob = await ex.watch_order_book(symbol)
            if not ob["bids"] or not ob["asks"]:
                return None
            return {"symbol": symbol, "timestamp": ob.get("timestamp"), "bid": ob["bids"][0][0],
                    "ask": ob["asks"][0][0], "bid_size": ob["bids"][0][1], "ask_size": ob["asks"][0][1]}
        except self._ccxt.BaseError as e:
            raise self._map_error(e) from None


STREAM_ERROR = "websocket stream: "


async def live_events(venue: LiveVenue, symbols: list[str], books, engine, market_data: str = "auto",
                      trades_every_s: float = 1.0, stream_retry_s: float = 30.0):
    """Market data for live mode, as (BOOK, book) events; this runtime's trades are polled every `trades_every_s`.

    market_data "websocket" streams the venue's best bid and ask through ccxt.pro, "polling" asks for the REST
    order books in turn (ccxt paces the requests to the venue's rate limit), and "auto" streams where ccxt supports
    it for the venue and polls while the stream is down, trying it again every `stream_retry_s`. A failing venue is
    reported on /api/health and retried with backoff; the engine's stale-data guard blocks orders meanwhile."""
    method = venue.stream_method() if market_data != "polling" else None
    retry_stream_at = 0.0
    while not engine.stopping.is_set():
        if method is not None and time.monotonic() >= retry_stream_at:
            engine.market_data, streamed = "websocket", 0
            try:
                async with aclosing(_streamed(venue, symbols, books, engine, trades_every_s)) as events:
                    async for event in events:
                        streamed += 1
                        yield event
            except base.NetworkError as exc:
                engine._error("market_data", f"{venue.name} {STREAM_ERROR}{exc}")
                if streamed:  # it was working: reconnect at once (ccxt.pro connects again on the next watch)
                    continue
                if market_data == "websocket":
                    engine.venue_error = f"{STREAM_ERROR}{exc}"
                    await asyncio.sleep(min(stream_retry_s, 2.0))
                    continue
                retry_stream_at = time.monotonic() + stream_retry_s
        engine.market_data = "polling"
        until = retry_stream_at if method is not None else None
        async with aclosing(_polled(venue, symbols, books, engine, trades_every_s, until)) as events:
            async for event in events:
                yield event


async def _polled(venue: LiveVenue, symbols: list[str], books, engine, trades_every_s: float, until: float | None):
    from sofia_runtime.marketdata import BOOK

    last_trades, backoff = 0.0, 0.5
    while not engine.stopping.is_set() and (until is None or time.monotonic() < until):
        try:
            for symbol in symbols:
                ob = await venue.fetch_order_book(symbol)
                if not ob["bids"] or not ob["asks"]:
                    continue
                book = books.get(venue.name, symbol)
                book.update(ob.get("timestamp") or int(time.time() * 1000), ob["bids"][0][0], ob["asks"][0][0],
                            ob["bids"][0][1], ob["asks"][0][1])
                yield BOOK, book
            if time.monotonic() - last_trades >= trades_every_s:
                await venue.poll_trades(symbols)
                last_trades = time.monotonic()
            engine.venue_error, backoff = None, 0.5
        except base.ExchangeError as exc:
            engine.venue_error = str(exc)
            engine._error("venue", str(exc))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)  # short: trading resumes soon after the venue does


def _clear_venue_error(engine, stream: bool) -> None:
    """Clear the venue error the stream (stream=True) or a REST call (False) has just proven outdated."""
    if engine.venue_error and engine.venue_error.startswith(STREAM_ERROR) == stream:
        engine.venue_error = None


async def _streamed(venue: LiveVenue, symbols: list[str], books, engine, trades_every_s: float):
    """Book events from the websocket stream until it fails (base.NetworkError). One watch per symbol: a watch over
    several symbols would wake on whichever comes first and miss the others. A healthy watch is never cancelled,
    only awaited with a timeout, so the trades poll keeps its pace."""
    from sofia_runtime.marketdata import BOOK

    watches: dict[asyncio.Future, str] = {}
    last_trades = 0.0
    try:
        while not engine.stopping.is_set():
            for symbol in set(symbols) - set(watches.values()):
                watches[asyncio.ensure_future(venue.watch_best(symbol))] = symbol
            wait = max(0.0, last_trades + trades_every_s - time.monotonic())
            done, _ = await asyncio.wait(watches, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            for watch in sorted(done, key=watches.get):
                del watches[watch]
                top = watch.result()  # raises the stream's failure
                if top is None or not top["bid"] or not top["ask"]:
                    continue
                book = books.get(venue.name, top["symbol"])
                # binance's spot best-bid-ask messages carry no time: they are as fresh as their arrival
                book.update(top["timestamp"] or int(time.time() * 1000), top["bid"], top["ask"],
                            top["bid_size"] or 0.0, top["ask_size"] or 0.0)
                _clear_venue_error(engine, stream=True)
                yield BOOK, book
            if time.monotonic() - last_trades >= trades_every_s:
                try:
                    await venue.poll_trades(symbols)
                    _clear_venue_error(engine, stream=False)
                except base.ExchangeError as exc:  # REST trouble: the stream's books stay good
                    engine.venue_error = str(exc)
                    engine._error("venue", str(exc))
                last_trades = time.monotonic()
    finally:
        for watch in watches:
            watch.cancel()
