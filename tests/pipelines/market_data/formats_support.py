"""Reading one file through its format, as the files source does, for the format tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

import polars as pl

from sofia_pipelines.defs.market_data.formats import FileHints, format_of
from sofia_runtime.schemas import RAW_TABLES


def read(path: Path, hints: FileHints = FileHints(), fmt=None) -> dict[str, pl.DataFrame]:
    """Every frame the file's format yields, by raw table, each checked against the table's schema."""
    fmt = fmt or format_of(path)
    out: dict[str, list[pl.DataFrame]] = {}
    for table, frame in fmt.read(path, hints):
        assert frame.schema == RAW_TABLES[table].polars_schema
        out.setdefault(table, []).append(frame)
    return {t: pl.concat(f) for t, f in out.items()}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path
