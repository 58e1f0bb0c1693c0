"""Great Expectations suites for the raw tables, defined in code, and their evaluation on a frame.

GE is imported on first use (it takes seconds to import); one ephemeral context serves the process.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from sofia_pipelines.defs.market_data.sources import (FUNDING_RATE_BOUND, LATENCY_CEILING_MS, NON_NEGATIVE,
                                                      ORDERED_PAIRS, PRICE_CEILING, PRICE_COLUMNS, TIMEFRAME_PATTERN,
                                                      TRADE_SIDES)
from sofia_runtime.schemas import RAW_TABLES

# The rules are the load rules of check_raw_frame (sources.py): one definition, checked here on what is stored.


@dataclass(frozen=True)
class Failure:
    expectation: str
    columns: str
    count: int
    examples: list[dict]

    def describe(self, table: str) -> str:
        return f"raw.{table}: {self.expectation}({self.columns}) failed for {self.count} row(s); e.g. {self.examples}"


def suite_for(table: str, start: datetime, end: datetime) -> list:
    """The expectations a raw table's partition [start, end) must meet."""
    import great_expectations as gx

    e = gx.expectations
    schema = RAW_TABLES[table]
    out = [e.ExpectTableColumnsToMatchSet(column_set=list(schema.columns), exact_match=True)]
    out += [e.ExpectColumnValuesToNotBeNull(column=k) for k in schema.keys]
    out.append(e.ExpectCompoundColumnsToBeUnique(column_list=list(schema.keys)))
    out.append(e.ExpectColumnValuesToBeBetween(column="ts", min_value=start, max_value=end, strict_max=True))
    for col in PRICE_COLUMNS.get(table, ()):
        out.append(e.ExpectColumnValuesToNotBeNull(column=col))
        out.append(e.ExpectColumnValuesToBeBetween(column=col, min_value=0, max_value=PRICE_CEILING, strict_min=True,
                                                   strict_max=True))
    for a, b, or_equal in ORDERED_PAIRS.get(table, ()):
        out.append(e.ExpectColumnPairValuesAToBeGreaterThanB(column_A=a, column_B=b, or_equal=or_equal))
    for col in NON_NEGATIVE.get(table, ()):
        out.append(e.ExpectColumnValuesToNotBeNull(column=col))
        out.append(e.ExpectColumnValuesToBeBetween(column=col, min_value=0))
    if table == "candles":
        out.append(e.ExpectColumnValuesToMatchRegex(column="timeframe", regex=TIMEFRAME_PATTERN))
    if table == "trades":
        out.append(e.ExpectColumnValuesToBeInSet(column="side", value_set=list(TRADE_SIDES)))
    if table == "funding":
        out.append(e.ExpectColumnValuesToNotBeNull(column="funding_rate"))
        out.append(e.ExpectColumnValuesToBeBetween(column="funding_rate", min_value=-FUNDING_RATE_BOUND,
                                                   max_value=FUNDING_RATE_BOUND))
    if table == "latency":
        out.append(e.ExpectColumnValuesToBeBetween(column="latency_ms", min_value=0, max_value=LATENCY_CEILING_MS,
                                                   row_condition='ok==True', condition_parser="pandas"))
    return out


@functools.cache
def _batch_definition():
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("sofia").add_dataframe_asset("raw_partition")
    return context, asset.add_batch_definition_whole_dataframe("whole")


# datetime64[ns] holds these; GE compares an ns column with vectorized pandas, any other unit value by value
# in Python (seconds for a day of books)
NS_RANGE = (datetime(1678, 1, 1), datetime(2262, 1, 1))


def _pandas(df: pl.DataFrame):
    """The frame as pandas, naive datetime columns as datetime64[ns] when every value fits."""
    naive = [c for c, t in df.schema.items()
             if isinstance(t, pl.Datetime) and t.time_zone is None and t.time_unit != "ns"]
    if naive and df.height:
        bounds = df.select(*(pl.col(c).min().alias(f"{c}_min") for c in naive),
                           *(pl.col(c).max().alias(f"{c}_max") for c in naive)).row(0, named=True)
        naive = [c for c in naive if (bounds[f"{c}_min"] is None or bounds[f"{c}_min"] > NS_RANGE[0])
                 and (bounds[f"{c}_max"] is None or bounds[f"{c}_max"] < NS_RANGE[1])]
        df = df.with_columns(pl.col(c).dt.cast_time_unit("ns") for c in naive)
    return df.to_pandas()


def validate(table: str, df: pl.DataFrame, start: datetime, end: datetime) -> tuple[int, list[Failure]]:
    """Run the table's suite on one partition; returns (expectations evaluated, failures)."""
    import great_expectations as gx

    context, batch_definition = _batch_definition()
    suite = gx.ExpectationSuite(name=f"raw_{table}", expectations=suite_for(table, start, end))
    pdf = _pandas(df)
    result = batch_definition.get_batch(batch_parameters={"dataframe": pdf}).validate(
        suite, result_format={"result_format": "COMPLETE", "unexpected_index_column_names": []})
    failures = []
    for r in result.results:
        if r.success:
            continue
        cfg = r.expectation_config
        kwargs = cfg.kwargs
        columns = ", ".join(str(kwargs[k]) for k in ("column", "column_A", "column_B", "column_list", "column_set")
                            if k in kwargs)
        index = r.result.get("unexpected_index_list") or []
        rows = [i if isinstance(i, int) else None for i in index[:3]]
        examples = [{k: str(v) for k, v in pdf.iloc[i].to_dict().items()} for i in rows if i is not None]
        count = r.result.get("unexpected_count")
        if count is None:  # table-level expectations (the column set) have no row count
            count = 0
            examples = [{"observed": str(r.result.get("observed_value"))}]
        failures.append(Failure(cfg.type, columns, int(count), examples))
    return len(result.results), failures
