"""The attribution's charts (matplotlib figures), shared by the asset's metadata and the static HTML report."""

from __future__ import annotations

from decimal import Decimal

import polars as pl

from sofia_pipelines.defs.attribution.compute import COMPONENT_LABELS, COMPONENTS


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def waterfall_figure(totals: dict[str, Decimal]):
    """Each component's contribution stacked from zero to net (gains green, costs red, net blue)."""
    plt = _pyplot()
    labels, starts, heights, colors = [], [], [], []
    level = 0.0
    for c in COMPONENTS:
        v = float(totals[c])
        labels.append(COMPONENT_LABELS[c])
        starts.append(level if v >= 0 else level + v)
        heights.append(abs(v))
        colors.append("#2e7d32" if v >= 0 else "#c62828")
        level += v
    net = float(totals["net_usd"])
    labels.append("net")
    starts.append(min(0.0, net))
    heights.append(abs(net))
    colors.append("#1565c0")
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar(labels, heights, bottom=starts, color=colors)
    for i, (b, h, c) in enumerate(zip(starts, heights, [*COMPONENTS, "net_usd"])):
        v = float(totals[c])
        ax.annotate(f"{v:,.2f}", (i, b + h), ha="center", va="bottom", fontsize=8)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("USD")
    ax.set_title("P&L attribution: components to net (all strategies, venues, symbols, days)")
    ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    return fig


def strategy_figure(per_day: pl.DataFrame):
    """Net P&L per strategy and day (bars) and cumulative (lines)."""
    plt = _pyplot()
    days = sorted(per_day["day"].unique().to_list())
    strategies = sorted(per_day["strategy"].unique().to_list())
    fig, ax = plt.subplots(figsize=(9, 4))
    width = min(0.8 / max(len(strategies), 1), 0.3)
    for k, strategy in enumerate(strategies):
        rows = dict(per_day.filter(pl.col("strategy") == strategy).select("day", "net_usd").iter_rows())
        values = [rows.get(d, 0.0) for d in days]
        xs = [i + width * (k - (len(strategies) - 1) / 2) for i in range(len(days))]
        bars = ax.bar(xs, values, width=width, alpha=0.6, label=f"{strategy} (day)")
        cumulative, total = [], 0.0
        for v in values:
            total += v
            cumulative.append(total)
        color = bars.patches[0].get_facecolor()
        ax.plot(xs, cumulative, marker="o", color=(*color[:3], 1.0), label=f"{strategy} (cumulative)")
    ax.set_xticks(range(len(days)), [d.isoformat() for d in days], rotation=20)
    ax.set_xlim(-0.7, len(days) - 0.3)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("net USD")
    ax.set_title("P&L by strategy over time")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
