"""Metadata helpers shared by the assets: previews and charts a person reads in the Dagster UI."""

from __future__ import annotations

import base64
import io

import dagster as dg
import polars as pl


def markdown_table(df: pl.DataFrame, limit: int = 10) -> str:
    """A small Markdown table of the first rows (numbers rounded for reading)."""
    head = df.head(limit)
    cells = []
    for row in head.iter_rows():
        cells.append([f"{v:.6g}" if isinstance(v, float) else str(v) for v in row])
    lines = ["| " + " | ".join(head.columns) + " |", "|" + "---|" * len(head.columns)]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    if df.height > limit:
        lines.append(f"\n… {df.height - limit:,} more rows")
    return "\n".join(lines)


def preview(df: pl.DataFrame, limit: int = 10) -> dg.MetadataValue:
    return dg.MetadataValue.md(markdown_table(df, limit))


def png_markdown(fig) -> dg.MetadataValue:
    """A matplotlib figure embedded as Markdown, so the UI shows it inline."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return dg.MetadataValue.md(f"![chart](data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()})")
