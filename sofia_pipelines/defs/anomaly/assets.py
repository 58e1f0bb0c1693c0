"""The anomaly detector asset (feature I), its warning check and the sensor that runs it while a runtime runs.
An anomaly that persists pauses trading through the control file (once per episode, never over someone else's
pause); nothing here resumes: that is an operator's act (`sofia-runtime resume`)."""

import json
from datetime import datetime, timedelta, timezone

import dagster as dg
import duckdb
import polars as pl
from dagster_duckdb import DuckDBResource

from sofia_pipelines.defs.anomaly.compute import (AnomalyConfig, active_anomalies, auto_pause, describe,
                                                  freshness_series, journal_series, last_journal_record,
                                                  latency_series, load_config, running_runtimes, runtime_lag_s,
                                                  score)
from sofia_pipelines.defs.attribution.compute import UsdRates
from sofia_pipelines.metadata import markdown_table
from sofia_pipelines.warehouse import read_window, replace_rows, table_exists
from sofia_runtime import paths
from sofia_runtime.schemas import ANOMALY_ACTIONS, ANOMALY_SCORES, AUDIT_EVENTS, FILLS, RAW_TABLES
from sofia_runtime.snapshot import SnapshotError, current_id

GROUP = "anomaly"
CONFIG = load_config()  # a broken anomaly.yaml stops the code location from loading, naming file and field
JOURNAL_KINDS = ("decision", "order", "order_ack", "order_rejected", "order_closed", "fill", "funding")


def _newest(conn: duckdb.DuckDBPyConnection, schema: str, table: str, column: str = "ts") -> datetime | None:
    if not table_exists(conn, schema, table):
        return None
    return conn.sql(f'SELECT max("{column}") FROM "{schema}"."{table}"').fetchall()[0][0]


def _snapshot_created() -> datetime | None:
    try:
        manifest = json.loads((paths.serving_dir() / current_id(paths.serving_dir()) / "manifest.json").read_text())
    except (SnapshotError, OSError, ValueError):
        return None
    return datetime.fromisoformat(manifest["created_at"]).astimezone(timezone.utc).replace(tzinfo=None)


def detector_inputs(conn: duckdb.DuckDBPyConnection, cfg: AnomalyConfig) -> dict:
    """The trailing raw latency, the trailing journal (plus every runtime's start record), USD/TRY, the
    detector's own freshness history and the anomaly episodes it already acted on."""
    newest_latency = _newest(conn, "raw", "latency")
    latency = RAW_TABLES["latency"].empty()
    if newest_latency is not None:
        latency = read_window(conn, "raw", RAW_TABLES["latency"],
                              newest_latency - timedelta(hours=cfg.latency_lookback_hours),
                              newest_latency + timedelta(milliseconds=1))
    newest_record = _newest(conn, "audit", "events")
    events, fills = AUDIT_EVENTS.empty(), FILLS.empty()
    if newest_record is not None:
        since = newest_record - timedelta(hours=cfg.journal_lookback_hours)
        events = AUDIT_EVENTS.conform(conn.sql(
            f"SELECT * FROM audit.events WHERE kind = 'start' OR (ts >= ? AND kind IN {JOURNAL_KINDS})",
            params=[since]).pl(), "audit.events")
        if table_exists(conn, "audit", "fills"):
            fills = FILLS.conform(conn.sql("SELECT * FROM audit.fills WHERE ts >= ?", params=[since]).pl(),
                                  "audit.fills")
    fx = conn.sql("SELECT pair, ts, rate FROM raw.fx WHERE pair = 'USD/TRY'").pl() \
        if table_exists(conn, "raw", "fx") else None
    previous = read_window(conn, "analytics", ANOMALY_SCORES)
    handled = read_window(conn, "analytics", ANOMALY_ACTIONS)
    return {"latency": latency, "events": events, "fills": fills, "rates": UsdRates(fx),
            "newest_raw": {"books": _newest(conn, "raw", "books"), "latency": newest_latency},
            "history": previous.filter(pl.col("source") == "freshness"),
            "handled": {(r["metric"], r["entity"], r["since"]) for r in handled.iter_rows(named=True)}}


@dg.asset(key="anomaly_scores", group_name=GROUP, kinds={"duckdb", "polars"},
          deps=[dg.AssetKey(["raw", "latency"]), dg.AssetKey("audit_events"), dg.AssetKey("fills")],
          description="Robust z-scores (rolling median and MAD) per window of latency per venue, slippage, fill "
                      "rate, reject rates, P&L per hour and data freshness (config/anomaly.yaml); an anomaly that "
                      "persists writes the pause control file with the reason (auto-pause), unless already paused.")
def anomaly_scores(warehouse: DuckDBResource) -> dg.MaterializeResult:
    cfg = load_config()
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    with warehouse.get_connection() as conn:
        x = detector_inputs(conn, cfg)
    lags = {}
    for rt in running_runtimes(paths.data_dir() / "run"):
        record = last_journal_record(paths.audit_dir(), rt.runtime_id)
        if record is not None:
            lags[rt.runtime_id] = runtime_lag_s(record, rt.mode, now)
    journal, notes = journal_series(x["events"], x["fills"], cfg, x["rates"])
    series = pl.concat([latency_series(x["latency"], cfg), journal,
                        freshness_series(now, x["newest_raw"], _snapshot_created(), lags, cfg, x["history"])])
    scores = score(series, cfg)
    outcome = auto_pause(scores, paths.pause_file(), cfg.auto_pause, x["handled"])
    actions = outcome.actions_frame(now)
    with warehouse.get_connection() as conn:
        replace_rows(conn, "analytics", ANOMALY_SCORES, scores)
        replace_rows(conn, "analytics", ANOMALY_ACTIONS, actions, where="FALSE")  # append: the actions' history
    active = active_anomalies(scores)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": dg.MetadataValue.int(scores.height),
        "series": scores.select("metric", "entity").n_unique() if scores.height else 0,
        "active anomalies": active.height,
        "current anomalies": dg.MetadataValue.md(
            markdown_table(active.select("metric", "entity", "value", "median", "z", "streak", "since"), 20)
            if active.height else "none"),
        "auto-pause": outcome.summary(), "paused": outcome.action == "paused",
        "running runtimes": sorted(lags), **notes})


@dg.asset_check(asset=anomaly_scores, blocking=False,
                description="Warns while any metric is anomalous (beyond the threshold for persist_windows windows); "
                            "names each one.")
def no_active_anomalies(warehouse: DuckDBResource) -> dg.AssetCheckResult:
    with warehouse.get_connection() as conn:
        active = active_anomalies(read_window(conn, "analytics", ANOMALY_SCORES))
    names = [describe(r) for r in active.iter_rows(named=True)]
    return dg.AssetCheckResult(passed=not names, severity=dg.AssetCheckSeverity.WARN,
                               description="; ".join(names) or None, metadata={"active_anomalies": len(names)})


detect_anomalies_job = dg.define_asset_job("detect_anomalies", selection=[anomaly_scores])


@dg.sensor(job=detect_anomalies_job, minimum_interval_seconds=CONFIG.sensor_interval_s,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="While a runtime runs (a live process behind <data>/run/*.json), runs the anomaly detector "
                       "every sensor_interval_s (config/anomaly.yaml).")
def anomaly_sensor(context: dg.SensorEvaluationContext):
    running = running_runtimes(paths.data_dir() / "run")
    if not running:
        return dg.SkipReason(f"no runtime is running (no live process behind {paths.data_dir() / 'run'}/*.json)")
    return dg.RunRequest(tags={"sofia/runtimes": ",".join(r.runtime_id for r in running)})
