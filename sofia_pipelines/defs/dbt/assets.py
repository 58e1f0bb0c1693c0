"""dbt models as daily-partitioned assets; dbt tests run as their asset checks."""

import json
import os
import sys
from collections.abc import Mapping, Sequence
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets
from dagster_duckdb import DuckDBResource
from packaging import version

from sofia_pipelines.defs.dbt.project import dbt_project, prepare
from sofia_pipelines.partitions import daily_partitions

prepare()


class SofiaTranslator(DagsterDbtTranslator):
    """Raw sources keep dbt's default keys (raw/<table>, the raw assets'); models are grouped by folder."""

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        if dbt_resource_props["resource_type"] == "model":
            return dbt_resource_props["fqn"][1]  # staging | marts
        return super().get_group_name(dbt_resource_props)


class SofiaDbtCliResource(DbtCliResource):
    """The venv's own dbt, run without what DbtCliResource does in this process before each invocation and the
    assets do not use: a `dbt --version` subprocess (a whole dbt start-up) to learn the version, and an in-process
    dbt adapter with every macro parsed, there for `fetch_row_counts`/`fetch_column_metadata` (the row counts
    come from the warehouse below)."""

    @cached_property
    def _cli_version(self) -> version.Version:
        # the executable is the venv's (see `defs`), so it is the installed dbt-core
        return version.parse(metadata.version("dbt-core"))

    def _initialize_dbt_core_adapter(self, args: Sequence[str]) -> None:
        return None


@dbt_assets(manifest=dbt_project.manifest_path, partitions_def=daily_partitions,
            dagster_dbt_translator=SofiaTranslator(), name="sofia_dbt")
def sofia_dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: DuckDBResource):
    window = context.partition_time_window
    dbt_vars = {"min_date": window.start.strftime("%Y-%m-%d %H:%M:%S"),
                "max_date": window.end.strftime("%Y-%m-%d %H:%M:%S")}
    # dbt opens the same DuckDB file the resource names (profiles.yml reads SOFIA_WAREHOUSE); the variable is
    # restored afterwards so nothing else in this process picks up this run's warehouse
    before = os.environ.get("SOFIA_WAREHOUSE")
    os.environ["SOFIA_WAREHOUSE"] = warehouse.database  # an absolute path or md:<db> (resources.warehouse_database)
    try:
        invocation = dbt.cli(["build", "--vars", json.dumps(dbt_vars)], context=context, raise_on_error=False)
        events = list(invocation.stream())
    finally:
        if before is None:
            os.environ.pop("SOFIA_WAREHOUSE", None)
        else:
            os.environ["SOFIA_WAREHOUSE"] = before
    # dbt has exited and released the file: count each mart's rows in the window for the UI
    with warehouse.get_connection() as conn:
        for event in events:
            if isinstance(event, dg.Output) and context.asset_key_for_output(event.output_name).path[0] == "marts":
                table = ".".join(context.asset_key_for_output(event.output_name).path)
                rows = conn.execute(f"SELECT count(*) FROM {table} WHERE hour >= ? AND hour < ?",
                                    [window.start.replace(tzinfo=None), window.end.replace(tzinfo=None)]).fetchall()
                event = event.with_metadata({**event.metadata, "dagster/row_count": dg.MetadataValue.int(rows[0][0])})
            yield event
    if not invocation.is_successful():
        raise invocation.get_error()


# A module with a Definitions object contributes only what it names. The venv's dbt runs whether or not
# the venv is on PATH.
defs = dg.Definitions(assets=[sofia_dbt_models], resources={"dbt": SofiaDbtCliResource(project_dir=dbt_project,
                                                       dbt_executable=str(Path(sys.executable).with_name("dbt")))})
