"""What the decision analytics share about their inputs: estimates used where the tape lacks a measurement, and
how an analytic reports what it could not compute.

- Spread: measured from quotes/books (the liquidity mart), else estimated from candle highs and lows
  (`candle_spread_abdi_ranaldo`).
- Latency: recorded probes (raw.latency), else the tape's exchange-vs-local timestamps (`tape_latency_samples`).
- Gaps: each analytic writes the venues/symbols (or the whole day) it could not compute, with the reason, to
  analytics.analytic_gaps; `gaps_check` is its WARN-severity check, and blocking checks excuse exactly those.
"""


from datetime import date, datetime

import dagster as dg
import duckdb
import polars as pl
from dagster_duckdb import DuckDBResource

from sofia_pipelines.partitions import daily_partitions, partition_window
from sofia_pipelines.warehouse import replace_rows, table_exists
from sofia_runtime.schemas import TableSchema

ABDI_RANALDO = "abdi_ranaldo_2017"
SPREAD_FROM_BOOKS = "books"
LATENCY_FROM_PROBES = "probes"
LATENCY_FROM_TAPE = "tape_local_minus_exchange_ts"
ABSENT = "absent"
TIMEFRAME_SECONDS = {"1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200,
                     "4h": 14400, "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400}

ANALYTIC_GAPS = TableSchema(
    "analytic_gaps",
    {"asset": pl.Utf8, "day": pl.Date, "venue": pl.Utf8, "symbol": pl.Utf8, "reason": pl.Utf8},
    keys=("asset", "day", "venue", "symbol"), time_column=None,
    description="what an analytic could not compute for a day and why; venue/symbol '*' = all of them")


# --- candles ---------------------------------------------------------------------------------------------------

def finest_candles(candles: pl.DataFrame) -> pl.DataFrame:
    """Each venue-symbol's bars of its finest timeframe (raw.candles keeps every timeframe a source has; a
    table without a `timeframe` column, or a null one, holds 1-minute bars), with `bar_seconds`."""
    if "timeframe" not in candles.columns:
        candles = candles.with_columns(pl.lit("1m").alias("timeframe"))
    df = candles.with_columns(pl.col("timeframe").fill_null("1m")).with_columns(
        pl.col("timeframe").replace_strict(TIMEFRAME_SECONDS, default=None, return_dtype=pl.Int64).alias("bar_seconds"))
    df = df.filter(pl.col("bar_seconds").is_not_null())
    return df.filter(pl.col("bar_seconds") == pl.col("bar_seconds").min().over("venue", "symbol"))


def candle_spread_abdi_ranaldo(candles: pl.DataFrame, every: str | None = "1h") -> pl.DataFrame:
    """Effective spread per venue, symbol and `every` from candle close, high and low (Abdi & Ranaldo 2017, "A
    Simple Estimation of Bid-Ask Spreads from Daily Close, High, and Low Prices", RFS 30(12)):

        S^2 = 4 * E[(c_t - eta_t) * (c_t - eta_{t+1})],   eta_t = (h_t + l_t) / 2,

    with c, h, l log prices of consecutive bars; S = sqrt(max(S^2, 0)) as the authors set negative
    estimates to zero. Bars with no volume carry no range and are left out, and a pair counts only when its two
    bars are adjacent on the grid. Returns venue, symbol, hour (the period start; the first bar's time when
    `every` is None: one estimate over the whole frame), spread_bps, bars."""
    bars = finest_candles(candles).filter(pl.col("volume") > 0).sort("venue", "symbol", "ts")
    by = ["venue", "symbol"]
    df = bars.with_columns(pl.col("close").log().alias("c"),
                           ((pl.col("high").log() + pl.col("low").log()) / 2).alias("eta")).with_columns(
        pl.col("eta").shift(-1).over(by).alias("eta_next"),
        (pl.col("ts").shift(-1).over(by) - pl.col("ts")).dt.total_seconds().alias("gap_s"))
    pairs = df.filter(pl.col("gap_s") == pl.col("bar_seconds")).with_columns(
        (4 * (pl.col("c") - pl.col("eta")) * (pl.col("c") - pl.col("eta_next"))).alias("s2"))
    moments = [pl.col("s2").mean().alias("s2"), pl.len().alias("bars")]
    out = pairs.group_by(by).agg(pl.col("ts").min(), *moments) if every is None else \
        pairs.group_by_dynamic("ts", every=every, group_by=by).agg(*moments)
    return out.select(*by, pl.col("ts").alias("hour"),
                      (pl.col("s2").clip(lower_bound=0).sqrt() * 1e4).alias("spread_bps"), "bars")


def with_spread(liquidity: pl.DataFrame, candles: pl.DataFrame) -> pl.DataFrame:
    """The liquidity mart's hours with `spread_bps` and `spread_method`: the books' mean spread where the hour
    had books, else the hour's candle estimate, else (an hour whose estimate is zero or missing: too few bars,
    or a negative moment, which a single hour's noise often gives) the estimate over all the frame's bars of
    the venue-symbol ('abdi_ranaldo_2017_window'), else null (method 'absent')."""
    by = ["venue", "symbol"]
    hourly = candle_spread_abdi_ranaldo(candles).filter(pl.col("spread_bps") > 0).select(
        *by, pl.col("hour").cast(pl.Datetime("ms")), pl.col("spread_bps").alias("_hour"))
    window = candle_spread_abdi_ranaldo(candles, every=None).filter(pl.col("spread_bps") > 0).select(
        *by, pl.col("spread_bps").alias("_window"))
    df = (liquidity.with_columns(pl.col("hour").cast(pl.Datetime("ms")))
          .join(hourly, on=[*by, "hour"], how="left").join(window, on=by, how="left"))
    return df.with_columns(
        pl.coalesce("spread_bps_mean", "_hour", "_window").alias("spread_bps"),
        pl.when(pl.col("spread_bps_mean").is_not_null()).then(pl.lit(SPREAD_FROM_BOOKS))
        .when(pl.col("_hour").is_not_null()).then(pl.lit(ABDI_RANALDO))
        .when(pl.col("_window").is_not_null()).then(pl.lit(f"{ABDI_RANALDO}_window")).otherwise(pl.lit(ABSENT))
        .alias("spread_method")).drop("_hour", "_window")


def most_common(column: str) -> pl.Expr:
    """The value most rows of a group have (ties by name), for naming one method for a group of hours."""
    return pl.col(column).drop_nulls().mode().sort().first().alias(column)


# --- latency from the tape ---------------------------------------------------------------------------------------

def _has_column(conn: duckdb.DuckDBPyConnection, schema: str, table: str, column: str) -> bool:
    return bool(conn.execute("SELECT count(*) FROM information_schema.columns WHERE table_schema = ? AND "
                             "table_name = ? AND column_name = ?", [schema, table, column]).fetchall()[0][0])


def tape_latency_samples(conn: duckdb.DuckDBPyConnection, start: datetime, end: datetime) -> pl.DataFrame:
    """Latency samples in raw.latency's shape from the tape: local receive time minus exchange time of
    raw.trades and raw.books rows that have both (endpoint 'websocket': it is the market-data feed's delay).
    Empty when no row has a local time."""
    frames = []
    for table in ("trades", "books"):
        if table_exists(conn, "raw", table) and _has_column(conn, "raw", table, "local_ts"):
            frames.append(conn.sql(
                f"SELECT venue, 'websocket' AS endpoint, ts, "
                f"CAST(epoch_ms(local_ts) - epoch_ms(ts) AS DOUBLE) AS latency_ms, TRUE AS ok, "
                f"CAST(NULL AS VARCHAR) AS error FROM raw.{table} "
                f"WHERE local_ts IS NOT NULL AND ts >= ? AND ts < ?", params=[start, end]).pl())
    schema = {"venue": pl.Utf8, "endpoint": pl.Utf8, "ts": pl.Datetime("ms"), "latency_ms": pl.Float64,
              "ok": pl.Boolean, "error": pl.Utf8}
    frames = [f.cast(schema) for f in frames if f.height]
    # a negative delay is a clock offset between the venue and the recorder, not a latency
    return pl.concat(frames).filter(pl.col("latency_ms") >= 0) if frames else pl.DataFrame(schema=schema)


# --- what could not be computed ------------------------------------------------------------------------------------

def gap_rows(asset: str, day: date, gaps: list[tuple[str, str, str]]) -> pl.DataFrame:
    """(venue, symbol, reason) triples as analytic_gaps rows, one per venue and symbol."""
    df = pl.DataFrame(gaps, schema=["venue", "symbol", "reason"], orient="row") if gaps else \
        pl.DataFrame(schema={"venue": pl.Utf8, "symbol": pl.Utf8, "reason": pl.Utf8})
    df = df.unique(["venue", "symbol"], keep="first", maintain_order=True)
    return df.with_columns(pl.lit(asset).alias("asset"), pl.lit(day, dtype=pl.Date).alias("day"))


def write_gaps(conn: duckdb.DuckDBPyConnection, asset: str, day: date,
               gaps: list[tuple[str, str, str]]) -> pl.DataFrame:
    df = gap_rows(asset, day, gaps)
    replace_rows(conn, "analytics", ANALYTIC_GAPS, df, where="asset = ? AND day = ?", params=[asset, day])
    return df


def read_gaps(conn: duckdb.DuckDBPyConnection, asset: str, day: date) -> pl.DataFrame:
    if not table_exists(conn, "analytics", ANALYTIC_GAPS.name):
        return ANALYTIC_GAPS.empty()
    return ANALYTIC_GAPS.conform(conn.sql("SELECT * FROM analytics.analytic_gaps WHERE asset = ? AND day = ?",
                                          params=[asset, day]).pl(), "analytics.analytic_gaps")


def gaps_metadata(gaps: pl.DataFrame) -> dict:
    if gaps.is_empty():
        return {"not_computed": "nothing: every input was there"}
    lines = [f"- {v} {s}: {r}" for v, s, r in gaps.select("venue", "symbol", "reason").head(30).iter_rows()]
    if gaps.height > 30:
        lines.append(f"- … {gaps.height - 30} more")
    return {"not_computed": dg.MetadataValue.md("\n".join(lines)), "not_computed_count": gaps.height}


def gaps_check(asset: str) -> dg.AssetChecksDefinition:
    """WARN-severity check: fails (without blocking) when the asset could not compute something for the day,
    saying what and why."""

    @dg.asset_check(asset=asset, name=f"{asset}_inputs_complete", partitions_def=daily_partitions, blocking=False,
                    description=f"Every venue and symbol of {asset} was computed from its inputs; what an absent "
                                f"input kept out is listed with the reason (WARN, not blocking).")
    def _check(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource) -> dg.AssetCheckResult:
        day = partition_window(context.partition_key)[0].date()
        with warehouse.get_connection() as conn:
            gaps = read_gaps(conn, asset, day)
        return dg.AssetCheckResult(
            passed=gaps.is_empty(), severity=dg.AssetCheckSeverity.WARN, metadata=gaps_metadata(gaps),
            description=None if gaps.is_empty() else "; ".join(
                f"{v} {s}: {r}" for v, s, r in gaps.select("venue", "symbol", "reason").head(5).iter_rows()))

    return _check
