"""What a snapshot lets the runtime trade: one definition, used by the pipelines before a snapshot becomes CURRENT
and by the runtime before it trades.

An instrument (venue, symbol) is tradable when the snapshot has its market (tick and step sizes), a selected fee
row, risk limits, and, for what the strategy needs, book data to replay (paper mode on the snapshot's replay) and
a fill model on both sides (maker strategies: the gate cannot price a resting quote without one).

A snapshot is *refused* (never made CURRENT) when nothing in it could be traded at all: no market with a fee row
and risk limits. A table that is empty but not needed by every strategy (route_table, fill_model,
session_schedule, funding_opportunities, the replay's books and trades) is a *warning*: candle-only data
legitimately has no tape to fit a fill model on, a live runtime needs no replay; the runtime then refuses the
instruments (or the strategy) that need it, saying why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import polars as pl

MAKER_STRATEGIES = frozenset({"mm_lite"})  # quote resting limit orders: the gate needs the fill model
# empty, these cost some strategies or instruments but not the whole snapshot: a warning, with what it costs
OPTIONAL_TABLES = {
    "route_table": "the router has no venue ranking (it trades only with --venue)",
    "fill_model": "maker strategies (mm_lite) refuse every instrument",
    "session_schedule": "mm_lite has no active symbols",
    "funding_opportunities": "funding_farmer has nothing offered",
    "inventory_targets": "paper venues start with no balances unless the configuration gives them",
    "replay_books": "a paper runtime on the replay has no books to trade on (live is unaffected)",
    "replay_trades": "the paper venue's resting orders cannot fill from the tape",
}


def _pairs(df: pl.DataFrame) -> set[tuple[str, str]]:
    if df.is_empty():
        return set()
    return set(df.select("venue", "symbol").unique().iter_rows())


@dataclass
class Readiness:
    """A snapshot's tables judged for trading: `refusals` block it, `warnings` do not."""
    refusals: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tradable: list[tuple[str, str]] = field(default_factory=list)  # instruments with market, fee and limits

    @property
    def ok(self) -> bool:
        return not self.refusals


def _lazy(tables: Mapping[str, pl.DataFrame], name: str) -> pl.LazyFrame:
    """A table as a lazy frame: a loaded snapshot scans the tables it left in their files (only what is asked)."""
    scan = getattr(tables, "scan", None)
    return scan(name) if scan is not None else tables[name].lazy()


def snapshot_readiness(tables: Mapping[str, pl.DataFrame], reasons: Mapping[str, str] | None = None) -> Readiness:
    """Judge a snapshot's tables. `reasons`: why a table is empty, where its producer said (e.g. "candle-only
    data: no trades to fit on"), quoted in the warning."""
    reasons = reasons or {}
    out = Readiness()
    markets = _pairs(tables["markets"])
    fees = _pairs(tables["fee_table"].filter(pl.col("selected")))
    limits = _pairs(tables["risk_limits"])
    for name, have, what in (("markets", markets, "no instrument has tick and step sizes"),
                             ("fee_table", fees, "no instrument has a selected fee row"),
                             ("risk_limits", limits, "no instrument has risk limits")):
        if not have:
            state = "is empty" if tables[name].is_empty() else "has no selected row"
            out.refusals.append(f"{name} {state}{_because(reasons.get(name))}: {what}")
    out.tradable = sorted(markets & fees & limits)
    if not out.refusals and not out.tradable:
        out.refusals.append(f"no instrument has a market, a selected fee row and risk limits together "
                            f"(markets {sorted(markets)[:5]}, fees {sorted(fees)[:5]}, limits {sorted(limits)[:5]})")
    for name, cost in OPTIONAL_TABLES.items():
        if name in tables and _is_empty(tables, name):
            out.warnings.append(f"{name} is empty{_because(reasons.get(name))}: {cost}")
    return out


def _is_empty(tables: Mapping[str, pl.DataFrame], name: str) -> bool:
    return _lazy(tables, name).select(pl.len()).collect().item() == 0


def _because(reason: str | None) -> str:
    return f" ({reason})" if reason else ""


def instrument_refusals(tables: Mapping[str, pl.DataFrame], instruments: Iterable[tuple[str, str]], strategy: str,
                        needs_replay: bool) -> dict[tuple[str, str], str]:
    """The instruments of `instruments` the runtime must not trade, each with the first reason found."""
    markets = _pairs(tables["markets"])
    fees = _pairs(tables["fee_table"].filter(pl.col("selected")))
    limits = _pairs(tables["risk_limits"])
    booked = set(_lazy(tables, "replay_books").select("venue", "symbol").unique().collect().iter_rows()) \
        if needs_replay else set()
    fill = tables["fill_model"]
    sides = {} if fill.is_empty() else {
        (v, s): set(sd) for v, s, sd in fill.group_by("venue", "symbol").agg(pl.col("side")).iter_rows()}
    out = {}
    for pair in sorted(set(instruments)):
        venue, symbol = pair
        if pair not in markets:
            out[pair] = f"no market for {venue} {symbol} in the snapshot's markets (tick and step sizes)"
        elif pair not in fees:
            out[pair] = f"no selected fee row for {venue} {symbol} in the snapshot's fee_table"
        elif pair not in limits:
            out[pair] = f"no risk limits for {venue} {symbol} in the snapshot's risk_limits"
        elif needs_replay and pair not in booked:
            out[pair] = f"no books for {venue} {symbol} in the snapshot's replay_books"
        elif strategy in MAKER_STRATEGIES and sides.get(pair, set()) < {"buy", "sell"}:
            have = sorted(sides.get(pair, set()))
            out[pair] = (f"no fill model for {venue} {symbol} (sides {have or 'none'}): {strategy} quotes resting "
                         f"limit orders and the gate cannot price them without it")
    return out


def refusal_map(refused: Mapping[tuple[str, str], str]) -> dict[str, str]:
    """As the status endpoint and the journal show it: "venue symbol" -> reason."""
    return {f"{v} {s}": reason for (v, s), reason in sorted(refused.items())}


def requested_instruments(cfg, tables: Mapping[str, pl.DataFrame], venues: Iterable[str]) -> set[tuple[str, str]]:
    """What the configuration asks the strategy to trade, before the snapshot's markets filter it: mm_lite's
    symbols (or the session schedule's active ones), the router's parent symbol, on every venue the runtime has;
    so an instrument dropped for want of a market is reported, not silently left out."""
    venues = set(venues)
    if cfg.strategy == "mm_lite":
        sched = tables["session_schedule"].filter(pl.col("active"))
        pairs = {(v, s) for v, s in _pairs(sched) if v in venues}
        if cfg.mm_lite.symbols:
            wanted = set(cfg.mm_lite.symbols)
            pairs = {(v, s) for v, s in pairs if s in wanted} | {(v, s) for v in venues for s in wanted}
        return pairs
    if cfg.strategy == "router" and cfg.router.order:
        symbol = cfg.router.order.split()[-1]
        return {(v, symbol) for v in venues}
    return set()


def nothing_to_trade(strategy: str, refused: Mapping[tuple[str, str], str], warnings: Iterable[str]) -> str:
    """Why a runtime has no instrument left: the refused ones with their reasons, else what the snapshot lacks."""
    parts = [f"{v} {s}: {r}" for (v, s), r in sorted(refused.items())]
    if not parts:
        parts = [f"{strategy} found no instrument in the snapshot"] + list(warnings)
    return f"nothing to trade for {strategy}: " + "; ".join(parts)
