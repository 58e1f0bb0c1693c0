"""SLIs, error budgets and burn rates of the trading runtime, from its audit journal (feature N).

Two kinds of SLI:
- time-based (availability, snapshot freshness): intervals of wall time, each good or bad; good and total are
  seconds of the window the intervals cover;
- event-based (decision and ack latency, reconciliation, journal durability): records, each good or bad.
Either way the error rate over a window is 1 - good/total, the burn rate is that over the error budget
(1 - target), and the remaining budget is 1 - the burn rate over the whole rolling window.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sofia_pipelines.validation import validated
from sofia_runtime.config_files import read_yaml
from sofia_runtime.schemas import SLO_REPORT, TS

CONFIG_PATH = Path(__file__).resolve().parents[2] / "config" / "slo.yaml"

# A new process writes `journal_recovered` (torn tail moved aside) before its `start`: both mean a restart.
RESTART_KINDS = ("start", "journal_recovered")
RUNNING_KINDS = ("start", "lease_acquired")
STATE_KINDS = ("start", "lease_acquired", "stop", "standby")
SNAPSHOT_KINDS = ("start", "snapshot")


# --- configuration (config/slo.yaml) ----------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Budgeting(_Strict):
    window_days: float = Field(28.0, gt=0)
    short_window_hours: float = Field(1.0, gt=0)
    fast_burn_rate: float = Field(14.4, gt=0)


class _Slo(_Strict):
    window_days: float | None = Field(None, gt=0)
    short_window_hours: float | None = Field(None, gt=0)
    fast_burn_rate: float | None = Field(None, gt=0)


class RatioSlo(_Slo):
    target: float = Field(gt=0, le=1)


class AvailabilitySlo(RatioSlo):
    heartbeat_tolerance_s: float = Field(gt=0)


class FreshnessSlo(RatioSlo):
    max_age_hours: float = Field(gt=0)


class LatencySlo(_Slo):
    percentile: float = Field(gt=0, lt=100)
    threshold_ms: float = Field(gt=0)

    @property
    def target(self) -> float:
        # With the nearest-rank percentile, p(q) <= threshold exactly when >= q % of the events are <= threshold.
        return self.percentile / 100


class Slos(_Strict):
    availability: AvailabilitySlo
    decision_latency: LatencySlo
    ack_latency: LatencySlo
    reconciliation: RatioSlo
    snapshot_freshness: FreshnessSlo
    journal_durability: RatioSlo


class SloConfig(_Strict):
    defaults: Budgeting = Budgeting()
    slos: Slos

    @model_validator(mode="after")
    def _short_inside_long(self):
        for name in Slos.model_fields:
            w = self.windows(name)
            if w.short >= w.long:
                raise ValueError(f"slos.{name}: short_window_hours ({w.short}) must be shorter than window_days "
                                 f"({w.long})")
        return self

    def windows(self, name: str) -> Windows:
        slo, d = getattr(self.slos, name), self.defaults
        return Windows(
            long=timedelta(days=slo.window_days if slo.window_days is not None else d.window_days),
            short=timedelta(hours=slo.short_window_hours if slo.short_window_hours is not None
                            else d.short_window_hours),
            fast_burn_rate=slo.fast_burn_rate if slo.fast_burn_rate is not None else d.fast_burn_rate)

    def longest_window(self) -> timedelta:
        return max(self.windows(name).long for name in Slos.model_fields)


@dataclass(frozen=True)
class Windows:
    long: timedelta
    short: timedelta
    fast_burn_rate: float


def parse_slo_config(raw, origin: str) -> SloConfig:
    return validated(SloConfig, raw, origin)


def load_slo_config(path: Path = CONFIG_PATH) -> SloConfig:
    return parse_slo_config(read_yaml(path), str(path))


def parse_as_of(text: str | None) -> datetime:
    """Evaluation time as naive UTC (the warehouse's convention): now, or an ISO 8601 time (UTC when no zone)."""
    if not text:
        return datetime.now(timezone.utc).replace(tzinfo=None)
    try:
        ts = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"slo_report config as_of: {text!r} is not an ISO 8601 time") from exc
    return ts.astimezone(timezone.utc).replace(tzinfo=None) if ts.tzinfo else ts


# --- the journal as intervals and events ------------------------------------------------------------------
def _field(name: str, dtype: pl.DataType) -> pl.Expr:
    return pl.col("payload").str.json_path_match(f"$.{name}").cast(dtype, strict=False).alias(name)


def _seconds(start: pl.Expr, end: pl.Expr) -> pl.Expr:
    return (end - start).dt.total_microseconds() / 1e6


def runtime_intervals(events: pl.DataFrame, as_of: datetime, tolerance_s: float,
                      behind: Collection[str] = ()) -> pl.DataFrame:
    """Every stretch of wall time a runtime should have been trading, as (runtime_id, start, end, up, cause).

    A stretch runs from one record to the runtime's next record (to `as_of` after its last). Only stretches while
    the runtime is running count: from a `start` (or `lease_acquired`) to its `stop`. Time after a `stop` (the
    `handover`/`lease_released` records after it included) is planned downtime, and a blue-green slot waiting as
    `standby` for the trading lease is silent by design; neither is counted. A running stretch is down when the
    next record is a restart (`start`, or the `journal_recovered` a restarted process writes first: a crash, down
    from the last record before it to the restart), when it is longer than the heartbeat tolerance (a silent
    runtime), and when it is the runtime's last and `as_of` is more than the tolerance after it (crashed and not
    restarted); otherwise up. For a runtime in `behind` (its journal on disk has records the warehouse has not
    ingested yet) the time after its last ingested record is not known and not counted."""
    state = (pl.when(pl.col("kind").is_in(RUNNING_KINDS)).then(pl.lit("running"))
             .when(pl.col("kind") == "stop").then(pl.lit("stopped"))
             .when(pl.col("kind") == "standby").then(pl.lit("standby"))
             .otherwise(pl.lit(None, dtype=pl.Utf8)))
    ev = (events.filter(pl.col("ts") <= as_of).sort("runtime_id", "seq")
          .select("runtime_id", "ts", "kind",
                  state.forward_fill().over("runtime_id").fill_null("running").alias("state"),
                  pl.col("ts").shift(-1).over("runtime_id").alias("next_ts"),
                  pl.col("kind").shift(-1).over("runtime_id").alias("next_kind"))
          .filter((pl.col("state") == "running")
                  & ~(pl.col("next_ts").is_null() & pl.col("runtime_id").is_in(list(behind)))))
    end = pl.coalesce(pl.col("next_ts"), pl.lit(as_of, dtype=TS))
    ev = ev.with_columns(pl.col("ts").alias("start"), pl.max_horizontal(end, pl.col("ts")).alias("end"))
    gap = _seconds(pl.col("start"), pl.col("end"))
    cause = (pl.when(pl.col("next_kind").is_in(RESTART_KINDS)).then(pl.lit("crash: restarted without a stop"))
             .when(pl.col("next_kind").is_null() & (gap > tolerance_s)).then(pl.lit("silent since, no stop"))
             .when(gap > tolerance_s).then(pl.lit("no record for longer than the heartbeat tolerance"))
             .otherwise(pl.lit(None, dtype=pl.Utf8)))
    return ev.select("runtime_id", "start", "end", cause.is_null().alias("up"), cause.alias("cause"))


def outages(intervals: pl.DataFrame) -> pl.DataFrame:
    """Down intervals with their duration, longest first (adjoining down stretches of a runtime merged)."""
    prev = lambda c: pl.col(c).shift(1).over("runtime_id")  # noqa: E731
    down = intervals.sort("runtime_id", "start").with_columns(
        ((pl.col("up") != prev("up")) | (pl.col("start") != prev("end"))).fill_null(True).cum_sum()
        .over("runtime_id").alias("run"))
    merged = (down.filter(~pl.col("up")).group_by("runtime_id", "run")
              .agg(pl.col("start").min(), pl.col("end").max(), pl.col("cause").last()))
    return (merged.with_columns(_seconds(pl.col("start"), pl.col("end")).alias("down_s"))
            .select("runtime_id", "start", "end", "down_s", "cause").sort("down_s", descending=True))


def snapshot_created_from_id(snapshot_id: str) -> datetime | None:
    """write_snapshot names a snapshot `<created %Y%m%dT%H%M%S>-<partition>-<random>`."""
    try:
        return datetime.strptime(snapshot_id[:15], "%Y%m%dT%H%M%S")
    except (ValueError, TypeError):
        return None


def freshness_intervals(up: pl.DataFrame, events: pl.DataFrame, created_at: Callable[[str], datetime | None],
                        max_age: timedelta) -> pl.DataFrame:
    """The runtimes' up time split by whether the snapshot each traded on (its `start` record's, then each
    `snapshot` switch's) was at most `max_age` old: (runtime_id, start, end, up=fresh, cause, snapshot_id)."""
    changes = (events.filter(pl.col("kind").is_in(SNAPSHOT_KINDS))
               .select("runtime_id", pl.col("ts").alias("start"), _field("snapshot_id", pl.Utf8))
               .drop_nulls("snapshot_id").sort("start"))
    ids = changes["snapshot_id"].unique().to_list()
    created = pl.DataFrame({"snapshot_id": ids, "created": [created_at(i) for i in ids]},
                           schema={"snapshot_id": pl.Utf8, "created": TS})
    used = (up.filter(pl.col("up")).sort("start")
            .join_asof(changes, on="start", by="runtime_id", strategy="backward", check_sortedness=False)
            .join(created, on="snapshot_id", how="left")
            .with_columns((pl.col("created") + pl.duration(microseconds=int(max_age / timedelta(microseconds=1))))
                          .alias("fresh_until")))
    split = pl.min_horizontal(pl.max_horizontal(pl.col("fresh_until"), pl.col("start")), pl.col("end"))
    fresh = used.filter(pl.col("fresh_until").is_not_null()).select(
        "runtime_id", "start", split.alias("end"), pl.lit(True).alias("up"), pl.lit(None, dtype=pl.Utf8).alias("cause"),
        "snapshot_id")
    stale = used.select(
        "runtime_id", pl.coalesce(split, pl.col("start")).alias("start"), "end", pl.lit(False).alias("up"),
        pl.when(pl.col("snapshot_id").is_null()).then(pl.lit("no snapshot recorded"))
        .when(pl.col("created").is_null()).then(pl.lit("snapshot age unknown"))
        .otherwise(pl.lit(f"snapshot older than {max_age}")).alias("cause"), "snapshot_id")
    out = pl.concat([fresh, stale])
    return out.filter(pl.col("end") > pl.col("start")).sort("runtime_id", "start")


def latency_events(events: pl.DataFrame, kind: str, field: str, threshold_ms: float) -> pl.DataFrame:
    """(ts, value in ms, good) for every `kind` record carrying `field` in microseconds."""
    return (events.filter(pl.col("kind") == kind).select("ts", _field(field, pl.Int64)).drop_nulls(field)
            .select("ts", (pl.col(field) / 1000).alias("value"),
                    (pl.col(field) <= threshold_ms * 1000).alias("good")))


def durability_events(events: pl.DataFrame) -> pl.DataFrame:
    """(ts, good) per acknowledged order: its `order` record was on disk before the venue was called. An ack the
    runtime recovered after a restart carries no durability figures and is not counted."""
    acks = (events.filter(pl.col("kind") == "order_ack")
            .select("ts", _field("durable_seq_at_send", pl.Int64), _field("order_seq", pl.Int64))
            .drop_nulls(["durable_seq_at_send", "order_seq"]))
    return acks.select("ts", pl.lit(None, dtype=pl.Float64).alias("value"),
                       (pl.col("durable_seq_at_send") >= pl.col("order_seq")).alias("good"))


def reconciliation_events(reconciliation: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    """(ts, good) per reconciled item. `reconciliation` is audit.reconciliation with `ts`, the time of the item's
    journal record (order by client order id, fill by trade id, in the journals of the account's runtimes); an
    item the journal lacks (missing_in_journal, a venue whose record was unavailable) has none and is dated at
    the evaluation."""
    return reconciliation.select(pl.col("ts").cast(TS).fill_null(pl.lit(as_of, dtype=TS)),
                                 pl.lit(None, dtype=pl.Float64).alias("value"),
                                 (pl.col("status") == "matched").alias("good"))


def in_window_intervals(intervals: pl.DataFrame, lo: datetime, hi: datetime) -> tuple[float, float]:
    """(good seconds, total seconds) of the intervals inside [lo, hi]."""
    if intervals.is_empty():
        return 0.0, 0.0
    s = pl.max_horizontal(pl.col("start"), pl.lit(lo, dtype=TS))
    e = pl.min_horizontal(pl.col("end"), pl.lit(hi, dtype=TS))
    secs = intervals.select(pl.col("up"), _seconds(s, e).clip(lower_bound=0).alias("s"))
    return float(secs.filter(pl.col("up"))["s"].sum()), float(secs["s"].sum())


def in_window_events(events: pl.DataFrame, lo: datetime, hi: datetime) -> pl.DataFrame:
    return events.filter((pl.col("ts") > lo) & (pl.col("ts") <= hi))


def nearest_rank(values, percentile: float) -> float | None:
    """The smallest value with at least `percentile` % of the values at or below it (no interpolation)."""
    values = np.asarray(values, dtype=float)
    return float(np.percentile(values, percentile, method="inverted_cdf")) if values.size else None


# --- budgets ------------------------------------------------------------------------------------------------
def burn_rate(good: float, total: float, budget: float) -> float:
    """Error rate over the budget: 1.0 spends exactly the budget. A 100 % objective has no budget, so any bad
    event burns at an infinite rate."""
    if total <= 0:
        return 0.0
    bad = max(total - good, 0.0) / total
    if budget <= 0:
        return math.inf if bad > 0 else 0.0
    return bad / budget


def status_of(total: float, remaining: float, short_burn: float, fast_burn_rate: float) -> str:
    if total <= 0:
        return "no_data"
    if remaining <= 0:
        return "exhausted"
    return "burning" if short_burn >= fast_burn_rate else "ok"


def budget_row(sli: str, objective: str, target: float, windows: Windows, counted: str,
               full: tuple[float, float], short: tuple[float, float], measured: float | None, unit: str,
               as_of: datetime, detail: str | None) -> dict:
    good, total = full
    budget = max(round(1.0 - target, 12), 0.0)  # 1 - 0.99 is 0.010000000000000009 in binary floating point
    long_burn = burn_rate(good, total, budget)
    short_burn = burn_rate(*short, budget)
    remaining = 1.0 - long_burn
    return {"evaluated_at": as_of, "sli": sli, "objective": objective, "measured": measured, "unit": unit,
            "target": target, "window_days": windows.long / timedelta(days=1), "counted": counted,
            "good": good, "total": total, "ratio": good / total if total else None, "error_budget": budget,
            "remaining_budget": remaining, "short_window_hours": windows.short / timedelta(hours=1),
            "burn_rate_short": short_burn, "burn_rate_long": long_burn,
            "status": status_of(total, remaining, short_burn, windows.fast_burn_rate), "detail": detail}


@dataclass
class SloResult:
    report: pl.DataFrame        # SLO_REPORT rows, one per SLI
    outages: pl.DataFrame       # down intervals in the availability window, longest first
    per_runtime: pl.DataFrame   # availability per runtime over its window


def _pct(x: float | None) -> float | None:
    return None if x is None else 100 * x


def _fmt_s(seconds: float) -> str:
    return f"{seconds:,.0f} s" if seconds < 3600 else f"{seconds / 3600:,.2f} h"


def slo_report(events: pl.DataFrame, reconciliation: pl.DataFrame, config: SloConfig, as_of: datetime,
               created_at: Callable[[str], datetime | None], current: tuple[str, datetime, str] | None,
               behind: Collection[str] = ()) -> SloResult:
    """Every SLI of config/slo.yaml as of `as_of`.

    `events`: audit.events rows (runtime_id, seq, ts, kind, payload) for at least the longest window, plus each
    runtime's last record and last start/snapshot record before it; `reconciliation`: audit.reconciliation with
    each item's journal time `ts` (see reconciliation_events);
    `created_at`: a snapshot id's creation time (None when unknown); `current`: the CURRENT serving snapshot as
    (id, created_at, partition), None when none is published; `behind`: runtimes whose journal on disk is ahead of
    the warehouse (see runtime_intervals)."""
    slos, rows = config.slos, []

    def window(name):
        w = config.windows(name)
        return w, (as_of - w.long, as_of), (as_of - w.short, as_of)

    # availability
    a = slos.availability
    w, full, short = window("availability")
    intervals = runtime_intervals(events, as_of, a.heartbeat_tolerance_s, behind)
    good, total = in_window_intervals(intervals, *full)
    clipped = intervals.with_columns(pl.max_horizontal("start", pl.lit(full[0], dtype=TS)).alias("start"),
                                     pl.min_horizontal("end", pl.lit(full[1], dtype=TS)).alias("end")
                                     ).filter(pl.col("end") > pl.col("start"))
    down = outages(clipped)
    per_runtime = (clipped.group_by("runtime_id").agg(
        _seconds(pl.col("start"), pl.col("end")).filter(pl.col("up")).sum().alias("up_s"),
        _seconds(pl.col("start"), pl.col("end")).sum().alias("expected_s"))
        .with_columns((pl.col("up_s") / pl.col("expected_s")).alias("availability")).sort("runtime_id"))
    detail = (f"{down.height} outage(s), {_fmt_s(down['down_s'].sum())} down; longest: {down['runtime_id'][0]} "
              f"{down['start'][0]} -> {down['end'][0]} ({down['cause'][0]})") if down.height else None
    if behind:
        detail = (f"{detail}; " if detail else "") + (f"not yet ingested, counted up to their last ingested record: "
                                                      f"{', '.join(sorted(behind))}")
    rows.append(budget_row("availability", f"up >= {a.target:.2%} of the time it should run (heartbeat tolerance "
                           f"{a.heartbeat_tolerance_s:g} s)", a.target, w, "seconds", (good, total),
                           in_window_intervals(intervals, *short), _pct(good / total if total else None), "%",
                           as_of, detail))

    # decision and acknowledgement latency
    for name, kind, field, what in (("decision_latency", "decision", "decision_us", "decision"),
                                    ("ack_latency", "order_ack", "decision_to_ack_us", "decision -> ack")):
        s = getattr(slos, name)
        w, full, short = window(name)
        ev = latency_events(events, kind, field, s.threshold_ms)
        f, sh = in_window_events(ev, *full), in_window_events(ev, *short)
        rows.append(budget_row(name, f"p{s.percentile:g} {what} <= {s.threshold_ms:g} ms", s.target, w,
                               f"{kind} records", (float(f["good"].sum()), float(f.height)),
                               (float(sh["good"].sum()), float(sh.height)),
                               nearest_rank(f["value"].to_numpy(), s.percentile), "ms", as_of,
                               f"max {f['value'].max():g} ms over {f.height:,} records" if f.height else None))

    # reconciliation
    s = slos.reconciliation
    w, full, short = window("reconciliation")
    ev = reconciliation_events(reconciliation, as_of)
    f, sh = in_window_events(ev, *full), in_window_events(ev, *short)
    breaks = reconciliation.filter(pl.col("status") != "matched")
    rows.append(budget_row("reconciliation", f"{s.target:.2%} of orders and fills matched at the venue", s.target, w,
                           "reconciled items", (float(f["good"].sum()), float(f.height)),
                           (float(sh["good"].sum()), float(sh.height)),
                           _pct(f["good"].mean()) if f.height else None, "%", as_of,
                           (f"{breaks.height} break(s); first: {breaks['account'][0]} {breaks['item'][0]} "
                            f"{breaks['id'][0]}: {breaks['status'][0]}") if breaks.height else None))

    # serving-snapshot freshness
    s = slos.snapshot_freshness
    w, full, short = window("snapshot_freshness")
    max_age = timedelta(hours=s.max_age_hours)
    fresh = freshness_intervals(intervals, events, created_at, max_age)
    good, total = in_window_intervals(fresh, *full)
    age_h = (as_of - current[1]) / timedelta(hours=1) if current else None
    stale_s = total - good
    detail = (f"CURRENT {current[0]} (partition {current[2]}) is {age_h:.1f} h old" if current
              else "no CURRENT serving snapshot published")
    if age_h is not None and age_h > s.max_age_hours:
        detail += f", older than {s.max_age_hours:g} h: re-materialize serving_snapshot"
    detail += f"; runtime time on a stale snapshot in the window: {_fmt_s(stale_s)}"
    rows.append(budget_row("snapshot_freshness", f"snapshot in use <= {s.max_age_hours:g} h old for >= "
                           f"{s.target:.2%} of up time", s.target, w, "seconds", (good, total),
                           in_window_intervals(fresh, *short), age_h, "h (CURRENT's age)", as_of, detail))

    # journal durability
    s = slos.journal_durability
    w, full, short = window("journal_durability")
    ev = durability_events(events)
    f, sh = in_window_events(ev, *full), in_window_events(ev, *short)
    rows.append(budget_row("journal_durability", f"{s.target:.2%} of acknowledged orders durable before send",
                           s.target, w, "order_ack records", (float(f["good"].sum()), float(f.height)),
                           (float(sh["good"].sum()), float(sh.height)),
                           _pct(f["good"].mean()) if f.height else None, "%", as_of,
                           f"{f.height - int(f['good'].sum())} order(s) sent before their record was durable"
                           if f.height else None))

    report = SLO_REPORT.conform(pl.DataFrame(rows, schema=SLO_REPORT.polars_schema), "slo_report")
    return SloResult(report, down, per_runtime)


def exhausted(report: pl.DataFrame) -> list[str]:
    """One line per SLO whose error budget is spent."""
    def measured(r):
        return "n/a" if r["measured"] is None else f"{r['measured']:.4g} {r['unit']}"
    return [f"{r['sli']}: remaining budget {r['remaining_budget']:.3g} (burn rate {r['burn_rate_long']:.3g} over "
            f"{r['window_days']:g} d; {r['objective']}; measured {measured(r)})"
            for r in report.filter(pl.col("status") == "exhausted").iter_rows(named=True)]
