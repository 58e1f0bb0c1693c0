"""The Sofia code location: every feature folder under `defs/` plus the shared resources."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster.components import load_defs

import sofia_pipelines.defs
from sofia_pipelines.resources import market_source_resource, warehouse_resource

defs = dg.Definitions.merge(
    load_defs(sofia_pipelines.defs, project_root=Path(__file__).resolve().parent.parent),
    dg.Definitions(
        resources={"warehouse": warehouse_resource(), "market_source": market_source_resource()},
        # DuckDB has one writer at a time, so steps run in one process by default.
        executor=dg.in_process_executor,
    ),
)
