"""What a strategy is: it sees books, fills and closed orders through the engine's context and answers with
actions (intents for the gate, or cancels of its own resting orders)."""

from __future__ import annotations

from dataclasses import dataclass

from sofia_runtime.gate import Intent
from sofia_runtime.marketdata import Book


@dataclass(frozen=True)
class Cancel:
    client_order_id: str
    reason: str


Action = Intent | Cancel


class Strategy:
    name = ""
    live_allowed = True

    def instruments(self, ctx) -> set[tuple[str, str]]:
        """(venue, symbol) pairs whose books and trades the strategy needs."""
        raise NotImplementedError

    def on_book(self, book: Book, ctx) -> list[Action]:
        return []

    def on_fill(self, fill: dict, ctx) -> list[Action]:
        return []

    def restore(self, records: list[dict], ctx) -> None:
        """Rebuild state from this runtime's journal after a restart."""

    @property
    def done(self) -> bool:
        return False
