"""Fee table, withdrawal fees, markets and tax rules as assets (unpartitioned; effective-dated rows)."""

import os

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from sofia_pipelines.defs.fees.compute import (fee_table, fetch_fees_with_keys, load_yaml, markets_frame,
                                               withdrawal_fees)
from sofia_pipelines.defs.fees.markets import (RAW_WITH_MARKETS, find_market_dumps, inferred_markets,
                                               observed_markets, observed_values, resolve_markets)
from sofia_pipelines.metadata import preview
from sofia_pipelines.resources import MarketSourceResource
from sofia_pipelines.warehouse import read_window, replace_rows
from sofia_runtime.exchange.live import env_names
from sofia_runtime.schemas import FEE_TABLE, MARKETS, TAX_RULES, WITHDRAWAL_FEES
from sofia_runtime.tax import rules_from_config

GROUP = "fees"


def _write(warehouse: DuckDBResource, schema, df: pl.DataFrame, **extra) -> dg.MaterializeResult:
    with warehouse.get_connection() as conn:
        replace_rows(conn, "analytics", schema, df)
    return dg.MaterializeResult(metadata={"dagster/row_count": dg.MetadataValue.int(df.height),
                                          "preview": preview(df, 12), **extra})


@dg.asset(group_name=GROUP, kinds={"duckdb", "yaml", "ccxt"},
          deps=[dg.AssetKey(["raw", t]) for t in RAW_WITH_MARKETS],
          description="Precision and limits for every venue and symbol in raw.* (candles, books, trades, funding): "
                      "from a ccxt load_markets() dump in the source folder, else config/markets.yaml, else inferred "
                      "from the data's price and amount increments; `source` names which. With no raw data yet, "
                      "config/markets.yaml's markets.")
def markets(warehouse: DuckDBResource, market_source: MarketSourceResource) -> dg.MaterializeResult:
    configured = markets_frame(load_yaml("markets.yaml"))
    root = getattr(market_source.get(), "root", None)
    dumps, notes = find_market_dumps(root)
    with warehouse.get_connection() as conn:
        observed = observed_markets(conn)
        if not observed.is_empty():
            found, unresolved = resolve_markets(observed, dumps, configured,
                                                lambda rest: inferred_markets(rest, *observed_values(conn, rest)))
    if observed.is_empty():
        return _write(warehouse, MARKETS, configured,
                      note="no market in raw.* yet: config/markets.yaml's markets as they are")
    by_source = found.group_by("source").len().sort("source")
    extra = {"resolved_by": dg.MetadataValue.md("\n".join(f"- {s}: {n}" for s, n in by_source.iter_rows())),
             "ccxt_dumps": ", ".join(str(p) for p, _ in dumps.values()) or "none in the source folder",
             "unresolved": ", ".join(f"{v} {s}" for v, s in unresolved.select("venue", "symbol").iter_rows())
                           or "none"}
    if notes:
        extra["dump_notes"] = "; ".join(notes)
    return _write(warehouse, MARKETS, found, **extra)


def api_keys(venue: str, env=os.environ) -> tuple[str | None, str | None]:
    """The venue's key and secret under the names the runtime reads (SOFIA_<VENUE>_API_KEY, SOFIA_<VENUE>_SECRET)."""
    return tuple(env.get(name) for name in env_names(venue))


def _keyed_exchanges() -> dict:
    """Exchanges with API keys in the environment, when the ccxt source is in use."""
    spec = os.environ.get("SOFIA_SOURCE", "")
    if not spec.startswith("ccxt:"):
        return {}
    import ccxt

    out = {}
    for venue in spec.split(":", 1)[1].split(","):
        key, secret = api_keys(venue)
        if key and secret:
            out[venue] = getattr(ccxt, venue)({"apiKey": key, "secret": secret, "enableRateLimit": True})
    return out


@dg.asset(key="fee_table", group_name=GROUP, kinds={"duckdb", "ccxt"}, deps=[markets],
          description="Maker/taker per venue, symbol and tier, effective-dated; the desk's tier is `selected`. "
                      "config/fees.yaml overrides fees fetched with keys, which override ccxt's static schedules, "
                      "which override the file's `default` (source `default (no schedule known)`).")
def fee_table_asset(warehouse: DuckDBResource) -> dg.MaterializeResult:
    with warehouse.get_connection() as conn:
        market_rows = read_window(conn, "analytics", MARKETS)
    df = fee_table(market_rows, load_yaml("fees.yaml"), fetch_fees_with_keys(_keyed_exchanges()))
    if df.is_empty():
        return _write(warehouse, FEE_TABLE, df, note="no market in the markets table: no fees to give")
    selected = df.filter(pl.col("selected"))
    return _write(warehouse, FEE_TABLE, df, taker_max_bps=float(selected["taker"].max() * 1e4),
                  maker_min_bps=float(selected["maker"].min() * 1e4),
                  sources=", ".join(sorted(df["source"].unique().to_list())))


@dg.asset(key="withdrawal_fees", group_name=GROUP, kinds={"duckdb", "yaml"},
          description="Withdrawal fee per venue, asset and network (config/fees.yaml).")
def withdrawal_fees_asset(warehouse: DuckDBResource) -> dg.MaterializeResult:
    return _write(warehouse, WITHDRAWAL_FEES, withdrawal_fees(load_yaml("fees.yaml")))


@dg.asset(group_name=GROUP, kinds={"duckdb", "yaml"},
          description="Turkish tax rules as effective-dated parameters (config/tax_rules.yaml); proposed rules "
                      "are off unless switched on with a start date.")
def tax_rules(warehouse: DuckDBResource) -> dg.MaterializeResult:
    rules = rules_from_config(load_yaml("tax_rules.yaml"))
    df = pl.DataFrame([{"rule_id": r.rule_id, "kind": r.kind, "rate": float(r.rate), "valid_from": r.valid_from,
                        "valid_to": r.valid_to, "status": r.status, "enabled": r.enabled, "source": r.source}
                       for r in rules], schema_overrides={"valid_to": pl.Date})
    return _write(warehouse, TAX_RULES, df, proposed_enabled=any(r.enabled and r.status == "proposed" for r in rules))
