"""Fill-probability model asset and its calibration check (daily-partitioned)."""

from datetime import timedelta

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from sofia_pipelines.defs.fill_model.compute import (BAR_TOUCH, TAPE, calibration, expected_calibration_error,
                                                     fill_samples_by_input, fit_fill_model, held_out)
from sofia_pipelines.market_inputs import gaps_check, gaps_metadata, read_gaps, write_gaps
from sofia_pipelines.metadata import png_markdown, preview
from sofia_pipelines.partitions import daily_partitions, partition_window
from sofia_pipelines.warehouse import read_day, read_window, replace_day
from sofia_runtime.schemas import FILL_MODEL, RAW_TABLES, TableSchema

CALIBRATION = TableSchema("fill_model_calibration",
                          {"method": pl.Utf8, "bucket": pl.Float64, "n": pl.Int64, "predicted": pl.Float64,
                           "observed": pl.Float64},
                          keys=("method", "bucket"), time_column=None,
                          description="predicted vs observed fill rate on held-out data, by the model's method "
                                      "and decile of prediction")
# The model may be off by at most this much on average over held-out samples before the check fails.
MAX_CALIBRATION_ERROR = 0.05


def calibration_png(table: pl.DataFrame):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", lw=1)
    ax.scatter(table["predicted"], table["observed"], s=20 + 200 * table["n"] / table["n"].max())
    ax.set_xlabel("predicted p(fill)")
    ax.set_ylabel("observed fill rate (held-out hours)")
    return fig


@dg.asset(key="fill_model", partitions_def=daily_partitions, group_name="fill_model", kinds={"duckdb", "scipy"},
          deps=[dg.AssetKey(["raw", "books"]), dg.AssetKey(["raw", "trades"]), dg.AssetKey(["raw", "candles"])],
          description="p(fill within 60 s) for a limit order by distance from mid (in spreads), short-term "
                      "volatility and side, per venue and symbol: A*exp(-k*d)*(vol/vol_ref)^beta intensity fitted "
                      "by maximum likelihood on the day's tape (method tape_mle); where a venue-symbol has no books "
                      "and trades, on its candles by bar touch with the Abdi-Ranaldo spread (bar_touch_mle). "
                      "Calibration judged on the day before (held out), or on the day's odd hours when there is "
                      "no day before.")
def fill_model_asset(context: dg.AssetExecutionContext, warehouse: DuckDBResource) -> dg.MaterializeResult:
    start, end = partition_window(context.partition_key)
    held_out_start = start - timedelta(days=1)
    with warehouse.get_connection() as conn:
        books = read_window(conn, "raw", RAW_TABLES["books"], held_out_start, end)
        trades = read_window(conn, "raw", RAW_TABLES["trades"], held_out_start, end)
        candles = read_window(conn, "raw", RAW_TABLES["candles"], held_out_start, end)
        samples, gaps = fill_samples_by_input(books, trades, candles)
        if samples.is_empty():
            fit_on = judge_on = samples
            held_out_what = "nothing: no samples"
            if not gaps:
                gaps = [("*", "*", "no books, trades or candles for the day")]
        else:
            day = pl.from_epoch(samples["ts"], time_unit="ms") >= start
            if samples.filter(~day).height:  # the day before is the held-out day
                fit_on, judge_on, held_out_what = samples.filter(day), samples.filter(~day), f"{held_out_start.date()}"
            else:  # no earlier day in the warehouse: hold out the odd hours of this one
                test = held_out(samples)
                fit_on, judge_on, held_out_what = samples.filter(~test), samples.filter(test), "odd hours of the day"
        model = fit_fill_model(fit_on) if fit_on.height else FILL_MODEL.empty()
        table = calibration_by_method(model, judge_on)
        proxy = table.filter(pl.col("method") == BAR_TOUCH)
        if proxy.height and expected_calibration_error(proxy) > MAX_CALIBRATION_ERROR:
            gaps.append(("*", "*", f"the bar-touch model (candles only, no tape) is off by "
                                   f"{expected_calibration_error(proxy):.1%} on held-out data (tolerance "
                                   f"{MAX_CALIBRATION_ERROR:.0%}): a proxy for the absent tape, published marked "
                                   f"{BAR_TOUCH}"))
        replace_day(conn, "analytics", FILL_MODEL, model, start.date())
        replace_day(conn, "analytics", CALIBRATION, table, start.date())
        gap_table = write_gaps(conn, "fill_model", start.date(), gaps)
    metadata = {"dagster/row_count": dg.MetadataValue.int(model.height), "samples": fit_on.height,
                "held_out": held_out_what, "held_out_samples": judge_on.height,
                "methods": ", ".join(sorted(set(model["method"].drop_nulls()))) or "none",
                "preview": preview(model), **gaps_metadata(gap_table)}
    if model.height:
        metadata["brier_mean"] = float(model["brier"].mean())
    if table.height:
        metadata.update({"calibration_error": expected_calibration_error(table), "calibration": preview(table),
                         "calibration_chart": png_markdown(calibration_png(table))})
    return dg.MaterializeResult(metadata=metadata)


def calibration_by_method(model: pl.DataFrame, judge_on: pl.DataFrame) -> pl.DataFrame:
    """The calibration table of each method's models on its own held-out samples."""
    tables = [calibration(model.filter(pl.col("method") == method), samples).with_columns(
        pl.lit(method).alias("method"), pl.col("n").cast(pl.Int64))
        for (method,), samples in judge_on.group_by("method")] if judge_on.height else []
    tables = [t for t in tables if t.height]
    return CALIBRATION.conform(pl.concat(tables, how="diagonal"), "fill_model_calibration") if tables \
        else CALIBRATION.empty()


fill_model_inputs_complete = gaps_check("fill_model")


@dg.asset_check(asset="fill_model", blocking=True, partitions_def=daily_partitions,
                description=f"Probabilities are in [0, 1] and the tape's models are calibrated on held-out data "
                            f"within {MAX_CALIBRATION_ERROR:.0%} (sample-weighted mean |predicted - observed|); a "
                            f"bar-touch proxy (candles only) outside it is reported by fill_model_inputs_complete.")
def fill_model_calibrated(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource) -> dg.AssetCheckResult:
    day = partition_window(context.partition_key)[0].date()
    with warehouse.get_connection() as conn:
        table = read_day(conn, "analytics", CALIBRATION, day)
        model = read_day(conn, "analytics", FILL_MODEL, day)
        gaps = read_gaps(conn, "fill_model", day)
    if model.is_empty() and not gaps.is_empty():
        # nothing could be fitted, for the reasons fill_model_inputs_complete (WARN) lists: nothing to judge
        return dg.AssetCheckResult(passed=True, metadata={"fitted": 0, "not_computed_count": gaps.height},
                                   description="no model fitted: see fill_model_inputs_complete for why")
    in_range = table["predicted"].is_between(0, 1).all() and (model["intensity_a"] > 0).all()
    # the tape's models are held to the tolerance; a bar-touch proxy (no tape) that misses it is a WARN of
    # fill_model_inputs_complete, not a block
    tape = table.filter(pl.col("method") != BAR_TOUCH)
    tape_models = model.filter(pl.col("method").fill_null(TAPE[0]) != BAR_TOUCH).height
    error = expected_calibration_error(tape) if tape.height else (1.0 if tape_models else 0.0)
    proxy = table.filter(pl.col("method") == BAR_TOUCH)
    return dg.AssetCheckResult(passed=bool(in_range and error <= MAX_CALIBRATION_ERROR),
                               metadata={"calibration_error": error, "tolerance": MAX_CALIBRATION_ERROR,
                                         "held_out_samples": int(tape["n"].sum()) if tape.height else 0,
                                         "bar_touch_calibration_error": expected_calibration_error(proxy)
                                         if proxy.height else "n/a"})
