"""The Great Expectations checks on raw tables: each rule fails on a crafted bad frame, naming the
table, the expectation, the count and example rows; and a failing check blocks what is downstream."""

from datetime import datetime

import dagster as dg
import polars as pl
import pytest
from dagster_duckdb import DuckDBResource

from sofia_pipelines.defs.market_data.checks import raw_checks
from sofia_pipelines.defs.market_data.expectations import validate
from sofia_pipelines.defs.market_data.sources import check_raw_frame, series_order
from sofia_runtime.simulator import MarketSimulator
from sofia_pipelines.partitions import daily_partitions, partition_window
from sofia_pipelines.warehouse import replace_window
from sofia_runtime.schemas import RAW_TABLES, SchemaError

DAY = "2026-10-27"
START, END = partition_window(DAY)


@pytest.fixture(scope="module")
def good() -> dict[str, pl.DataFrame]:
    day = MarketSimulator(days=7).day(START.date())
    return {t: df.head(500) for t, df in day.items()}


def _set(df: pl.DataFrame, row: int, column: str, value) -> pl.DataFrame:
    return df.with_columns(pl.when(pl.int_range(pl.len()) == row).then(pl.lit(value, dtype=df[column].dtype))
                           .otherwise(pl.col(column)).alias(column))


def test_valid_partitions_pass(good):
    for table, df in good.items():
        evaluated, failures = validate(table, df, START, END)
        assert evaluated > 5 and failures == [], (table, failures)


# times outside the partition: only a stored partition has bounds, so the suite alone checks these
OUTSIDE_PARTITION = [
    ("trades", lambda d: _set(d, 0, "ts", datetime(2026, 10, 28, 0, 0)), "expect_column_values_to_be_between"),
    # beyond datetime64[ns]: compared value by value rather than vectorized, and still caught
    ("trades", lambda d: _set(d, 0, "ts", datetime(3000, 1, 1)), "expect_column_values_to_be_between"),
]
BREAKAGES = [
    ("candles", lambda d: _set(d, 3, "high", 1.0), "expect_column_pair_values_a_to_be_greater_than_b"),
    ("candles", lambda d: _set(d, 4, "low", 1e9), "expect_column_pair_values_a_to_be_greater_than_b"),
    ("candles", lambda d: _set(d, 2, "close", float("nan")), "expect_column_values_to_not_be_null"),
    ("candles", lambda d: _set(d, 2, "open", float("inf")), "expect_column_values_to_be_between"),
    ("candles", lambda d: _set(d, 5, "open", -3.0), "expect_column_values_to_be_between"),
    ("books", lambda d: _set(d, 7, "ask", 1.0), "expect_column_pair_values_a_to_be_greater_than_b"),
    ("books", lambda d: _set(d, 1, "venue", None), "expect_column_values_to_not_be_null"),
    ("books", lambda d: pl.concat([d, d.head(2)]), "expect_compound_columns_to_be_unique"),
    ("funding", lambda d: _set(d, 0, "funding_rate", 0.5), "expect_column_values_to_be_between"),
    ("latency", lambda d: _set(_set(d, 0, "ok", True), 0, "latency_ms", -5.0), "expect_column_values_to_be_between"),
    ("fx", lambda d: d.drop("rate").with_columns(pl.lit(1.0).alias("price")), "expect_table_columns_to_match_set"),
    ("candles", lambda d: _set(d, 6, "volume", -1.0), "expect_column_values_to_be_between"),
    ("candles", lambda d: _set(d, 6, "open", 2e12), "expect_column_values_to_be_between"),
    ("candles", lambda d: _set(d, 2, "timeframe", "minute"), "expect_column_values_to_match_regex"),
    ("trades", lambda d: _set(d, 3, "side", "short"), "expect_column_values_to_be_in_set"),
    ("trades", lambda d: _set(d, 3, "amount", 0.0), "expect_column_values_to_be_between"),
]


@pytest.mark.parametrize("table, breakage, expectation", BREAKAGES + OUTSIDE_PARTITION)
def test_each_rule_fails_with_table_expectation_count_and_examples(good, table, breakage, expectation):
    _, failures = validate(table, breakage(good[table]), START, END)
    assert expectation in [f.expectation for f in failures]
    failure = next(f for f in failures if f.expectation == expectation)
    message = failure.describe(table)
    assert message.startswith(f"raw.{table}: {expectation}(")
    assert failure.examples
    if expectation != "expect_table_columns_to_match_set":
        assert failure.count >= 1 and f"failed for {failure.count} row(s)" in message


@pytest.mark.parametrize("table, breakage, expectation", BREAKAGES)
def test_load_rules_refuse_what_the_suite_fails(good, table, breakage, expectation):
    # one definition: a frame Great Expectations would fail is refused by check_raw_frame before it is written
    with pytest.raises(SchemaError):
        check_raw_frame(table, breakage(good[table]), f"test {table}")


def test_load_rules_pass_what_the_suite_passes(good):
    for table, df in good.items():
        assert check_raw_frame(table, df.sort(series_order(RAW_TABLES[table])), table).height == df.height


def test_failing_check_blocks_downstream(data_dir, resources):
    bad = MarketSimulator(days=7).day(START.date())["candles"].head(100)
    bad = _set(bad, 10, "high", 0.5)

    @dg.asset(key=["raw", "candles"], partitions_def=daily_partitions)
    def stand_in_candles(context, warehouse: DuckDBResource):
        with warehouse.get_connection() as conn:
            replace_window(conn, "raw", RAW_TABLES["candles"], bad, START, END)

    @dg.asset(deps=[stand_in_candles], partitions_def=daily_partitions)
    def downstream():
        return 1

    check = next(c for c in raw_checks if next(iter(c.check_keys)).asset_key == dg.AssetKey(["raw", "candles"]))
    result = dg.materialize([stand_in_candles, downstream, check], resources=resources, partition_key=DAY,
                            raise_on_error=False)
    evaluation = result.get_asset_check_evaluations()[0]
    assert not evaluation.passed
    assert "raw.candles: expect_column_pair_values_a_to_be_greater_than_b" in evaluation.description
    assert "failed for 1 row(s)" in evaluation.description
    materialized = {m.asset_key for m in result.get_asset_materialization_events()}
    assert dg.AssetKey("downstream") not in materialized
