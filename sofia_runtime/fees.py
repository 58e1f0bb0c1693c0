"""Fee lookups the runtime and the pipelines share: the selected tier's maker/taker for a venue and symbol
on a date, and fee amounts as Decimal."""

from __future__ import annotations

from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal

import polars as pl


def in_force(on: date) -> pl.Expr:
    """Fee-table rows whose period holds `on` (valid_to exclusive, open-ended when null)."""
    return (pl.col("valid_from") <= on) & (pl.col("valid_to").is_null() | (pl.col("valid_to") > on))


class FeeSchedule:
    def __init__(self, fee_table: pl.DataFrame):
        self._rows = fee_table.filter(pl.col("selected"))
        self._memo: dict[tuple[str, str, str, date], float] = {}

    def rate(self, venue: str, symbol: str, liquidity: str, on: date) -> float:
        """The maker or taker rate in force on `on`; KeyError naming the venue and symbol when there is none."""
        key = (venue, symbol, liquidity, on)
        rate = self._memo.get(key)
        if rate is None:
            rate = self._memo[key] = self._lookup(venue, symbol, liquidity, on)
        return rate

    def _lookup(self, venue: str, symbol: str, liquidity: str, on: date) -> float:
        if liquidity not in ("maker", "taker"):
            raise ValueError(f"liquidity must be maker or taker, not {liquidity!r}")
        rows = self._rows.filter((pl.col("venue") == venue) & (pl.col("symbol") == symbol) & in_force(on))
        if rows.is_empty():
            raise KeyError(f"no fee for {venue} {symbol} on {on}")
        return float(rows.sort("valid_from")[-1, liquidity])

    def fee(self, venue: str, symbol: str, liquidity: str, on: date, notional: Decimal,
            quantum: Decimal = Decimal("0.00000001")) -> Decimal:
        return (notional * Decimal(str(self.rate(venue, symbol, liquidity, on)))).quantize(quantum, ROUND_HALF_EVEN)
