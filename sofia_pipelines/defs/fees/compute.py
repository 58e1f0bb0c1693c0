"""Pure builders of the fee table, withdrawal fees and markets from configuration and ccxt."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from pathlib import Path

import polars as pl
import yaml

from sofia_runtime.schemas import FEE_TABLE, MARKETS, WITHDRAWAL_FEES

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


def load_yaml(name: str) -> dict:
    path = CONFIG_DIR / name
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc


def markets_frame(config: Mapping) -> pl.DataFrame:
    rows = [{k: r[k] for k in MARKETS.columns} for r in config["markets"]]
    return MARKETS.conform(pl.DataFrame(rows), "config/markets.yaml")


def ccxt_static_fees(venue: str) -> tuple[float, float] | None:
    """Maker and taker from ccxt's exchange class, offline (no keys, no network)."""
    import ccxt

    if not hasattr(ccxt, venue):
        return None
    trading = getattr(ccxt, venue)().describe().get("fees", {}).get("trading", {})
    if trading.get("maker") is None or trading.get("taker") is None:
        return None
    return float(trading["maker"]), float(trading["taker"])


def fee_table(markets: pl.DataFrame, overrides: Mapping, fetched: Mapping[tuple[str, str], tuple[float, float]],
              static=ccxt_static_fees) -> pl.DataFrame:
    """One row per venue, symbol and tier. For each (venue, market) the override file wins; then fees
    fetched with keys (per symbol); then ccxt's static schedule. `selected` marks the tier the desk's
    30-day volume reaches."""
    volume = float(overrides["desk_volume_30d_usd"])
    by_market = {(o["venue"], o["market"]): o for o in overrides["trading"]}
    rows = []
    for m in markets.iter_rows(named=True):
        venue, symbol, market = m["venue"], m["symbol"], m["market"]
        override = by_market.get((venue, market))
        if override:
            tiers = sorted(override["tiers"], key=lambda t: t["min_volume_30d_usd"])
            reached = [t for t in tiers if t["min_volume_30d_usd"] <= volume][-1]["tier"]
            for t in tiers:
                rows.append({"venue": venue, "symbol": symbol, "market": market, "tier": t["tier"],
                             "min_volume_30d_usd": float(t["min_volume_30d_usd"]), "maker": float(t["maker"]),
                             "taker": float(t["taker"]),
                             "funding_interval_hours": override.get("funding_interval_hours"),
                             "valid_from": override["valid_from"], "valid_to": override.get("valid_to"),
                             "source": f"override: {override['source']}", "selected": t["tier"] == reached})
            continue
        maker_taker, source = fetched.get((venue, symbol)), f"fetch_trading_fees {venue}"
        if maker_taker is None:
            maker_taker, source = static(venue), f"ccxt static schedule {venue}"
        if maker_taker is None:
            raise ValueError(f"no fee for {venue} {symbol}: not in config/fees.yaml, not fetched, not in ccxt")
        rows.append({"venue": venue, "symbol": symbol, "market": market, "tier": "default",
                     "min_volume_30d_usd": 0.0, "maker": maker_taker[0], "taker": maker_taker[1],
                     "funding_interval_hours": None, "valid_from": date.today(), "valid_to": None,
                     "source": source, "selected": True})
    return FEE_TABLE.conform(pl.DataFrame(rows, schema_overrides={"funding_interval_hours": pl.Float64,
                                                                  "valid_to": pl.Date}), "fee table")


def withdrawal_fees(overrides: Mapping) -> pl.DataFrame:
    checked = overrides["checked"]
    rows = [{**w, "fee": float(w["fee"]), "valid_from": w.get("valid_from", checked), "valid_to": w.get("valid_to")}
            for w in overrides["withdrawals"]]
    return WITHDRAWAL_FEES.conform(pl.DataFrame(rows, schema_overrides={"valid_to": pl.Date}),
                                   "config/fees.yaml withdrawals")


def fetch_fees_with_keys(exchanges: Mapping[str, object]) -> dict[tuple[str, str], tuple[float, float]]:
    """Per-symbol maker/taker from `fetch_trading_fees` of exchanges that have API keys."""
    out = {}
    for venue, ex in exchanges.items():
        for symbol, f in ex.fetch_trading_fees().items():
            out[(venue, symbol)] = (float(f["maker"]), float(f["taker"]))
    return out
