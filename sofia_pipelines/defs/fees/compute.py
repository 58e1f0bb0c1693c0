"""Pure builders of the fee table, withdrawal fees and markets from configuration and ccxt."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from functools import lru_cache
from pathlib import Path

import polars as pl

from sofia_pipelines.validation import validated
from sofia_runtime.config_files import CONFIG_FILES, read_yaml, trading_periods
from sofia_runtime.schemas import FEE_TABLE, MARKETS, WITHDRAWAL_FEES

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


def load_yaml(name: str, config_dir: Path | None = None) -> dict:
    """A configuration file as a dict; a file with a model (fees, tax rules, markets, inventory) validated by it,
    with the values it parsed (dates as dates, numbers as numbers) and every optional field, None where unset."""
    path = (config_dir or CONFIG_DIR) / name
    raw = read_yaml(path)
    model = CONFIG_FILES.get(name)
    return raw if model is None else validated(model, raw, str(path)).model_dump()


def markets_frame(config: Mapping) -> pl.DataFrame:
    rows = [{k: r[k] for k in MARKETS.columns} for r in config["markets"]]
    return MARKETS.conform(pl.DataFrame(rows), "config/markets.yaml")


UNDATED = date(2000, 1, 1)  # a schedule with no start date of its own applies to any day of data
DEFAULT_SOURCE = "default (no schedule known)"


@lru_cache(maxsize=64)
def ccxt_static_fees(venue: str) -> tuple[float, float] | None:
    """Maker and taker of ccxt's static schedule for the venue (`fees['trading']` of its exchange class),
    offline: no keys, no network. None when ccxt has no such exchange or no figures for it."""
    import ccxt

    if venue not in ccxt.exchanges:
        return None
    trading = (getattr(ccxt, venue)().fees or {}).get("trading") or {}
    if trading.get("maker") is None or trading.get("taker") is None:
        return None
    return float(trading["maker"]), float(trading["taker"])


def override_periods(overrides: Mapping) -> dict[tuple[str, str], list[dict]]:
    """The override file's periods per (venue, market), in time order. A period without `valid_to` ends where
    the next one starts; periods that overlap are an error naming them."""
    try:
        return trading_periods(overrides["trading"])
    except ValueError as exc:
        raise ValueError(f"config/fees.yaml: {exc}") from None


def _override_rows(m: Mapping, periods: list[dict], volume: float) -> list[dict]:
    rows = []
    for period in periods:
        tiers = sorted(period["tiers"], key=lambda t: t["min_volume_30d_usd"])
        reached = [t for t in tiers if t["min_volume_30d_usd"] <= volume][-1]["tier"]
        rows += [{"venue": m["venue"], "symbol": m["symbol"], "market": m["market"], "tier": t["tier"],
                  "min_volume_30d_usd": float(t["min_volume_30d_usd"]), "maker": float(t["maker"]),
                  "taker": float(t["taker"]), "funding_interval_hours": period.get("funding_interval_hours"),
                  "valid_from": period["valid_from"], "valid_to": period.get("valid_to"),
                  "source": f"override: {period['source']}", "selected": t["tier"] == reached} for t in tiers]
    return rows


def fee_table(markets: pl.DataFrame, overrides: Mapping, fetched: Mapping[tuple[str, str], tuple[float, float]],
              static=ccxt_static_fees) -> pl.DataFrame:
    """One row per venue, symbol, tier and period. For each (venue, market) the override file's periods win; then
    fees fetched with keys (per symbol); then ccxt's static schedule for the venue; then the file's `default`.
    Days before a market's first override period (real data older than the file's schedule) take that fallback,
    in a period of its own that ends where the overrides begin, its `source` saying so. `selected` marks, in each
    period, the tier the desk's 30-day volume reaches."""
    volume = float(overrides["desk_volume_30d_usd"])
    periods = override_periods(overrides)
    default = overrides.get("default")
    rows = []
    for m in markets.iter_rows(named=True):
        venue, symbol, market = m["venue"], m["symbol"], m["market"]
        own = periods.get((venue, market))
        if own:
            rows += _override_rows(m, own, volume)
            first = min(p["valid_from"] for p in own)
            if first <= UNDATED:
                continue
        maker_taker, source = fetched.get((venue, symbol)), f"fetch_trading_fees {venue}"
        if maker_taker is None:
            maker_taker, source = static(venue), f"ccxt static schedule {venue}"
        if maker_taker is None and default:
            maker_taker, source = (float(default["maker"]), float(default["taker"])), DEFAULT_SOURCE
        if maker_taker is None:
            raise ValueError(f"no fee for {venue} {symbol}: not in config/fees.yaml, not fetched, not in ccxt, "
                             "and config/fees.yaml has no `default`")
        rows.append({"venue": venue, "symbol": symbol, "market": market, "tier": "default",
                     "min_volume_30d_usd": 0.0, "maker": maker_taker[0], "taker": maker_taker[1],
                     "funding_interval_hours": None, "valid_from": UNDATED, "valid_to": first if own else None,
                     "source": f"{source} (before the override period from {first})" if own else source,
                     "selected": True})
    if not rows:
        return FEE_TABLE.empty()
    return FEE_TABLE.conform(pl.DataFrame(rows, schema_overrides={"funding_interval_hours": pl.Float64,
                                                                  "valid_to": pl.Date}), "fee table")


def withdrawal_fees(overrides: Mapping) -> pl.DataFrame:
    checked = overrides["checked"]
    rows = [{**w, "fee": float(w["fee"]), "valid_from": w.get("valid_from") or checked, "valid_to": w.get("valid_to")}
            for w in overrides.get("withdrawals") or []]
    if not rows:
        return WITHDRAWAL_FEES.empty()
    return WITHDRAWAL_FEES.conform(pl.DataFrame(rows, schema_overrides={"valid_to": pl.Date}),
                                   "config/fees.yaml withdrawals")


def fetch_fees_with_keys(exchanges: Mapping[str, object]) -> dict[tuple[str, str], tuple[float, float]]:
    """Per-symbol maker/taker from `fetch_trading_fees` of exchanges that have API keys."""
    out = {}
    for venue, ex in exchanges.items():
        for symbol, f in ex.fetch_trading_fees().items():
            out[(venue, symbol)] = (float(f["maker"]), float(f["taker"]))
    return out
