"""Anomaly detector (feature I): robust z-scores per metric, entity and time window, and the auto-pause.

Each metric is a series of one value per window (`window_minutes`, windows of market time: the replayed time in
paper mode, wall time live). A window is scored against the `baseline_windows` windows of the same series
before it: z = (value - median) / scale, scale = max(1.4826 * MAD, min_scale, min_scale_fraction * |median|)
(the floors keep a flat baseline from turning a wiggle into an infinite z). A window exceeds when z is beyond
`threshold` in the metric's bad direction; an anomaly is a series whose last `persist_windows` windows or more
in a row exceed. An active anomaly (the series' newest window is anomalous and current) pauses trading once
per episode: `auto_pause` writes the pause control file unless something is already paused, and never clears.

The metrics (entity in brackets):
  latency_ms            [venue]           median latency of the window's successful probes (raw.latency)
  ack_latency_ms        [venue]           median decision-to-acknowledgement time of the runtimes' orders
  slippage_bps          [strategy/venue]  notional-weighted fill price vs the decision leg's mid, in bps,
                                          positive = worse than mid for the side (buy above, sell below)
  fill_rate             [strategy/venue]  orders sent in the window that filled (at all) / those that finished
                                          (closed or rejected; still-open orders are not counted yet)
  decision_reject_rate  [strategy]        decisions rejected by the gate or blocked by limits / decisions
  order_reject_rate     [strategy/venue]  order_rejected / orders sent
  pnl_per_hour_usd      [strategy]        mark-to-market P&L per hour: the change over the window of cash
                                          (fills' -side*price*amount - fee, funding) + position * last mid
                                          (the decision legs' mids and fill prices), in USD
  raw_data_age_s        [raw table]       now - newest row of raw.books / raw.latency
  serving_snapshot_age_s [serving]        now - the CURRENT snapshot's created_at
  runtime_market_lag_s  [runtime id]      for each running runtime, now - its newest journal record's wall
                                          time (paper: the replay's market clock cannot be compared to now),
                                          plus the record's own lag behind market time when live
The freshness metrics are observed when the detector runs, so their series is the detector's own history
(one value per wall-clock window, the latest observation of the window).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sofia_pipelines.defs.attribution.compute import (UsdRates, arrival_mids, market_time, payloads, quote_of,
                                                      record_time, runtime_strategies)
from sofia_pipelines.validation import validated
from sofia_runtime.config_files import read_yaml
from sofia_runtime.control import PauseState, pause_unless_paused, read_pause
from sofia_runtime.schemas import ANOMALY_ACTIONS, ANOMALY_SCORES, TS

CONFIG_PATH = Path(__file__).resolve().parents[2] / "config" / "anomaly.yaml"
PAUSED_BY = "anomaly_detector"
MAD_TO_SIGMA = 1.4826
METRIC_SOURCES = {
    "latency_ms": "raw.latency", "ack_latency_ms": "journal", "slippage_bps": "journal", "fill_rate": "journal",
    "decision_reject_rate": "journal", "order_reject_rate": "journal", "pnl_per_hour_usd": "journal",
    "raw_data_age_s": "freshness", "serving_snapshot_age_s": "freshness", "runtime_market_lag_s": "freshness",
}
SERIES_SCHEMA = {"metric": pl.Utf8, "entity": pl.Utf8, "source": pl.Utf8, "window_start": TS, "value": pl.Float64}


# --- configuration --------------------------------------------------------------------------------------------
class MetricSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    direction: Literal["high", "low", "both"]
    min_scale: float = Field(0.0, ge=0)
    min_scale_fraction: float = Field(0.0, ge=0)


class AutoPauseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    metrics: list[str] | None = None  # which metrics may pause; None: all

    @field_validator("metrics")
    @classmethod
    def _known(cls, names):
        unknown = sorted(set(names or ()) - set(METRIC_SOURCES))
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(METRIC_SOURCES)}")
        return names


class AnomalyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    window_minutes: int = Field(15, gt=0, le=1440)
    baseline_windows: int = Field(96, ge=2)
    min_baseline_windows: int = Field(8, ge=2)
    threshold: float = Field(8.0, gt=0)
    persist_windows: int = Field(3, ge=1)
    latency_lookback_hours: float = Field(48.0, gt=0)
    journal_lookback_hours: float = Field(48.0, gt=0)
    sensor_interval_s: int = Field(120, ge=10)
    auto_pause: AutoPauseConfig = AutoPauseConfig()
    metrics: dict[str, MetricSpec]

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, metrics):
        unknown = sorted(set(metrics) - set(METRIC_SOURCES))
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(METRIC_SOURCES)}")
        return metrics

    @model_validator(mode="after")
    def _baseline(self):
        if self.min_baseline_windows > self.baseline_windows:
            raise ValueError(f"min_baseline_windows ({self.min_baseline_windows}) is more than baseline_windows "
                             f"({self.baseline_windows})")
        return self

    @property
    def window(self) -> str:
        return f"{self.window_minutes}m"


def load_config(path: Path = CONFIG_PATH) -> AnomalyConfig:
    return validated(AnomalyConfig, read_yaml(path), str(path))


# --- series ---------------------------------------------------------------------------------------------------
def _series(df: pl.DataFrame) -> pl.DataFrame:
    return df.select(list(SERIES_SCHEMA)).cast(SERIES_SCHEMA) if df.height else pl.DataFrame(schema=SERIES_SCHEMA)


def latency_series(latency: pl.DataFrame, cfg: AnomalyConfig) -> pl.DataFrame:
    """Median latency of each venue's successful probes per window (all endpoints together)."""
    ok = latency.filter(pl.col("ok") & pl.col("latency_ms").is_not_null())
    return _series(ok.group_by("venue", pl.col("ts").dt.truncate(cfg.window).alias("window_start"))
                   .agg(pl.col("latency_ms").median().alias("value"))
                   .with_columns(pl.lit("latency_ms").alias("metric"), pl.col("venue").alias("entity"),
                                 pl.lit("raw.latency").alias("source")))


def journal_series(events: pl.DataFrame, fills: pl.DataFrame, cfg: AnomalyConfig,
                   rates: UsdRates | None = None) -> tuple[pl.DataFrame, dict]:
    """The journal's metrics per window (see the module's docstring) and notes on what was left out."""
    notes: dict = {}
    if events.is_empty():
        return pl.DataFrame(schema=SERIES_SCHEMA), notes
    strategies = runtime_strategies(events)
    frames = []
    orders = pl.DataFrame(
        [{"runtime_id": r["runtime_id"], "client_order_id": p["client_order_id"], "strategy": p["strategy"],
          "venue": p["venue"], "time": record_time(r, p)} for r, p in payloads(events, ["order"])],
        schema={"runtime_id": pl.Utf8, "client_order_id": pl.Utf8, "strategy": pl.Utf8, "venue": pl.Utf8,
                "time": TS})
    outcome = pl.DataFrame(
        [{"runtime_id": r["runtime_id"], "client_order_id": p["client_order_id"], "kind": r["kind"]}
         for r, p in payloads(events, ["order_rejected", "order_closed"])],
        schema={"runtime_id": pl.Utf8, "client_order_id": pl.Utf8, "kind": pl.Utf8})
    win = pl.col("time").dt.truncate(cfg.window).alias("window_start")
    keys = ["runtime_id", "client_order_id"]
    if orders.height:
        filled = fills.select(keys).unique().with_columns(pl.lit(True).alias("filled"))
        rejected = outcome.filter(pl.col("kind") == "order_rejected").select(keys).unique() \
            .with_columns(pl.lit(True).alias("rejected"))
        finished = outcome.select(keys).unique().with_columns(pl.lit(True).alias("finished"))
        o = (orders.join(filled, on=keys, how="left").join(rejected, on=keys, how="left")
             .join(finished, on=keys, how="left")
             .with_columns(pl.col("filled", "rejected", "finished").fill_null(False),
                           pl.format("{}/{}", "strategy", "venue").alias("entity"), win))
        per = o.group_by("entity", "window_start").agg(
            pl.len().alias("orders"), pl.col("rejected").sum().alias("rejected"),
            (pl.col("finished") | pl.col("filled")).sum().alias("finished"),
            pl.col("filled").sum().alias("filled"))
        frames.append(per.select("entity", "window_start", (pl.col("rejected") / pl.col("orders")).alias("value"),
                                 pl.lit("order_reject_rate").alias("metric")))
        frames.append(per.filter(pl.col("finished") > 0).select(
            "entity", "window_start", (pl.col("filled") / pl.col("finished")).alias("value"),
            pl.lit("fill_rate").alias("metric")))
        acks = pl.DataFrame(
            [{"runtime_id": r["runtime_id"], "client_order_id": p["client_order_id"],
              "ack_ms": p["decision_to_ack_us"] / 1000.0} for r, p in payloads(events, ["order_ack"])
             if p.get("decision_to_ack_us") is not None],
            schema={"runtime_id": pl.Utf8, "client_order_id": pl.Utf8, "ack_ms": pl.Float64})
        frames.append(acks.join(orders, on=keys).with_columns(win).group_by(pl.col("venue").alias("entity"),
                                                                             "window_start")
                      .agg(pl.col("ack_ms").median().alias("value")).with_columns(
                          pl.lit("ack_latency_ms").alias("metric")))
    decisions = pl.DataFrame(
        [{"strategy": p.get("strategy") or strategies.get(r["runtime_id"], r["runtime_id"]), "time": record_time(r, p),
          "bad": p.get("result") in ("rejected", "blocked")} for r, p in payloads(events, ["decision"])],
        schema={"strategy": pl.Utf8, "time": TS, "bad": pl.Boolean})
    frames.append(decisions.with_columns(win).group_by(pl.col("strategy").alias("entity"), "window_start")
                  .agg(pl.col("bad").mean().alias("value"))
                  .with_columns(pl.lit("decision_reject_rate").alias("metric")))
    if fills.height:
        f = arrival_mids(fills, events).with_columns(
            pl.coalesce("market_ts", "ts").alias("time"), pl.col("price", "amount", "fee").cast(pl.Float64),
            pl.col("mid").cast(pl.Float64), pl.when(pl.col("side") == "buy").then(1.0).otherwise(-1.0).alias("s"))
        slip = f.filter(pl.col("mid").is_not_null() & (pl.col("mid") > 0)).with_columns(
            win, pl.format("{}/{}", "strategy", "venue").alias("entity"),
            (pl.col("s") * (pl.col("price") - pl.col("mid")) / pl.col("mid") * 1e4).alias("bps"),
            (pl.col("price") * pl.col("amount")).alias("notional"))
        frames.append(slip.group_by("entity", "window_start").agg(
            ((pl.col("bps") * pl.col("notional")).sum() / pl.col("notional").sum()).alias("value"))
            .with_columns(pl.lit("slippage_bps").alias("metric")))
    pnl, pnl_notes = pnl_series(events, fills, cfg, rates, strategies)
    notes.update(pnl_notes)
    frames.append(pnl)
    out = pl.concat([fr.select("metric", "entity", "window_start", pl.col("value").cast(pl.Float64))
                     for fr in frames if fr.height], how="vertical") if any(fr.height for fr in frames) else None
    if out is None:
        return pl.DataFrame(schema=SERIES_SCHEMA), notes
    return _series(out.with_columns(pl.lit("journal").alias("source"))), notes


def pnl_series(events: pl.DataFrame, fills: pl.DataFrame, cfg: AnomalyConfig, rates: UsdRates | None,
               strategies: dict[str, str]) -> tuple[pl.DataFrame, dict]:
    """Mark-to-market P&L per strategy and window, per hour, in USD (see the module's docstring)."""
    notes: dict = {}
    flows, marks = [], []
    for r in fills.iter_rows(named=True):
        s = 1.0 if r["side"] == "buy" else -1.0
        price, amount = float(r["price"]), float(r["amount"])
        t = r["market_ts"] or r["ts"]
        flows.append((r["runtime_id"], r["venue"], r["symbol"], t, -s * price * amount - float(r["fee"]), s * amount))
        marks.append((r["venue"], r["symbol"], t, price))
    for r, p in payloads(events, ["funding"]):
        flows.append((r["runtime_id"], p["venue"], p["symbol"], record_time(r, p), float(p["amount"]), 0.0))
    last_seen: dict[str, datetime] = {}
    for r, p in payloads(events, ["decision"]):
        when = record_time(r, p)
        last_seen[r["runtime_id"]] = max(when, last_seen.get(r["runtime_id"], when))
        for leg in p.get("legs") or []:
            if leg.get("mid") is not None:
                marks.append((leg["venue"], leg["symbol"], when, float(leg["mid"])))
    if not flows:
        return pl.DataFrame(schema=SERIES_SCHEMA), notes
    flow = pl.DataFrame(flows, schema={"runtime_id": pl.Utf8, "venue": pl.Utf8, "symbol": pl.Utf8, "time": TS,
                                       "cash": pl.Float64, "qty": pl.Float64}, orient="row")
    mark = pl.DataFrame(marks, schema={"venue": pl.Utf8, "symbol": pl.Utf8, "time": TS, "mark": pl.Float64},
                        orient="row")
    win = pl.col("time").dt.truncate(cfg.window).alias("window_start")
    per_window = flow.with_columns(win).group_by("runtime_id", "venue", "symbol", "window_start").agg(
        pl.col("cash").sum(), pl.col("qty").sum())
    last_mark = mark.sort("time").with_columns(win).group_by("venue", "symbol", "window_start").agg(
        pl.col("mark").last())
    # every window from a runtime's first fill to its last decision, so a position is revalued without fills
    seen = pl.DataFrame(list(last_seen.items()), schema={"runtime_id": pl.Utf8, "seen": TS}, orient="row")
    spans = (flow.group_by("runtime_id").agg(pl.col("time").min().alias("a"), pl.col("time").max().alias("b"))
             .join(seen, on="runtime_id", how="left")
             .select("runtime_id", pl.col("a").dt.truncate(cfg.window),
                     pl.max_horizontal("b", "seen").dt.truncate(cfg.window).alias("b")))
    grid = (spans.with_columns(pl.datetime_ranges("a", "b", cfg.window, time_unit="ms").alias("window_start"))
            .explode("window_start").select("runtime_id", "window_start")
            .join(per_window.select("runtime_id", "venue", "symbol").unique(), on="runtime_id"))
    equity = (grid.join(per_window, on=["runtime_id", "venue", "symbol", "window_start"], how="left")
              .join(last_mark, on=["venue", "symbol", "window_start"], how="left")
              .sort("runtime_id", "venue", "symbol", "window_start")
              .with_columns(pl.col("cash", "qty").fill_null(0.0))
              .with_columns(pl.col("cash").cum_sum().over("runtime_id", "venue", "symbol").alias("cum_cash"),
                            pl.col("qty").cum_sum().over("runtime_id", "venue", "symbol").alias("pos"),
                            pl.col("mark").forward_fill().over("runtime_id", "venue", "symbol"))
              .with_columns((pl.col("cum_cash") + pl.col("pos") * pl.col("mark").fill_null(0.0)).alias("equity"))
              .with_columns(pl.col("equity").diff().over("runtime_id", "venue", "symbol")
                            .fill_null(pl.col("equity")).alias("pnl")))
    quotes = equity["symbol"].map_elements(quote_of, return_dtype=pl.Utf8)
    usd = []
    skipped = set()
    for q, t in zip(quotes.to_list(), equity["window_start"].to_list()):
        if q in ("USDT", "USDC", "USD"):
            usd.append(1.0)
        elif q == "TRY" and rates is not None:
            try:
                usd.append(1.0 / float(rates.try_per_usd(t.date())))
            except ValueError:
                usd.append(None)
                skipped.add(q)
        else:
            usd.append(None)
            skipped.add(q)
    if skipped:
        notes["pnl_per_hour_usd left out (no USD rate)"] = sorted(skipped)
    per_hour = 60.0 / cfg.window_minutes
    out = (equity.with_columns(pl.Series("usd", usd, dtype=pl.Float64))
           .filter(pl.col("usd").is_not_null())
           .with_columns(pl.col("runtime_id").replace_strict(strategies, default=pl.col("runtime_id")).alias("entity"))
           .group_by("entity", "window_start").agg((pl.col("pnl") * pl.col("usd")).sum() * per_hour)
           .rename({"pnl": "value"}).with_columns(pl.lit("pnl_per_hour_usd").alias("metric"),
                                                   pl.lit("journal").alias("source")))
    return _series(out), notes


# --- freshness ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunningRuntime:
    runtime_id: str
    pid: int
    mode: str


def running_runtimes(run_dir: Path) -> list[RunningRuntime]:
    """Runtimes whose status file `<data>/run/<id>.json` (written while running) names a live process."""
    out = []
    for path in sorted(run_dir.glob("*.json")):
        try:
            info = json.loads(path.read_text())
            pid = int(info["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue  # left behind by a killed process
        except PermissionError:
            pass  # alive, another user's
        out.append(RunningRuntime(str(info.get("runtime_id", path.stem)), pid, str(info.get("mode", "paper"))))
    return out


def last_journal_record(audit_dir: Path, runtime_id: str) -> dict | None:
    """The newest complete record of a runtime's journal (read from the end of its newest day file)."""
    files = sorted((audit_dir / runtime_id).glob("*.jsonl"))
    for path in reversed(files):
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - 65536))
            lines = f.read().split(b"\n")[:-1]  # the last piece has no newline yet: incomplete
        for line in reversed(lines[1:] if size > 65536 else lines):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def runtime_lag_s(record: dict, mode: str, now: datetime) -> float:
    ts = datetime.fromisoformat(record["ts"]).replace(tzinfo=None)
    lag = (now - ts).total_seconds()
    ms = (record.get("payload") or {}).get("market_ts")
    if mode == "live" and isinstance(ms, int) and ms:
        lag += max(0.0, (ts - market_time(ms)).total_seconds())
    return lag


def freshness_series(now: datetime, newest_raw: dict[str, datetime | None], snapshot_created: datetime | None,
                     runtime_lags: dict[str, float], cfg: AnomalyConfig, history: pl.DataFrame | None = None
                     ) -> pl.DataFrame:
    """This evaluation's freshness observations (window = the wall-clock window of `now`), merged into the
    detector's earlier ones (`history`: freshness rows of the previous anomaly_scores); the newest
    observation of a window wins and windows older than the baseline are dropped."""
    window = pl.Series([now]).cast(TS).dt.truncate(cfg.window)[0]
    rows = [("raw_data_age_s", table, (now - ts).total_seconds()) for table, ts in sorted(newest_raw.items())
            if ts is not None]
    if snapshot_created is not None:
        rows.append(("serving_snapshot_age_s", "serving", (now - snapshot_created).total_seconds()))
    rows += [("runtime_market_lag_s", rid, lag) for rid, lag in sorted(runtime_lags.items())]
    new = pl.DataFrame([{"metric": m, "entity": e, "source": "freshness", "window_start": window, "value": v}
                        for m, e, v in rows], schema=SERIES_SCHEMA)
    old = _series(history) if history is not None and history.height else pl.DataFrame(schema=SERIES_SCHEMA)
    keep_from = window - timedelta(minutes=cfg.window_minutes * (cfg.baseline_windows + cfg.persist_windows))
    merged = pl.concat([old.filter(pl.col("window_start") >= keep_from), new])
    return merged.unique(["metric", "entity", "window_start"], keep="last", maintain_order=True)


# --- scores ---------------------------------------------------------------------------------------------------
def _rolling_median_mad(values: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median, MAD and count of the `size` values before each position (NaN where there are none)."""
    padded = np.concatenate([np.full(size, np.nan), values])
    windows = np.lib.stride_tricks.sliding_window_view(padded, size)[: values.size]
    count = np.sum(~np.isnan(windows), axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows at the start
        median = np.nanmedian(windows, axis=1)
        mad = np.nanmedian(np.abs(windows - median[:, None]), axis=1)
    return median, mad, count


def score(series: pl.DataFrame, cfg: AnomalyConfig) -> pl.DataFrame:
    """ANOMALY_SCORES for every window of every (metric, entity) series whose metric is configured."""
    parts = []
    for (metric, entity), df in series.filter(pl.col("metric").is_in(list(cfg.metrics))).sort(
            "metric", "entity", "window_start").group_by(["metric", "entity"], maintain_order=True):
        spec = cfg.metrics[metric]
        v = df["value"].to_numpy().astype(float)
        median, mad, count = _rolling_median_mad(v, cfg.baseline_windows)
        scale = np.maximum.reduce([MAD_TO_SIGMA * mad, np.full(v.size, spec.min_scale),
                                   spec.min_scale_fraction * np.abs(median)])
        scored = (count >= cfg.min_baseline_windows) & ~np.isnan(v)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(scale > 0, (v - median) / scale, np.sign(v - median) * np.inf)
        z = np.where(scored, np.nan_to_num(z, nan=0.0, posinf=np.inf, neginf=-np.inf), np.nan)
        if spec.direction == "high":
            exceeds = z > cfg.threshold
        elif spec.direction == "low":
            exceeds = z < -cfg.threshold
        else:
            exceeds = np.abs(z) > cfg.threshold
        exceeds &= scored
        streak = np.zeros(v.size, dtype=np.int64)
        run = 0
        for i, e in enumerate(exceeds):
            run = run + 1 if e else 0
            streak[i] = run
        windows = df["window_start"].to_list()
        since = [windows[i - streak[i] + 1] if streak[i] else None for i in range(v.size)]
        parts.append(pl.DataFrame({
            "metric": metric, "entity": entity, "source": df["source"], "window_start": df["window_start"],
            "value": v, "median": np.where(scored, median, np.nan), "mad": np.where(scored, mad, np.nan),
            "scale": np.where(scored, scale, np.nan), "z": z, "n_baseline": count.astype(np.int64),
            "exceeds": exceeds, "streak": streak, "since": pl.Series(since, dtype=TS),
            "anomalous": streak >= cfg.persist_windows}).with_columns(
            pl.col("median", "mad", "scale", "z").fill_nan(None)))
    if not parts:
        return ANOMALY_SCORES.empty()
    return ANOMALY_SCORES.conform(pl.concat(parts), "anomaly_scores")


def active_anomalies(scores: pl.DataFrame) -> pl.DataFrame:
    """The anomalies in force: series whose newest window is anomalous and is the newest window of its metric
    (a series that stopped reporting earlier is not current)."""
    if scores.is_empty():
        return scores
    latest = scores.sort("window_start").group_by("metric", "entity").last()
    newest = scores.group_by("metric").agg(pl.col("window_start").max().alias("metric_newest"))
    return (latest.join(newest, on="metric").filter(pl.col("anomalous")
                                                    & (pl.col("window_start") == pl.col("metric_newest")))
            .drop("metric_newest").sort(pl.col("z").abs(), descending=True))


def describe(row: dict) -> str:
    z = row["z"]
    zs = "inf" if z is None or math.isinf(z) else f"{z:+.1f}"
    return (f"{row['metric']} {row['entity']}: {row['value']:.4g} vs median {row['median']:.4g} (z {zs}) for "
            f"{row['streak']} windows since {row['since']:%Y-%m-%d %H:%M}")


# --- auto-pause -----------------------------------------------------------------------------------------------
@dataclass
class AutoPauseOutcome:
    action: Literal["paused", "already_paused", "none", "disabled"]
    reason: str = ""
    paused_by: str = ""
    episodes: list[dict] = field(default_factory=list)

    def actions_frame(self, acted_at: datetime) -> pl.DataFrame:
        if self.action not in ("paused", "already_paused") or not self.episodes:
            return ANOMALY_ACTIONS.empty()
        return ANOMALY_ACTIONS.conform(pl.DataFrame(
            [{"metric": e["metric"], "entity": e["entity"], "since": e["since"], "acted_at": acted_at,
              "action": self.action, "paused_by": self.paused_by, "reason": self.reason} for e in self.episodes],
            schema=ANOMALY_ACTIONS.polars_schema), "anomaly_actions")

    def summary(self) -> str:
        return {"paused": f"paused trading: {self.reason}",
                "already_paused": f"already paused by {self.paused_by}; left as it was ({self.reason})",
                "none": "no new anomaly",
                "disabled": "auto-pause is off (anomaly.yaml auto_pause.enabled)"}[self.action]


def auto_pause(scores: pl.DataFrame, pause_path: Path, cfg: AutoPauseConfig | None = None,
               handled: set[tuple] | frozenset = frozenset()) -> AutoPauseOutcome:
    """Pause trading for every anomaly episode not acted on before (`handled`: (metric, entity, since)).
    Writes the pause control file with the reason, unless trading is already paused (an operator's pause or an
    unreadable control file is never overwritten) and never clears one: resuming is an operator's act."""
    cfg = cfg or AutoPauseConfig()
    active = active_anomalies(scores)
    if cfg.metrics is not None:
        active = active.filter(pl.col("metric").is_in(cfg.metrics))
    new = [r for r in active.iter_rows(named=True) if (r["metric"], r["entity"], r["since"]) not in handled]
    if not cfg.enabled:
        return AutoPauseOutcome("disabled")
    if not new:
        return AutoPauseOutcome("none")
    reason = "anomaly: " + "; ".join(describe(r) for r in new)
    if pause_unless_paused(pause_path, PAUSED_BY, reason) is None:
        state: PauseState = read_pause(pause_path)
        return AutoPauseOutcome("already_paused", reason, state.paused_by, new)
    return AutoPauseOutcome("paused", reason, PAUSED_BY, new)
