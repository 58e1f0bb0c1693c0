"""The attribution's accounting check (blocking): every row's components add up to its net, exactly."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from sofia_pipelines.defs.attribution.compute import sum_mismatches
from sofia_pipelines.warehouse import read_window
from sofia_runtime.schemas import PROFIT_ATTRIBUTION


@dg.asset_check(asset="profit_attribution", blocking=True,
                description="edge + slippage + inventory MTM + funding + fees + transaction tax + profit tax = net, "
                            "exactly (DECIMAL), on every row and in total.")
def components_sum_to_net(warehouse: DuckDBResource) -> dg.AssetCheckResult:
    with warehouse.get_connection() as conn:
        attribution = read_window(conn, "analytics", PROFIT_ATTRIBUTION)
    bad, components, net = sum_mismatches(attribution)
    problems = bad[:5] + ([f"total: components {components} != net {net}"] if components != net else [])
    return dg.AssetCheckResult(passed=not problems, description="; ".join(problems) or None,
                               metadata={"rows": attribution.height, "rows_not_summing": len(bad),
                                         "total_components_usd": str(components), "total_net_usd": str(net)})
