"""The bearer token of the runtime's state-changing HTTP endpoints (handover), from the environment: the runtime
checks it, deploy and the CLI send it. Read-only endpoints need none."""

from __future__ import annotations

import hmac
import os

CONTROL_TOKEN_ENV = "SOFIA_CONTROL_TOKEN"


def control_token() -> str | None:
    return os.environ.get(CONTROL_TOKEN_ENV) or None


def bearer_header() -> dict[str, str]:
    """The header a client sends to a state-changing endpoint (none when no token is set)."""
    token = control_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def authorized(header: str, token: str) -> bool:
    """`header` (the request's Authorization) carries `token`, compared in constant time."""
    return header.startswith("Bearer ") and hmac.compare_digest(header[7:].encode(), token.encode())
