"""Checks that guard money decisions on fees, markets and tax rules (blocking), and a WARN check naming the
markets of the data that have no precision at all."""

from datetime import date

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from sofia_pipelines.defs.fees.markets import RAW_WITH_MARKETS, observed_markets
from sofia_pipelines.warehouse import read_window
from sofia_runtime.schemas import FEE_TABLE, MARKETS, TAX_RULES

MAX_FEE = 0.01


def _read(warehouse: DuckDBResource, schema) -> pl.DataFrame:
    with warehouse.get_connection() as conn:
        return read_window(conn, "analytics", schema)


@dg.asset_check(asset="fee_table", blocking=True, description="Every fee is within [0, 1 %].")
def fees_within_bounds(warehouse: DuckDBResource) -> dg.AssetCheckResult:
    fees = _read(warehouse, FEE_TABLE)
    bad = fees.filter(~pl.col("maker").is_between(0, MAX_FEE) | ~pl.col("taker").is_between(0, MAX_FEE))
    return dg.AssetCheckResult(passed=bad.is_empty(), metadata={"out_of_bounds": bad.height},
                               description=None if bad.is_empty() else f"fees outside [0, 1 %]: {bad.head(3).rows()}")


def markets_without_one_fee(markets: pl.DataFrame, fees: pl.DataFrame, on: date) -> pl.DataFrame:
    """Markets of the markets table without exactly one selected fee in force on `on`, with the count found."""
    in_force = fees.filter(pl.col("selected") & (pl.col("valid_from") <= on)
                           & (pl.col("valid_to").is_null() | (pl.col("valid_to") > on)))
    counts = markets.select("venue", "symbol").join(in_force.group_by("venue", "symbol").len(),
                                                    on=["venue", "symbol"], how="left")
    return counts.filter(pl.col("len").is_null() | (pl.col("len") != 1))


@dg.asset_check(asset="fee_table", blocking=True, additional_deps=["markets"],
                description="Every market of the markets table has exactly one selected fee tier in force today.")
def every_market_has_a_fee(warehouse: DuckDBResource) -> dg.AssetCheckResult:
    markets = _read(warehouse, MARKETS)
    bad = markets_without_one_fee(markets, _read(warehouse, FEE_TABLE), date.today())
    return dg.AssetCheckResult(passed=bad.is_empty(), metadata={"markets": markets.height, "without_one_fee": bad.height},
                               description=None if bad.is_empty() else f"no single selected fee: {bad.head(5).rows()}")


@dg.asset_check(asset="markets", blocking=False, additional_deps=[dg.AssetKey(["raw", t]) for t in RAW_WITH_MARKETS],
                description="Every venue and symbol in raw.* has precision and limits (WARN: the ones that have none "
                            "are left out of everything that needs a tick size).")
def every_observed_market_resolved(warehouse: DuckDBResource) -> dg.AssetCheckResult:
    with warehouse.get_connection() as conn:
        observed = observed_markets(conn)
        markets = read_window(conn, "analytics", MARKETS)
    missing = observed.join(markets, on=["venue", "symbol"], how="anti")
    return dg.AssetCheckResult(passed=missing.is_empty(), severity=dg.AssetCheckSeverity.WARN,
                               metadata={"observed": observed.height, "unresolved": missing.height},
                               description=None if missing.is_empty() else
                               f"no precision for {missing.select('venue', 'symbol').head(10).rows()}: no ccxt dump, "
                               "no config/markets.yaml row and no prices to infer a tick from")


@dg.asset_check(asset="tax_rules", blocking=True,
                description="No rule id has overlapping validity; proposed rules are off unless switched on.")
def tax_rules_well_formed(warehouse: DuckDBResource) -> dg.AssetCheckResult:
    rules = _read(warehouse, TAX_RULES).sort("rule_id", "valid_from")
    overlap = rules.with_columns(pl.col("valid_to").shift().over("rule_id").alias("prev_to"),
                                 pl.col("rule_id").is_duplicated().alias("dup")).filter(
        pl.col("dup") & (pl.col("prev_to").is_null() | (pl.col("prev_to") > pl.col("valid_from"))))
    bad_rate = rules.filter(~pl.col("rate").is_between(0, 1))
    problems = [f"overlapping validity for {overlap['rule_id'].to_list()}"] if overlap.height else []
    problems += [f"rate outside [0, 1] for {bad_rate['rule_id'].to_list()}"] if bad_rate.height else []
    return dg.AssetCheckResult(passed=not problems, description="; ".join(problems) or None,
                               metadata={"rules": rules.height,
                                         "proposed_enabled": rules.filter((pl.col("status") == "proposed")
                                                                          & pl.col("enabled")).height})
