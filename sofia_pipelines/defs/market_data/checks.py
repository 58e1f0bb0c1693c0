"""Blocking data checks on every raw asset, run by Great Expectations on the partition just written."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from sofia_pipelines.defs.market_data.expectations import validate
from sofia_pipelines.partitions import daily_partitions, partition_window
from sofia_pipelines.warehouse import read_window
from sofia_runtime.schemas import RAW_TABLES


def _raw_check(table: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=dg.AssetKey(["raw", table]), name="great_expectations", blocking=True,
                    partitions_def=daily_partitions,
                    description=f"raw.{table}: schema, keys present and unique, prices finite and positive, "
                                "times inside the partition and the table's own rules (Great Expectations).")
    def _check(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource) -> dg.AssetCheckResult:
        start, end = partition_window(context.partition_key)
        with warehouse.get_connection() as conn:
            df = read_window(conn, "raw", RAW_TABLES[table], start, end)
        evaluated, failures = validate(table, df, start, end)
        metadata = {"rows": dg.MetadataValue.int(df.height), "expectations": dg.MetadataValue.int(evaluated),
                    "failed": dg.MetadataValue.int(len(failures))}
        if failures:
            metadata["failures"] = dg.MetadataValue.md("\n".join(f"- {f.describe(table)}" for f in failures))
        return dg.AssetCheckResult(passed=not failures, metadata=metadata,
                                   description=failures[0].describe(table) if failures else None)

    return _check


raw_checks = [_raw_check(t) for t in RAW_TABLES]
