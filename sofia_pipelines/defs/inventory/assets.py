"""Inventory targets and the rebalance plan (daily-partitioned)."""

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from sofia_pipelines.defs.fees.compute import load_yaml
from sofia_pipelines.defs.inventory.compute import REBALANCE_PLAN, inventory_targets, rebalance_plan
from sofia_pipelines.market_inputs import gaps_check, gaps_metadata, write_gaps
from sofia_pipelines.metadata import preview
from sofia_pipelines.partitions import daily_partitions, partition_window
from sofia_pipelines.warehouse import read_day, read_window, replace_day, table_exists
from sofia_runtime.schemas import INVENTORY_TARGETS, RAW_TABLES, ROUTE_TABLE, WITHDRAWAL_FEES

GROUP = "inventory"


def current_balances(conn, config: dict) -> tuple[pl.DataFrame, str]:
    """The runtime's latest journaled balances when the audit assets have them, else the configured start."""
    if table_exists(conn, "audit", "balances"):
        latest = conn.sql("SELECT venue, asset, arg_max(total, ts) AS total FROM audit.balances GROUP BY ALL").pl()
        if latest.height:
            return latest, "runtime journal (audit.balances)"
    rows = [{"venue": v, "asset": a, "total": float(x)} for v, assets in config["balances"].items()
            for a, x in assets.items()]
    return pl.DataFrame(rows), "config/inventory.yaml"


def usd_prices(conn, start, end) -> dict[str, float]:
    """USD per unit of each base quoted in USDT in [start, end): the last book mid of its spot pair, else the last
    candle close of the spot pair, else of its USDT-margined perp. An asset absent here has no USD price."""
    books = read_window(conn, "raw", RAW_TABLES["books"], start, end)
    candles = read_window(conn, "raw", RAW_TABLES["candles"], start, end)
    fx = read_window(conn, "raw", RAW_TABLES["fx"], start, end)
    prices: dict[str, float] = {}
    closes = candles.sort("ts").group_by("symbol").agg(pl.col("close").last())
    for suffix in ("/USDT:USDT", "/USDT"):  # later wins: spot over perp
        for symbol, close in closes.filter(pl.col("symbol").str.ends_with(suffix)).iter_rows():
            prices[symbol.split("/")[0]] = close
    last = books.filter(pl.col("symbol").str.ends_with("/USDT")).sort("ts").group_by("symbol").last()
    prices.update({s.split("/")[0]: (b + a) / 2 for s, b, a in last.select("symbol", "bid", "ask").iter_rows()})
    prices["USDT"] = 1.0
    if fx.height:
        prices["TRY"] = 1.0 / fx.sort("ts")["rate"][-1]
    return prices


def day_assets(conn, start, end) -> pl.DataFrame:
    """(venue, asset) for every base and quote of a symbol with candles, books or trades in [start, end)."""
    pairs = [conn.sql(f"SELECT DISTINCT venue, symbol FROM raw.{t} WHERE ts >= ? AND ts < ?", params=[start, end]).pl()
             for t in ("candles", "books", "trades") if table_exists(conn, "raw", t)]
    pairs = [p for p in pairs if p.height]
    if not pairs:
        return pl.DataFrame(schema={"venue": pl.Utf8, "asset": pl.Utf8})
    df = pl.concat(pairs).unique()
    return df.select("venue", pl.concat_list(pl.col("symbol").str.split("/").list.first(),
                                             pl.col("symbol").str.split("/").list.last().str.split(":").list.first())
                     .alias("asset")).explode("asset").unique().sort("venue", "asset")


def held_with_data(balances: pl.DataFrame, traded: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The balances of (venue, asset) pairs the day's market data has, and those held without any (not targeted:
    nothing that day trades them there, which is out of scope rather than a missing input)."""
    kept = balances.join(traded, on=["venue", "asset"], how="semi")
    return kept, balances.join(traded, on=["venue", "asset"], how="anti").sort("venue", "asset")


@dg.asset(key="inventory_targets", partitions_def=daily_partitions, group_name=GROUP, kinds={"duckdb", "polars"},
          deps=[dg.AssetKey("route_table"), dg.AssetKey(["raw", "candles"]), dg.AssetKey(["raw", "books"]),
                dg.AssetKey(["raw", "trades"])],
          description="Target balance per venue and asset: each asset's total split by the venues' share of routed "
                      "flow, with a per-venue floor as buffer and a tolerance band; only for the venues and assets "
                      "the day's market data has (a balance held elsewhere is listed, not targeted).")
def inventory_targets_asset(context: dg.AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
    config = load_yaml("inventory.yaml")
    start, end = partition_window(context.partition_key)
    day = start.date()
    with warehouse.get_connection() as conn:
        balances, origin = current_balances(conn, config)
        held, untargeted = held_with_data(balances, day_assets(conn, start, end))
        targets = inventory_targets(read_day(conn, "analytics", ROUTE_TABLE, day), held,
                                    config["min_share"], config["tolerance"])
        replace_day(conn, "analytics", INVENTORY_TARGETS, targets, day)
        gap_table = write_gaps(conn, "inventory_targets", day, [] if targets.height else [
            ("*", "*", "no balance of an asset the day's market data trades on its venue")])
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(targets.height), "balances_from": origin,
        "preview": preview(targets, 15), "held_without_market_data": preview(untargeted, 30),
        **gaps_metadata(gap_table)})


inventory_targets_inputs_complete = gaps_check("inventory_targets")


@dg.asset(key="rebalance_plan", partitions_def=daily_partitions, group_name=GROUP, kinds={"duckdb", "scipy"},
          deps=[dg.AssetKey("inventory_targets"), dg.AssetKey("withdrawal_fees")],
          description="The cheapest set of transfers (withdrawal fees by network) that brings every venue within "
                      "its target band, solved as a mixed-integer LP with scipy's linprog; infeasible assets are "
                      "reported with the reason. Plans only the day's targets (venues and assets with market data).")
def rebalance_plan_asset(context: dg.AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
    config = load_yaml("inventory.yaml")
    start, end = partition_window(context.partition_key)
    with warehouse.get_connection() as conn:
        balances, origin = current_balances(conn, config)
        prices = usd_prices(conn, start, end)
        targets = read_day(conn, "analytics", INVENTORY_TARGETS, start.date())
        targets_rows = targets.height
        plan = rebalance_plan(targets, balances, read_window(conn, "analytics", WITHDRAWAL_FEES), prices)
        replace_day(conn, "analytics", REBALANCE_PLAN, plan, start.date())
        gaps = write_gaps(conn, "rebalance_plan", start.date(), [] if targets_rows else [
            ("*", "*", "nothing planned: no inventory target for the day (no balance of an asset the day's market "
                       "data trades on its venue)")])
    planned = plan.filter(pl.col("status") == "planned")
    unpriced = sorted(set(planned["asset"]) - set(prices))
    cost = sum(f * prices[a] for a, f in planned.select("asset", "fee").iter_rows() if a in prices)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(plan.height), "transfers": planned.height,
        "total_fee_usd": round(cost, 2) if not unpriced else f"{cost:.2f} + fees in {unpriced} (no USD price)",
        "infeasible_assets": plan.filter(pl.col("status") == "infeasible").height,
        "targets": targets_rows, "balances_from": origin, "plan": preview(plan, 20),
        **gaps_metadata(gaps)})


rebalance_plan_inputs_complete = gaps_check("rebalance_plan")


@dg.asset_check(asset="rebalance_plan", blocking=True, partitions_def=daily_partitions,
                additional_deps=["inventory_targets"],
                description="Applying the planned transfers puts every venue of every feasible asset within its band.")
def plan_meets_targets(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource) -> dg.AssetCheckResult:
    day = partition_window(context.partition_key)[0].date()
    with warehouse.get_connection() as conn:
        plan = read_day(conn, "analytics", REBALANCE_PLAN, day)
        targets = read_day(conn, "analytics", INVENTORY_TARGETS, day)
        balances, _ = current_balances(conn, load_yaml("inventory.yaml"))
    planned = plan.filter(pl.col("status") == "planned")
    moves = pl.concat([
        planned.select("asset", pl.col("from_venue").alias("venue"), (-pl.col("amount")).alias("delta")),
        planned.select("asset", pl.col("to_venue").alias("venue"), (pl.col("amount") - pl.col("fee")).alias("delta"))])
    infeasible = plan.filter(pl.col("status") == "infeasible")["asset"].to_list()
    final = (targets.join(balances, on=["venue", "asset"], how="left")
             .join(moves.group_by("asset", "venue").agg(pl.col("delta").sum()), on=["asset", "venue"], how="left")
             .with_columns((pl.col("total").fill_null(0) + pl.col("delta").fill_null(0)).alias("final"))
             .filter(~pl.col("asset").is_in(infeasible)))
    tol = 1e-6
    bad = final.filter((pl.col("final") < pl.col("lower") - tol) | (pl.col("final") > pl.col("upper") + tol))
    return dg.AssetCheckResult(passed=bad.is_empty(), metadata={"outside_band": bad.height,
                                                                "infeasible_assets": str(infeasible)})
