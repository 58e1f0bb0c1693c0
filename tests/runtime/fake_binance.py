"""A small Binance spot REST v3 server on 127.0.0.1 for testing the live adapter offline.

It speaks just enough for ccxt's binance: exchangeInfo/time/bookTicker/depth, and signed order/openOrders/
account/myTrades calls whose HMAC-SHA256 signatures it verifies; `start_stream()` adds the websocket market
stream (SUBSCRIBE to `<symbol>@bookTicker`, then a best bid/ask message per symbol every `stream_interval_s`),
which ccxt.pro's watch_bids_asks reads. Orders and trades are kept server-side: a
market order (or a limit order that crosses) fills at once against a fixed book, other limit orders rest until
`fill_resting`. Faults for tests: `drop_next` (optionally after processing: the order exists but the client gets
no response) and `fail_next` (an HTTP error such as 429/503 before processing).

    with running_fake_binance(stream=True) as server: ...      # in-process, background threads
    python tests/runtime/fake_binance.py --port 8765 [--ws-port 8766] [--key K --secret S]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import itertools
import json
import socket
import threading
import time
from contextlib import contextmanager
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

D = Decimal
KEY, SECRET = "test-key", "test-secret"
FEE_RATE = D("0.001")
TICK, STEP, MIN_QTY, MAX_QTY, MIN_NOTIONAL = D("0.01"), D("0.00001"), D("0.00001"), D("9000"), D("5")
# fixed book: (bids, asks) best first
BOOKS = {
    "BTCUSDT": ([(D("60000.00"), D("2")), (D("59999.00"), D("5"))], [(D("60001.00"), D("2")), (D("60002.00"), D("5"))]),
    "ETHUSDT": ([(D("3000.00"), D("20")), (D("2999.50"), D("50"))], [(D("3000.50"), D("20")), (D("3001.00"), D("50"))]),
}
ASSETS = {"BTCUSDT": ("BTC", "USDT"), "ETHUSDT": ("ETH", "USDT")}
START_BALANCES = {"BTC": D("1"), "ETH": D("10"), "USDT": D("100000")}


class ApiError(Exception):
    def __init__(self, status: int, code: int, msg: str):
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def _s(d: Decimal) -> str:
    return f"{d:.8f}"


def _ms() -> int:
    return int(time.time() * 1000)


def _symbol_info(symbol: str) -> dict:
    base, quote = ASSETS[symbol]
    return {
        "symbol": symbol, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8, "quoteAsset": quote,
        "quotePrecision": 8, "quoteAssetPrecision": 8, "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True, "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True, "cancelReplaceAllowed": True, "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": _s(TICK), "maxPrice": "1000000.00000000", "tickSize": _s(TICK)},
            {"filterType": "LOT_SIZE", "minQty": _s(MIN_QTY), "maxQty": _s(MAX_QTY), "stepSize": _s(STEP)},
            {"filterType": "NOTIONAL", "minNotional": _s(MIN_NOTIONAL), "applyMinToMarket": True,
             "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
            {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": "100.00000000", "stepSize": "0.00000000"},
        ],
        "permissions": [], "permissionSets": [["SPOT"]], "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


class FakeBinance:
    """The exchange's state and request handling; `start()` serves it on 127.0.0.1 in a background thread."""

    def __init__(self, key: str = KEY, secret: str = SECRET):
        self.key, self.secret = key, secret
        self.lock = threading.RLock()
        self.orders: dict[int, dict] = {}
        self.trades: list[dict] = []
        self.balances = {a: {"free": v, "locked": D(0)} for a, v in START_BALANCES.items()}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request received
        self.orders_created = 0
        self._faults: list[dict] = []
        self._ids = itertools.count(1001)
        self._trade_ids = itertools.count(5001)
        self.httpd: ThreadingHTTPServer | None = None
        self.books = {s: (list(bids), list(asks)) for s, (bids, asks) in BOOKS.items()}
        # the websocket market stream
        self.stream_interval_s = 0.05
        self.stream_refused = False  # answer websocket upgrades with 503
        self.stream_connections = 0
        self.stream_subscriptions: list[str] = []
        self.stream_messages = 0
        self._stream_loop: asyncio.AbstractEventLoop | None = None
        self._stream_sockets: set = set()
        self._stream_port = 0

    # ---- test helpers
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def drop_next(self, path: str, method: str = "POST", after_processing: bool = True, times: int = 1) -> None:
        """Close the connection without a response on the next `times` requests to path (after handling them
        when after_processing, so the state changes although the client sees a network error)."""
        with self.lock:
            self._faults.append({"path": path, "method": method, "drop": True, "after": after_processing, "times": times})

    def fail_next(self, path: str, method: str = "POST", status: int = 503, code: int = -1001,
                  msg: str = "Internal error; unable to process your request. Please try again.", times: int = 1) -> None:
        """Answer the next `times` requests to path with this error without handling them."""
        with self.lock:
            self._faults.append({"path": path, "method": method, "drop": False, "status": status, "code": code,
                                 "msg": msg, "times": times})

    def set_top(self, symbol: str, bid: Decimal | str, ask: Decimal | str) -> None:
        """Move the book: best bid and ask to these prices, the levels behind them one tick further each."""
        with self.lock:
            (_, bq), (_, aq) = self.books[symbol][0][0], self.books[symbol][1][0]
            bid, ask = D(bid), D(ask)
            self.books[symbol] = ([(bid, bq), (bid - TICK, bq * 2)], [(ask, aq), (ask + TICK, aq * 2)])

    def drop_streams(self) -> None:
        """Close every websocket connection, as a venue does on maintenance."""
        if self._stream_loop is not None:
            asyncio.run_coroutine_threadsafe(self._close_streams(), self._stream_loop).result(5)

    def count(self, method: str, path: str) -> int:
        with self.lock:
            return self.requests.count((method, path))

    def orders_with_client_id(self, client_order_id: str) -> list[dict]:
        with self.lock:
            return [o for o in self.orders.values() if o["clientOrderId"] == client_order_id]

    def fill_resting(self, client_order_id: str, qty: Decimal | str | None = None) -> dict:
        """A resting limit order is hit by someone else's order (a maker fill) at its own price."""
        with self.lock:
            (o,) = [o for o in self.orders_with_client_id(client_order_id) if o["status"] in ("NEW", "PARTIALLY_FILLED")]
            left = o["origQty"] - o["executedQty"]
            return self._fill(o, o["price"], min(D(qty), left) if qty is not None else left, maker=True)

    # ---- order book logic (call with the lock held)
    def _take(self, asset: str, amount: Decimal, lock: bool) -> None:
        b = self.balances.setdefault(asset, {"free": D(0), "locked": D(0)})
        if b["free"] < amount:
            raise ApiError(400, -2010, "Account has insufficient balance for requested action.")
        b["free"] -= amount
        if lock:
            b["locked"] += amount

    def _fill(self, o: dict, price: Decimal, qty: Decimal, maker: bool) -> dict:
        base, quote = ASSETS[o["symbol"]]
        buy = o["side"] == "BUY"
        quote_qty = price * qty
        fee_asset, fee = (base, qty * FEE_RATE) if buy else (quote, quote_qty * FEE_RATE)
        bal = self.balances
        if o["type"] != "MARKET":  # release what the resting order locked
            bal[quote if buy else base]["locked"] -= o["price"] * qty if buy else qty
        else:
            self._take(quote if buy else base, quote_qty if buy else qty, lock=False)
        if buy and o["type"] != "MARKET":
            bal[quote]["free"] += (o["price"] - price) * qty  # locked at the limit, paid at the fill price
        gain_asset, gain = (base, qty) if buy else (quote, quote_qty)
        bal.setdefault(gain_asset, {"free": D(0), "locked": D(0)})["free"] += gain - fee
        o["executedQty"] += qty
        o["cummulativeQuoteQty"] += quote_qty
        o["status"] = "FILLED" if o["executedQty"] == o["origQty"] else "PARTIALLY_FILLED"
        o["updateTime"] = _ms()
        t = {"symbol": o["symbol"], "id": next(self._trade_ids), "orderId": o["orderId"], "orderListId": -1,
             "price": price, "qty": qty, "quoteQty": quote_qty, "commission": fee, "commissionAsset": fee_asset,
             "time": o["updateTime"], "isBuyer": buy, "isMaker": maker, "isBestMatch": True}
        self.trades.append(t)
        return t

    def _new_order(self, p: dict) -> dict:
        for name in ("symbol", "side", "type"):
            if not p.get(name):
                raise ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
        symbol, side, type_ = p["symbol"], p["side"], p["type"]
        if symbol not in self.books:
            raise ApiError(400, -1121, "Invalid symbol.")
        if type_ not in ("LIMIT", "LIMIT_MAKER", "MARKET") or side not in ("BUY", "SELL"):
            raise ApiError(400, -1116, "Invalid orderType.")
        try:
            qty = D(p["quantity"])
            price = D(p["price"]) if type_ != "MARKET" else None
        except Exception:
            raise ApiError(400, -1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.")
        if qty < MIN_QTY or qty > MAX_QTY or qty % STEP:
            raise ApiError(400, -1013, "Filter failure: LOT_SIZE")
        if price is not None and (price <= 0 or price % TICK):
            raise ApiError(400, -1013, "Filter failure: PRICE_FILTER")
        bids, asks = self.books[symbol]
        best = asks[0][0] if side == "BUY" else bids[0][0]
        if (price or best) * qty < MIN_NOTIONAL:
            raise ApiError(400, -1013, "Filter failure: NOTIONAL")
        cid = p.get("newClientOrderId") or f"fake-{next(self._ids)}"
        if any(o["clientOrderId"] == cid and o["status"] in ("NEW", "PARTIALLY_FILLED") for o in self.orders.values()):
            raise ApiError(400, -2010, "Duplicate order sent.")
        crosses = price is None or (price >= best if side == "BUY" else price <= best)
        if type_ == "LIMIT_MAKER" and crosses:
            raise ApiError(400, -2010, "Order would immediately match and take.")
        base, quote = ASSETS[symbol]
        if type_ != "MARKET":
            self._take(quote if side == "BUY" else base, price * qty if side == "BUY" else qty, lock=True)
        now = _ms()
        o = {"symbol": symbol, "orderId": next(self._ids), "orderListId": -1, "clientOrderId": cid,
             "price": price or D(0), "origQty": qty, "executedQty": D(0), "cummulativeQuoteQty": D(0), "status": "NEW",
             "timeInForce": p.get("timeInForce", "GTC") if type_ == "LIMIT" else "GTC", "type": type_, "side": side,
             "stopPrice": D(0), "icebergQty": D(0), "time": now, "updateTime": now, "isWorking": True,
             "workingTime": now, "origQuoteOrderQty": D(0), "selfTradePreventionMode": "EXPIRE_MAKER"}
        fills = [self._fill(o, best, qty, maker=False)] if crosses else []
        self.orders[o["orderId"]] = o
        self.orders_created += 1
        out = self._order_json(o) | {"transactTime": now}
        out["fills"] = [{"price": _s(t["price"]), "qty": _s(t["qty"]), "commission": _s(t["commission"]),
                         "commissionAsset": t["commissionAsset"], "tradeId": t["id"]} for t in fills]
        return out

    def _find(self, p: dict) -> dict:
        o = None
        if p.get("orderId"):
            o = self.orders.get(int(p["orderId"]))
        elif p.get("origClientOrderId"):
            # the newest order with this client id, as binance answers
            o = next((o for o in reversed(self.orders.values()) if o["clientOrderId"] == p["origClientOrderId"]), None)
        if o is None or o["symbol"] != p.get("symbol"):
            raise ApiError(400, -2013, "Order does not exist.")
        return o

    @staticmethod
    def _order_json(o: dict) -> dict:
        return {k: _s(v) if isinstance(v, Decimal) else v for k, v in o.items()}

    @staticmethod
    def _trade_json(t: dict) -> dict:
        return {k: _s(v) if isinstance(v, Decimal) else v for k, v in t.items()}

    # ---- routing
    def _auth(self, headers, query: str, body: str) -> dict:
        if headers.get("X-MBX-APIKEY") != self.key:
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        payload, _, signature = (query + body).rpartition("&signature=")
        expected = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not signature or not hmac.compare_digest(signature, expected):
            raise ApiError(401, -1022, "Signature for this request is not valid.")
        p = dict(parse_qsl(payload, keep_blank_values=True))
        ts = int(p.get("timestamp", 0))
        if abs(_ms() - ts) > int(p.get("recvWindow", 5000)):
            raise ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        return p

    def handle(self, method: str, path: str, query: str, body: str, headers) -> tuple[int, object]:
        p = dict(parse_qsl(query, keep_blank_values=True))
        public = {
            "/api/v3/ping": lambda: {},
            "/api/v3/time": lambda: {"serverTime": _ms()},
            "/api/v3/exchangeInfo": lambda: {"timezone": "UTC", "serverTime": _ms(), "rateLimits": [],
                                             "exchangeFilters": [], "symbols": [_symbol_info(s) for s in self.books]},
            "/api/v3/ticker/bookTicker": lambda: self._book_ticker(p.get("symbol")),
            "/api/v3/depth": lambda: self._depth(p.get("symbol")),
        }
        if method == "GET" and path in public:
            return 200, public[path]()
        signed = {("POST", "/api/v3/order"): self._new_order, ("DELETE", "/api/v3/order"): self._cancel,
                  ("GET", "/api/v3/order"): lambda q: self._order_json(self._find(q)),
                  ("GET", "/api/v3/openOrders"): self._open_orders, ("GET", "/api/v3/account"): self._account,
                  ("GET", "/api/v3/myTrades"): self._my_trades}
        if (method, path) not in signed:
            return 404, {"code": -1000, "msg": f"fake_binance does not serve {method} {path}"}
        return 200, signed[(method, path)](self._auth(headers, query, body))

    def _book_ticker(self, symbol: str | None):
        def one(s):
            (bid, bq), (ask, aq) = self.books[s][0][0], self.books[s][1][0]
            return {"symbol": s, "bidPrice": _s(bid), "bidQty": _s(bq), "askPrice": _s(ask), "askQty": _s(aq)}
        if symbol is not None and symbol not in self.books:
            raise ApiError(400, -1121, "Invalid symbol.")
        return one(symbol) if symbol else [one(s) for s in self.books]

    def _depth(self, symbol: str | None):
        if symbol not in self.books:
            raise ApiError(400, -1121, "Invalid symbol.")
        bids, asks = self.books[symbol]
        return {"lastUpdateId": 1, "bids": [[_s(p), _s(q)] for p, q in bids], "asks": [[_s(p), _s(q)] for p, q in asks]}

    def _cancel(self, p: dict) -> dict:
        try:
            o = self._find(p)
        except ApiError:
            raise ApiError(400, -2011, "Unknown order sent.")
        if o["status"] not in ("NEW", "PARTIALLY_FILLED"):
            raise ApiError(400, -2011, "Unknown order sent.")
        base, quote = ASSETS[o["symbol"]]
        left = o["origQty"] - o["executedQty"]
        asset, amount = (quote, o["price"] * left) if o["side"] == "BUY" else (base, left)
        self.balances[asset]["locked"] -= amount
        self.balances[asset]["free"] += amount
        o["status"], o["updateTime"], o["isWorking"] = "CANCELED", _ms(), False
        out = self._order_json(o)
        # like binance: clientOrderId names the cancel request, origClientOrderId the order
        return out | {"origClientOrderId": o["clientOrderId"], "transactTime": o["updateTime"],
                      "clientOrderId": p.get("newClientOrderId", f"cancel-{o['orderId']}")}

    def _open_orders(self, p: dict) -> list:
        return [self._order_json(o) for o in self.orders.values()
                if o["status"] in ("NEW", "PARTIALLY_FILLED") and p.get("symbol") in (None, o["symbol"])]

    def _account(self, p: dict) -> dict:
        return {"makerCommission": 10, "takerCommission": 10, "buyerCommission": 0, "sellerCommission": 0,
                "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
                "requireSelfTradePrevention": False, "preventSor": False, "updateTime": _ms(), "accountType": "SPOT",
                "balances": [{"asset": a, "free": _s(b["free"]), "locked": _s(b["locked"])}
                             for a, b in self.balances.items()],
                "permissions": ["SPOT"], "uid": 1}

    def _my_trades(self, p: dict) -> list:
        if not p.get("symbol"):
            raise ApiError(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        start, end = int(p.get("startTime", 0)), int(p.get("endTime", 2**62))
        out = [t for t in self.trades if t["symbol"] == p["symbol"] and start <= t["time"] <= end
               and int(p.get("fromId", 0)) <= t["id"] and p.get("orderId") in (None, str(t["orderId"]))]
        return [self._trade_json(t) for t in out[: int(p.get("limit", 500))]]

    def _fault(self, method: str, path: str) -> dict | None:
        for f in self._faults:
            if f["path"] == path and f["method"] == method:
                f["times"] -= 1
                if f["times"] <= 0:
                    self._faults.remove(f)
                return f
        return None

    # ---- serving
    def start(self, port: int = 0) -> "FakeBinance":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _serve(self):
                url = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                with server.lock:
                    server.requests.append((self.command, url.path))
                    fault = server._fault(self.command, url.path)
                    if fault and not fault["drop"]:
                        status, payload = fault["status"], {"code": fault["code"], "msg": fault["msg"]}
                    elif fault and not fault["after"]:
                        status, payload = None, None
                    else:
                        try:
                            status, payload = server.handle(self.command, url.path, url.query, body, self.headers)
                        except ApiError as e:
                            status, payload = e.status, {"code": e.code, "msg": e.msg}
                if fault and fault["drop"]:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json;charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = _serve

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), name="fake-binance", daemon=True).start()
        return self

    @property
    def stream_url(self) -> str:
        return f"ws://127.0.0.1:{self._stream_port}"  # a base url: ccxt keeps its paths (/ws/...)

    def start_stream(self, port: int = 0) -> "FakeBinance":
        """Serve the websocket market stream on 127.0.0.1 (aiohttp, its own thread and event loop)."""
        from aiohttp import web

        ready = threading.Event()

        async def serve() -> None:
            app = web.Application()
            app.router.add_get("/ws", self._stream_handler)
            app.router.add_get("/ws/{stream}", self._stream_handler)
            self._stream_runner = web.AppRunner(app)
            await self._stream_runner.setup()
            site = web.TCPSite(self._stream_runner, "127.0.0.1", port)
            await site.start()
            self._stream_port = site._server.sockets[0].getsockname()[1]
            ready.set()

        def run() -> None:
            self._stream_loop = asyncio.new_event_loop()
            self._stream_loop.run_until_complete(serve())
            self._stream_loop.run_forever()

        threading.Thread(target=run, name="fake-binance-stream", daemon=True).start()
        ready.wait(10)
        return self

    async def _stream_handler(self, request):
        from aiohttp import WSMsgType, web

        if self.stream_refused:
            return web.Response(status=503, text="stream unavailable")
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        self.stream_connections += 1
        self._stream_sockets.add(ws)
        symbols: set[str] = set()

        async def push() -> None:
            update_id = itertools.count(1)
            while not ws.closed:
                for symbol in sorted(symbols):
                    with self.lock:
                        (bid, bq), (ask, aq) = self.books[symbol][0][0], self.books[symbol][1][0]
                    await ws.send_str(json.dumps({"u": next(update_id), "s": symbol, "b": _s(bid), "B": _s(bq),
                                                  "a": _s(ask), "A": _s(aq)}))
                    self.stream_messages += 1
                await asyncio.sleep(self.stream_interval_s)

        pusher = asyncio.create_task(push())
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                request_ = json.loads(msg.data)
                if request_.get("method") == "SUBSCRIBE":
                    for stream in request_.get("params", []):
                        name, _, channel = stream.partition("@")
                        if channel == "bookTicker" and name.upper() in self.books:
                            symbols.add(name.upper())
                            self.stream_subscriptions.append(stream)
                await ws.send_str(json.dumps({"result": None, "id": request_.get("id")}))
        finally:
            pusher.cancel()
            self._stream_sockets.discard(ws)
        return ws

    async def _close_streams(self) -> None:
        for ws in list(self._stream_sockets):
            await ws.close()

    def stop(self) -> None:
        if self._stream_loop is not None:
            loop, self._stream_loop = self._stream_loop, None
            asyncio.run_coroutine_threadsafe(self._close_streams(), loop).result(5)
            asyncio.run_coroutine_threadsafe(self._stream_runner.cleanup(), loop).result(5)
            loop.call_soon_threadsafe(loop.stop)
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


@contextmanager
def running_fake_binance(key: str = KEY, secret: str = SECRET, port: int = 0, stream: bool = False):
    server = FakeBinance(key, secret).start(port)
    if stream:
        server.start_stream()
    try:
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="A fake Binance spot REST API on 127.0.0.1 for offline tests")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--key", default=KEY)
    ap.add_argument("--secret", default=SECRET)
    ap.add_argument("--ws-port", type=int, default=None, help="also serve the websocket market stream on this port")
    args = ap.parse_args(argv)
    server = FakeBinance(args.key, args.secret).start(args.port)
    print(f"fake binance listening on {server.base_url}", flush=True)
    if args.ws_port is not None:
        server.start_stream(args.ws_port)
        print(f"fake binance market stream on {server.stream_url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
