"""Shared resources: the DuckDB warehouse and the market-data source.

Storage stays behind `warehouse` so that moving it (another DuckDB file, MotherDuck) is configuration.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from sofia_runtime import paths


def warehouse_resource() -> DuckDBResource:
    database = Path(os.environ.get("SOFIA_WAREHOUSE", str(paths.warehouse_path())))
    database.parent.mkdir(parents=True, exist_ok=True)
    return DuckDBResource(database=str(database))


class MarketSourceResource(dg.ConfigurableResource):
    """Which market-data source feeds the raw assets: `simulated` (default), `files:DIR` or
    `ccxt:VENUE[,VENUE...]`; `SOFIA_SOURCE` sets it."""

    spec: str = "simulated"

    def get(self):
        from sofia_pipelines.defs.market_data.sources import source_from_spec

        return source_from_spec(self.spec)


def market_source_resource() -> MarketSourceResource:
    return MarketSourceResource(spec=os.environ.get("SOFIA_SOURCE", "simulated"))
