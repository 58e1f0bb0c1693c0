"""Routing (feature A in the runtime): the venue the snapshot's route table names for a symbol, side and
UTC hour, falling back to the runner-up when the best venue is not one the runtime may use."""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class Route:
    venue: str
    cost_bps: float
    why: str


class Router:
    def __init__(self, route_table: pl.DataFrame):
        self.rows = {(r["symbol"], r["side"], r["hour"]): r for r in route_table.iter_rows(named=True)}

    def route(self, symbol: str, side: str, hour: int, allowed: Container[str]) -> Route | None:
        row = self.rows.get((symbol, side, hour))
        if row is None:
            return None
        if row["best_venue"] in allowed:
            return Route(row["best_venue"], row["best_cost_bps"], f"cheapest at {hour:02d}h UTC")
        if row["runner_up_venue"] in allowed:
            return Route(row["runner_up_venue"], row["runner_up_cost_bps"],
                         f"runner-up at {hour:02d}h UTC ({row['best_venue']} not available)")
        return None
