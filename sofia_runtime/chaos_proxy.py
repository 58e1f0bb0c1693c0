"""A TCP proxy on 127.0.0.1 in front of a venue's REST server that injects network faults, for the live-mode
chaos drill (`sofia-runtime chaos --mode live --venue-url URL`) and for tests.

It relays bytes both ways and understands just enough of HTTP/1.1 to see where a request starts (a client
sends the next request only after the previous response began, which is how aiohttp and so ccxt use a
keep-alive connection). Faults, changed at any time with `set_faults`:

- latency: every request waits `latency_ms` ± `jitter_ms` before it is forwarded;
- drop after send: a request (matching `match`, a regex on its request line such as "POST /api/v3/order
  HTTP/1.1") is forwarded, the venue's response is read, and then both connections are closed without the
  client seeing a byte of it. The venue did the work; the client cannot know: the case that duplicates an
  order when a client re-sends blindly;
- error status: a request (matching `match`) is answered by the proxy with `error_status` (503, 429 ...) and
  never reaches the venue, with probability `error_rate`; the connection is then closed;
- refuse: the listening socket is closed (new connections get ECONNREFUSED) and open connections are reset,
  until refusing is switched off, when the proxy listens on the same port again.

Plain TCP: a TLS venue URL cannot be proxied this way (the certificate names the venue, not 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, replace
from urllib.parse import urlsplit


@dataclass(frozen=True)
class ProxyFaults:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    drop_after_send_rate: float = 0.0
    error_rate: float = 0.0
    error_status: int = 503
    refuse: bool = False
    match: str | None = None  # regex on the request line; None: every request may be dropped or answered

    def __post_init__(self):
        if self.latency_ms < 0 or self.jitter_ms < 0:
            raise ValueError(f"proxy faults: latency_ms {self.latency_ms} and jitter_ms {self.jitter_ms} must be >= 0")
        for name in ("drop_after_send_rate", "error_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"proxy faults: {name} {getattr(self, name)} must be in [0, 1]")
        if self.drop_after_send_rate + self.error_rate > 1.0:
            raise ValueError("proxy faults: drop_after_send_rate + error_rate must be <= 1 (one fault per request)")
        if not 400 <= self.error_status <= 599:
            raise ValueError(f"proxy faults: error_status {self.error_status} is not an HTTP error status")
        if self.match is not None:
            re.compile(self.match)

    @property
    def active(self) -> bool:
        return bool(self.latency_ms or self.jitter_ms or self.drop_after_send_rate or self.error_rate or self.refuse)


NO_FAULTS = ProxyFaults()
_REASONS = {429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout", 418: "I'm a teapot"}


def error_response(status: int) -> bytes:
    """A plain-text answer, as a load balancer in front of a venue gives: a client maps it by its status alone
    (ccxt: 503 ExchangeNotAvailable, 429 RateLimitExceeded), not as one of the venue's own error codes."""
    reason = _REASONS.get(status, "Error")
    body = f"{status} {reason} (chaos proxy)".encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode() + body


def parse_upstream(url: str) -> tuple[str, int]:
    """(host, port) of an http:// URL (or host:port); https is refused with the reason."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http":
        raise ValueError(f"venue URL {url!r}: the chaos proxy relays plain TCP, so only http:// URLs work "
                         f"(a TLS certificate names the venue, not the proxy)")
    if not parts.hostname:
        raise ValueError(f"venue URL {url!r} has no host")
    return parts.hostname, parts.port or 80


async def _read_whole_request(first: bytes, reader: asyncio.StreamReader, timeout: float = 1.0) -> None:
    data = first
    while b"\r\n\r\n" not in data:
        more = await asyncio.wait_for(reader.read(65536), timeout)
        if not more:
            return
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    need = int(length.group(1)) if length else 0
    while len(body) < need:
        more = await asyncio.wait_for(reader.read(need - len(body)), timeout)
        if not more:
            return
        body += more


class ChaosProxy:
    """Runs in an asyncio loop: `await start()`, `await set_faults(...)`, `await close()`. `injected` counts the
    faults by kind (latency, dropped_after_send, refused_connections) and `fault_log` keeps (wall time, kind,
    request line) of each, so a drill can time the recovery after the last one."""

    def __init__(self, upstream: str, faults: ProxyFaults = NO_FAULTS, port: int = 0, seed: int = 0,
                 host: str = "127.0.0.1"):
        self.upstream = parse_upstream(upstream)
        self.faults, self.host, self.port = faults, host, port
        self.rng = random.Random(seed)
        self.injected: Counter[str] = Counter()
        self.requests = 0
        self.fault_log: list[tuple[float, str, str]] = []
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.Transport] = set()
        self._handlers: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def last_fault_at(self) -> float | None:
        return self.fault_log[-1][0] if self.fault_log else None

    def _record(self, kind: str, line: str = "") -> None:
        self.injected[kind] += 1
        self.fault_log.append((time.time(), kind, line))

    async def start(self) -> "ChaosProxy":
        await self._listen()
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def set_faults(self, faults: ProxyFaults) -> None:
        was_refusing, self.faults = self.faults.refuse, faults
        if faults.refuse and not was_refusing:
            await self._stop_listening()
            for transport in list(self._conns):
                transport.abort()
            self._record("refused_connections")
        elif was_refusing and not faults.refuse:
            self._record("refused_connections_end")
            await self._listen()

    async def close(self) -> None:
        await self._stop_listening()
        for transport in list(self._conns):
            transport.abort()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=2.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._handlers.add(task)
        try:
            await self._relay(reader, writer)
        finally:
            self._handlers.discard(task)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()  # the venue itself is down: the client sees its connection reset
            return
        transports = (writer.transport, up_writer.transport)
        self._conns.update(transports)
        state = {"awaiting": False, "drop": False, "line": "", "answered": False}

        async def client_to_venue() -> None:
            while data := await reader.read(65536):
                if not state["awaiting"]:  # the first bytes of a new request
                    faults = self.faults
                    line = data.split(b"\r\n", 1)[0].decode("latin-1")
                    self.requests += 1
                    if faults.latency_ms or faults.jitter_ms:
                        delay = max(0.0, faults.latency_ms + self.rng.uniform(-faults.jitter_ms, faults.jitter_ms))
                        await asyncio.sleep(delay / 1000.0)
                        self._record("latency", line)
                    matches = faults.match is None or re.search(faults.match, line) is not None
                    u = self.rng.random() if matches and (faults.error_rate or faults.drop_after_send_rate) else 1.0
                    if u < faults.error_rate:  # answered here, never forwarded; the connection is closed after
                        self._record(f"http_{faults.error_status}", line)
                        await _read_whole_request(data, reader)  # unread bytes would turn the close into a reset
                        writer.write(error_response(faults.error_status))
                        await writer.drain()
                        state["answered"] = True
                        return
                    state["drop"] = u < faults.error_rate + faults.drop_after_send_rate
                    state["awaiting"], state["line"] = True, line
                up_writer.write(data)
                await up_writer.drain()

        async def venue_to_client() -> None:
            while data := await up_reader.read(65536):
                if state["awaiting"]:  # the first bytes of the response
                    state["awaiting"] = False
                    if state["drop"]:
                        self._record("dropped_after_send", state["line"])
                        return
                writer.write(data)
                await writer.drain()

        tasks = [asyncio.ensure_future(client_to_venue()), asyncio.ensure_future(venue_to_client())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if state["answered"]:
                writer.close()  # let the error response out before the FIN
            else:
                writer.transport.abort()  # a dropped response: the client gets a reset, never a partial answer
            up_writer.close()
            self._conns.difference_update(transports)


class ProxyThread:
    """A ChaosProxy on its own event loop in a daemon thread, for synchronous callers (the drill, tests)."""

    def __init__(self, upstream: str, faults: ProxyFaults = NO_FAULTS, port: int = 0, seed: int = 0):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="chaos-proxy", daemon=True)
        self._thread.start()
        self.proxy = ChaosProxy(upstream, faults, port, seed)
        self._run(self.proxy.start())

    def _run(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def injected(self) -> Counter[str]:
        return Counter(self.proxy.injected)

    @property
    def last_fault_at(self) -> float | None:
        return self.proxy.last_fault_at

    @property
    def faults(self) -> ProxyFaults:
        return self.proxy.faults

    def set_faults(self, faults: ProxyFaults | None = None, **changes) -> None:
        self._run(self.proxy.set_faults(replace(faults or self.proxy.faults, **changes)))

    def close(self) -> None:
        try:
            self._run(self.proxy.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
            self.loop.close()


@contextmanager
def running_proxy(upstream: str, faults: ProxyFaults = NO_FAULTS, port: int = 0, seed: int = 0):
    proxy = ProxyThread(upstream, faults, port, seed)
    try:
        yield proxy
    finally:
        proxy.close()
