"""The paper drill's own order flow. The drill judges the order path under faults, not a strategy's economics. On
a real snapshot the default gate passes almost no maker quote (a quote's edge rarely beats the venue's fee), and a
drill that sends no order proves nothing. So each scenario's runtime gets, in the drill's own configuration file
(never the user's):
- a gate under which every decision whose EV is a number passes (the EV is still computed and journaled);
- mm_lite: only as many symbols as half the open-order limit (`limits.max_open_orders_total`, the user's) holds
  two quotes per venue for, the stale_data venue's first, then those on the most venues. Every quote passing,
  quotes on every instrument would fill the limit with whichever venues came first: a venue whose quotes were
  cancelled while its data was stale would find no room to quote again, and once quotes whose cancel failed (a
  timeout, a 429) hold the limit, no order goes out between the failing cancels and the breaker counts them as
  failing in a row. The other half is the room for those.
A live drill changes nothing: it trades the router's --order under the gate as configured.
"""

from __future__ import annotations

import os

import polars as pl

DRILL_GATE = {"threshold_usd": -1e6}
WHY = ("paper: gate.threshold_usd -1e6 USD, so every decision whose EV is a number passes and the faults meet a "
       "steady flow of orders (the EV is journaled with each decision)")


def quoted_symbols(schedule: pl.DataFrame, markets: pl.DataFrame, max_quotes: int, first_venue: str | None,
                   only_venue: str | None = None, symbols: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The symbols mm_lite quotes in the drill: of the pairs active in the session `schedule` at some hour and
    listed in `markets` (restricted to `only_venue` and `symbols` when given), whole symbols while two quotes per
    pair fit in `max_quotes`; symbols on `first_venue` first, then those on more venues, then by name. At
    least one symbol when there is any."""
    pairs = (schedule.filter(pl.col("active")).select("venue", "symbol").unique()
             .join(markets.select("venue", "symbol").unique(), on=["venue", "symbol"]))
    if only_venue:
        pairs = pairs.filter(pl.col("venue") == only_venue)
    if symbols:
        pairs = pairs.filter(pl.col("symbol").is_in(list(symbols)))
    ranked = (pairs.group_by("symbol")
              .agg(pl.len().alias("venues"), (pl.col("venue") == (first_venue or "")).any().alias("on_first"))
              .sort(["on_first", "venues", "symbol"], descending=[True, True, False]))
    chosen, quotes = [], 0
    for row in ranked.iter_rows(named=True):
        if not chosen or quotes + 2 * row["venues"] <= max_quotes:
            chosen.append(row["symbol"])
            quotes += 2 * row["venues"]
    return chosen


def overrides(mode: str, strategy: str, snapshot_dir, user, first_venue: str | None) -> dict:
    """The sections the drill lays over the user's configuration: `user` is the user's effective RuntimeConfig,
    `snapshot_dir` the CURRENT snapshot's folder."""
    if mode != "paper":
        return {}
    out = {"gate": dict(DRILL_GATE)}
    if strategy == "mm_lite":
        schedule = pl.read_parquet(snapshot_dir / "session_schedule.parquet", columns=["venue", "symbol", "active"])
        markets = pl.read_parquet(snapshot_dir / "markets.parquet", columns=["venue", "symbol"])
        out["mm_lite"] = {"symbols": quoted_symbols(schedule, markets, user.limits.max_open_orders_total // 2,
                                                    first_venue, user.venue, user.mm_lite.symbols)}
    return out


def apply(config: dict, sections: dict) -> dict:
    """`config` (a runtime YAML mapping) with `sections` laid over its own, field by field."""
    out = dict(config)
    for section, values in sections.items():
        out[section] = {**(out.get(section) or {}), **values}
    return out


def environment_overrides(sections: dict, environ=None) -> list[str]:
    """The environment variables that would take the drill's order flow back (the environment outranks YAML);
    the drill leaves them out of its runtimes' environment."""
    keys = {f"SOFIA_RUNTIME_{section}__{name}".upper() for section, values in sections.items() for name in values}
    return sorted(k for k in (os.environ if environ is None else environ) if k.upper() in keys)
