"""A static HTML report for people without the Dagster UI: profit attribution (the waterfall of components and
P&L by strategy over time, with the tables), the anomaly detector's findings and, where they exist, the risk
tables. One self-contained file (charts as base64 PNG): `python -m sofia_pipelines.report` (`make report`)
writes `<data>/reports/attribution.html` from the warehouse, read-only."""

from __future__ import annotations

import argparse
import base64
import html
import io
import os
import sys
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl

from sofia_pipelines.defs.anomaly.compute import active_anomalies
from sofia_pipelines.defs.attribution.charts import strategy_figure, waterfall_figure
from sofia_pipelines.defs.attribution.compute import COMPONENT_LABELS, COMPONENTS, component_totals, strategy_days
from sofia_pipelines.warehouse import read_window, table_exists
from sofia_runtime import paths
from sofia_runtime.schemas import ANOMALY_ACTIONS, ANOMALY_SCORES, PROFIT_ATTRIBUTION

MAX_ROWS = 200
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { margin-bottom: 0; } .sub { color: #666; margin-top: 0.2em; }
table { border-collapse: collapse; margin: 0.8em 0 1.6em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; } th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.bad { color: #c62828; font-weight: 600; } .note { color: #666; font-style: italic; }
"""


def _cell(value) -> tuple[str, bool]:
    if value is None:
        return "", False
    if isinstance(value, Decimal):
        return f"{value:,.6f}", True
    if isinstance(value, float):
        return f"{value:,.6g}", True
    if isinstance(value, bool):
        return str(value), False
    if isinstance(value, int):
        return f"{value:,}", True
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="minutes"), False
    if isinstance(value, date):
        return value.isoformat(), False
    return str(value), False


def html_table(df: pl.DataFrame, limit: int = MAX_ROWS) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    body = []
    for row in df.head(limit).iter_rows():
        cells = []
        for v in row:
            text, numeric = _cell(v)
            cells.append(f'<td class="num">{html.escape(text)}</td>' if numeric else f"<td>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = f'<p class="note">… {df.height - limit:,} more rows</p>' if df.height > limit else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{more}"


def png_img(fig, alt: str) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def attribution_section(conn: duckdb.DuckDBPyConnection) -> str:
    out = ["<h2>Profit attribution</h2>"]
    if not table_exists(conn, "analytics", PROFIT_ATTRIBUTION.name):
        return out[0] + '<p class="note">analytics.profit_attribution is not materialized yet.</p>'
    attribution = read_window(conn, "analytics", PROFIT_ATTRIBUTION).sort("day", "strategy", "venue", "symbol")
    if attribution.is_empty():
        return out[0] + '<p class="note">No fills yet: run a runtime and ingest its journal.</p>'
    totals = component_totals(attribution)
    out.append("<p>USD. Components are signed contributions (costs negative) and add up to net exactly.</p>")
    out.append(html_table(pl.DataFrame({"component": [COMPONENT_LABELS[c] for c in COMPONENTS] + ["net"],
                                        "USD": [totals[c] for c in (*COMPONENTS, "net_usd")]},
                                       schema={"component": pl.Utf8, "USD": pl.Decimal(38, 18)})))
    out.append(png_img(waterfall_figure(totals), "waterfall of P&L components"))
    out.append(png_img(strategy_figure(strategy_days(attribution)), "P&L by strategy over time"))
    out.append("<h3>By strategy, venue and symbol</h3>")
    out.append(html_table(attribution.group_by("strategy", "venue", "symbol")
                          .agg(pl.col("fills").sum(), pl.col([*COMPONENTS, "net_usd"]).sum())
                          .sort("strategy", "venue", "symbol")))
    out.append("<h3>By day</h3>")
    out.append(html_table(attribution.select("day", "strategy", "venue", "symbol", "fills", "position_end",
                                             "mark_end_usd", *COMPONENTS, "net_usd")))
    return "".join(out)


def anomaly_section(conn: duckdb.DuckDBPyConnection) -> str:
    out = ["<h2>Anomalies</h2>"]
    if not table_exists(conn, "analytics", ANOMALY_SCORES.name):
        return out[0] + '<p class="note">analytics.anomaly_scores is not materialized yet.</p>'
    scores = read_window(conn, "analytics", ANOMALY_SCORES)
    active = active_anomalies(scores)
    if active.height:
        out.append(f'<p class="bad">{active.height} active anomal{"y" if active.height == 1 else "ies"}</p>')
        out.append(html_table(active.select("metric", "entity", "window_start", "value", "median", "z", "streak",
                                            "since")))
    else:
        out.append("<p>No active anomaly.</p>")
    latest = (scores.sort("window_start").group_by("metric", "entity").last().sort("metric", "entity")
              .select("metric", "entity", "source", "window_start", "value", "median", "mad", "z", "streak",
                      "anomalous"))
    out.append("<h3>Latest window of every series</h3>" + html_table(latest))
    if table_exists(conn, "analytics", ANOMALY_ACTIONS.name):
        actions = read_window(conn, "analytics", ANOMALY_ACTIONS).sort("acted_at", descending=True)
        if actions.height:
            out.append("<h3>Auto-pause actions</h3>" + html_table(actions))
    return "".join(out)


def risk_tables(conn: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    """(schema, table) of every table in schema `risk` and every `analytics.risk_*` table there is."""
    rows = conn.execute(
        "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema = 'risk' "
        "OR (table_schema = 'analytics' AND table_name LIKE 'risk%') ORDER BY 1, 2").fetchall()
    return [(s, t) for s, t in rows]


def risk_section(conn: duckdb.DuckDBPyConnection) -> str:
    tables = risk_tables(conn)
    if not tables:
        return '<h2>Risk</h2><p class="note">No risk tables in the warehouse yet.</p>'
    out = ["<h2>Risk</h2>"]
    for schema, table in tables:
        df = conn.sql(f'SELECT * FROM "{schema}"."{table}"').pl()
        out.append(f"<h3>{html.escape(schema)}.{html.escape(table)} ({df.height:,} rows)</h3>" + html_table(df, 50))
    return "".join(out)


def build_report(warehouse: Path, out: Path, now: datetime | None = None) -> Path:
    if not warehouse.exists():
        raise FileNotFoundError(f"no warehouse at {warehouse}: materialize the graph first (make demo)")
    now = now or datetime.now(timezone.utc)
    try:
        conn = duckdb.connect(str(warehouse), read_only=True)
    except duckdb.IOException as exc:
        raise RuntimeError(f"cannot open {warehouse} read-only (a Dagster run may be writing it): {exc}") from exc
    try:
        sections = [attribution_section(conn), anomaly_section(conn), risk_section(conn)]
    finally:
        conn.close()
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Sofia: attribution and anomalies</title>"
            f"<style>{STYLE}</style></head><body><h1>Sofia: profit attribution, anomalies, risk</h1>"
            f"<p class='sub'>generated {now.isoformat(timespec='seconds')} from {html.escape(str(warehouse))}</p>"
            + "".join(sections) + "</body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sofia_pipelines.report", description=__doc__)
    parser.add_argument("--out", type=Path, default=None, help="default: <data>/reports/attribution.html")
    args = parser.parse_args(argv)
    out = args.out or paths.reports_dir() / "attribution.html"
    try:
        written = build_report(Path(os.environ.get("SOFIA_WAREHOUSE", str(paths.warehouse_path()))), out)
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
