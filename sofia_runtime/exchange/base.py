"""The one interface every venue adapter has, shaped like ccxt's unified API, and the errors it raises.

Orders and trades are ccxt-shaped dicts (`id`, `clientOrderId`, `symbol`, `type`, `side`, `price`, `amount`,
`filled`, `remaining`, `status`, `fee`, `timestamp` ...). The error names mirror ccxt's so the live adapter
maps ccxt's exceptions one to one and the engine handles both venues alike; importing ccxt itself here would
cost the runtime its start-up time in paper mode.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Protocol


class ExchangeError(Exception):
    pass


class InvalidOrder(ExchangeError):
    """Bad precision, below limits, a post-only order that would take: never retried."""


class InsufficientFunds(ExchangeError):
    pass


class OrderNotFound(ExchangeError):
    pass


class NetworkError(ExchangeError):
    """The request may or may not have reached the venue: find out by client order id before sending again."""


class RequestTimeout(NetworkError):
    pass


class RateLimitExceeded(NetworkError):
    pass


class ExchangeNotAvailable(NetworkError):
    pass


class Venue(Protocol):
    name: str

    async def create_order(self, symbol: str, type: str, side: str, amount: float, price: float | None = None,
                           params: dict | None = None) -> dict: ...

    async def cancel_order(self, id: str, symbol: str, params: dict | None = None) -> dict: ...

    async def fetch_order(self, id: str | None, symbol: str, params: dict | None = None) -> dict: ...

    async def fetch_open_orders(self, symbol: str | None = None) -> list[dict]: ...

    async def fetch_balance(self) -> dict: ...

    async def fetch_my_trades(self, symbol: str | None = None, since: int | None = None) -> list[dict]: ...

    async def find_order(self, client_order_id: str, symbol: str) -> dict | None:
        """The order sent with this client order id, or None when the venue never saw it."""
        ...

    def drain_trades(self) -> list[dict]:
        """Trades of this runtime's orders the adapter has seen since the last call."""
        ...

    async def close(self) -> None: ...


def on_grid(value: Decimal, step: Decimal) -> bool:
    return step <= 0 or (value / step) == (value / step).to_integral_value()


async def create_order_once(venue: Venue, symbol: str, type: str, side: str, amount, price, params: dict,
                            retries: int = 3, backoff_s: float = 0.05) -> dict:
    """Send an order so that the venue has it at most once: after a network error (the request may have
    landed) ask the venue for the client order id, and send again only when it says it has no such order.
    Raises NetworkError when the outcome is still unknown after the last attempt; the caller must keep asking."""
    cid = params["clientOrderId"]
    last: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
            try:
                found = await venue.find_order(cid, symbol)
            except NetworkError as exc:
                last = exc
                continue  # still unknown: never send blind
            if found is not None:
                return found
        try:
            return await venue.create_order(symbol, type, side, amount, price, params)
        except NetworkError as exc:
            last = exc
    raise NetworkError(f"order {cid}: outcome unknown after {retries + 1} attempts: {last}")
