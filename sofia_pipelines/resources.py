"""Shared resources: the DuckDB warehouse and the market-data source.

Storage stays behind `warehouse` so that moving it is configuration: `SOFIA_WAREHOUSE` names a DuckDB file
(default `<data>/warehouse.duckdb`) or a MotherDuck database (`md:<db>`); see docs/scaling.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from sofia_runtime import paths

MOTHERDUCK_PREFIX = "md:"


def is_motherduck(database: str) -> bool:
    return database.startswith(MOTHERDUCK_PREFIX)


def warehouse_database(value: str | None = None) -> str:
    """What DuckDB connects to, from `value` or `SOFIA_WAREHOUSE`: an absolute file path, or `md:<db>`.

    A MotherDuck token is only ever read from the environment (`motherduck_token` / `MOTHERDUCK_TOKEN`, which
    DuckDB's MotherDuck extension picks up itself), so it never lands in the resource's config shown in the UI.
    """
    raw = os.environ.get("SOFIA_WAREHOUSE", "") if value is None else value
    spec = raw.strip()
    if not spec:
        return str(paths.warehouse_path())
    if is_motherduck(spec):
        if not (os.environ.get("motherduck_token") or os.environ.get("MOTHERDUCK_TOKEN")):
            raise ValueError(f"SOFIA_WAREHOUSE={spec}: a MotherDuck warehouse needs a token in the environment "
                             "(MOTHERDUCK_TOKEN or motherduck_token); none is set")
        return spec
    if "://" in spec:
        raise ValueError(f"SOFIA_WAREHOUSE={spec}: DuckDB cannot write a database file on object storage; use a "
                         "local path or md:<db> (MotherDuck), and publish Parquet to object storage instead "
                         "(docs/scaling.md)")
    return str(Path(spec).expanduser().resolve())


def warehouse_resource() -> DuckDBResource:
    database = warehouse_database()
    if not is_motherduck(database):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    return DuckDBResource(database=database)


class MarketSourceResource(dg.ConfigurableResource):
    """Which market-data source feeds the raw assets: `simulated` (default), `files:DIR` or
    `ccxt:VENUE[,VENUE...]`; `SOFIA_SOURCE` sets it."""

    spec: str = "simulated"

    def get(self):
        from sofia_pipelines.defs.market_data.sources import source_from_spec

        return source_from_spec(self.spec)


def market_source_resource() -> MarketSourceResource:
    return MarketSourceResource(spec=os.environ.get("SOFIA_SOURCE", "simulated"))
