"""The runtime's HTTP surface: /api/health (200 or 503 with reasons), /api/dev/status (JSON) and
/metrics (Prometheus), open to read; POST /api/dev/handover changes state and needs
`Authorization: Bearer <SOFIA_CONTROL_TOKEN>`. Nothing here can reach an API key: the status is built from the
engine's state."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sofia_runtime.auth import CONTROL_TOKEN_ENV, authorized, control_token


def health_reasons(engine, snapshot_max_age: timedelta, started: bool) -> list[str]:
    reasons = []
    if not started:
        reasons.append("starting: recovering the journal and loading market data")
    if engine.snapshot_error:
        reasons.append(f"snapshot: {engine.snapshot_error}")
    age = datetime.now(timezone.utc) - engine.snapshot.created_at
    if age > snapshot_max_age:
        reasons.append(f"snapshot {engine.snapshot.snapshot_id} is {age} old (limit {snapshot_max_age})")
    if engine.venue_error:
        reasons.append(f"venue unreachable: {engine.venue_error}")
    return reasons


def make_app(engine, snapshot_max_age: timedelta, is_started) -> web.Application:
    """The app, served by `ServerThread` on a thread of its own: handlers only read the engine's state, and what
    changes it (a handover) is handed to the trading loop, the loop this is called from."""
    trading_loop = asyncio.get_running_loop()

    async def health(request: web.Request) -> web.Response:
        reasons = health_reasons(engine, snapshot_max_age, is_started())
        body = {"status": "ok" if not reasons else "unhealthy", "reasons": reasons,
                "runtime_id": engine.runtime_id, "snapshot_id": engine.snapshot.snapshot_id}
        if engine.role:
            body["role"] = engine.role
        return web.json_response(body, status=200 if not reasons else 503)

    async def status(request: web.Request) -> web.Response:
        for _ in range(20):  # the trading loop may change a dict while it is read: read again
            try:
                return web.json_response(engine.status())
            except RuntimeError:
                await asyncio.sleep(0.005)
        return web.json_response({"error": "the state kept changing while it was read; ask again"}, status=503)

    async def handover(request: web.Request) -> web.Response:
        refused = _unauthorized(request)
        if refused:
            return refused
        to = request.query.get("to", "")
        if engine.role != "active":
            return web.json_response({"error": f"this runtime is {engine.role or 'not a slot'}, not active"}, status=409)
        trading_loop.call_soon_threadsafe(engine.request_handover, to)
        return web.json_response({"handover_to": to, "runtime_id": engine.runtime_id}, status=202)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(engine.metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.add_routes([web.get("/api/health", health), web.get("/api/dev/status", status), web.get("/metrics", metrics),
                    web.post("/api/dev/handover", handover)])
    return app


def _unauthorized(request: web.Request) -> web.Response | None:
    """None when the request carries this runtime's control token, else the refusal (401, or 403 when the
    runtime has no token and so takes no state change over HTTP)."""
    token = control_token()
    if token is None:
        return web.json_response({"error": f"state-changing endpoints are off: the runtime has no {CONTROL_TOKEN_ENV}"},
                                 status=403)
    if not authorized(request.headers.get("Authorization", ""), token):
        return web.json_response({"error": "a bearer token is required (Authorization: Bearer …)"}, status=401,
                                 headers={"WWW-Authenticate": "Bearer"})
    return None


class PortInUse(ValueError):
    """The port asked for cannot be bound: says which, why, and what to pass instead."""


async def start_server(app: web.Application, port: int, host: str = "127.0.0.1") -> tuple[web.AppRunner, int]:
    """Serve on `host`:`port` (0 = any free port); returns the runner and the port bound."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise PortInUse(f"cannot serve health and status on {host}:{port}: {exc.strerror or exc} "
                        "(another process has it?): pass --port 0 for any free port, or another --port") from exc
    bound = site._server.sockets[0].getsockname()[1]
    return runner, bound


class ServerThread:
    """The HTTP surface on a thread and event loop of its own, so /api/health answers while the trading loop is
    busy (a replay at full speed, a burst of orders): a supervisor must not stop a healthy runtime for a slow
    answer."""

    def __init__(self, app: web.Application, host: str, port: int):
        self.app, self.host, self.port = app, host, port
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Serve; returns the port bound (PortInUse when it cannot)."""
        ready, failure = threading.Event(), []

        def serve() -> None:
            loop = self.loop = asyncio.new_event_loop()
            try:
                runner, self.port = loop.run_until_complete(start_server(self.app, self.port, self.host))
            except BaseException as exc:  # handed to the caller of start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="http-surface", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self.port

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
