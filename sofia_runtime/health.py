"""The runtime's HTTP surface: /api/health (200 or 503 with reasons), /api/dev/status (JSON) and
/metrics (Prometheus), open to read; POST /api/dev/handover changes state and needs
`Authorization: Bearer <SOFIA_CONTROL_TOKEN>`. Nothing here can reach an API key: the status is built from the
engine's state."""

from __future__ import annotations

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
    async def health(request: web.Request) -> web.Response:
        reasons = health_reasons(engine, snapshot_max_age, is_started())
        body = {"status": "ok" if not reasons else "unhealthy", "reasons": reasons,
                "runtime_id": engine.runtime_id, "snapshot_id": engine.snapshot.snapshot_id}
        if engine.role:
            body["role"] = engine.role
        return web.json_response(body, status=200 if not reasons else 503)

    async def status(request: web.Request) -> web.Response:
        return web.json_response(engine.status())

    async def handover(request: web.Request) -> web.Response:
        refused = _unauthorized(request)
        if refused:
            return refused
        to = request.query.get("to", "")
        if engine.role != "active":
            return web.json_response({"error": f"this runtime is {engine.role or 'not a slot'}, not active"}, status=409)
        engine.request_handover(to)
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
