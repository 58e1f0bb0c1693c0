"""What the vendor CSV readers (Tardis.dev, Binance archives) share: the file read as text in bounded
batches with each row's 1-based data-row number, cells parsed with errors naming row and field, epoch
times made `Datetime("ms")`, and rows put in time order within a bounded window."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv

from sofia_pipelines.defs.market_data.formats import BATCH_ROWS
from sofia_runtime.schemas import RAW_TABLES, TS, SchemaError

ROW = "_row"  # the 1-based data row of the file a frame's row came from
# pyarrow's streaming reader reads ahead a number of blocks: small blocks keep that bounded (8 MB blocks let it
# hold most of a 150 MB file), and frames of up to BATCH_ROWS rows are put together from them
BLOCK_BYTES = 1 << 20
FRAME_ROWS = min(BATCH_ROWS, 100_000)  # all-text frames cost ~1.5 kB a row at the peak, wherever the file ends


def text_head(head: bytes) -> str:
    """The first bytes of a file as text, gunzipped when the file is gzip (Tardis ships .csv.gz)."""
    if head[:2] == b"\x1f\x8b":
        try:
            head = zlib.decompressobj(wbits=31).decompress(head)
        except zlib.error:
            return ""
    return head.decode("utf-8", errors="replace")


def first_line(head: bytes) -> str:
    return text_head(head).lstrip("\ufeff").split("\n", 1)[0].strip()


def header_of(path: Path) -> list[str]:
    with _open_text(path) as fh:
        return fh.readline().lstrip("\ufeff").strip().split(",")


def _open_text(path: Path):
    return gzip.open(path, "rt") if path.suffix == ".gz" else open(path, encoding="utf-8", errors="replace")


def csv_batches(path: Path, columns: list[str], has_header: bool,
                include: list[str] | None = None) -> Iterator[pl.DataFrame]:
    """The file (whose columns are `columns`) as all-text frames of the `include`d ones (default all) plus ROW,
    about FRAME_ROWS rows at a time: a 25-level book snapshot is read for its top level only."""
    origin = str(path)
    rows, pending, pending_rows = 0, [], 0
    reader = None
    try:
        reader = pacsv.open_csv(
            pa.input_stream(str(path), compression="detect"),
            read_options=pacsv.ReadOptions(column_names=columns, skip_rows=1 if has_header else 0,
                                           block_size=BLOCK_BYTES, use_threads=False),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in columns},
                                                 include_columns=include or columns,
                                                 strings_can_be_null=True, null_values=[""]))
        for batch in reader:
            pending.append(batch)
            pending_rows += batch.num_rows
            if pending_rows >= FRAME_ROWS:
                yield _frame(pending, rows)
                rows, pending, pending_rows = rows + pending_rows, [], 0
        if pending:
            yield _frame(pending, rows)
    except pa.ArrowInvalid as exc:
        row = _bad_row(path, len(columns), has_header)
        raise SchemaError(origin, f"not a CSV row of {len(columns)} fields {columns}: {exc}", row=row) from exc
    finally:
        if reader is not None:
            reader.close()  # a reader left open when the caller stops early keeps reading ahead


def _frame(batches: list[pa.RecordBatch], rows_before: int) -> pl.DataFrame:
    frame = pl.from_arrow(pa.Table.from_batches(batches))
    return frame.with_row_index(ROW, offset=rows_before + 1)


def _bad_row(path: Path, n_fields: int, has_header: bool) -> int | None:
    """Only on error: the first data row without `n_fields` fields (pyarrow's streaming reader does not say)."""
    with _open_text(path) as fh:
        for i, line in enumerate(fh, start=0 if has_header else 1):
            if i and line.strip() and line.count(",") != n_fields - 1:
                return i
    return None


def numbers(df: pl.DataFrame, columns: Iterable[str], origin: str, dtype=pl.Float64,
            required: bool = True) -> pl.DataFrame:
    """Cast text columns to numbers; a cell that is not one (or empty, when required) names row and field."""
    casts = []
    for c in columns:
        cast = df[c].str.strip_chars().cast(dtype, strict=False)
        bad = cast.is_null() & (df[c].is_not_null() | required)
        if bad.any():
            i = int(bad.arg_true()[0])
            value = df[c][i]
            what = "empty where a number is required" if value is None else f"{value!r} is not a number"
            raise SchemaError(origin, what, row=int(df[ROW][i]), field=c)
        casts.append(cast.alias(c))
    return df.with_columns(casts)


def booleans(df: pl.DataFrame, column: str, origin: str) -> pl.Series:
    text = df[column].str.strip_chars().str.to_lowercase()
    out = text.replace_strict({"true": True, "false": False}, default=None, return_dtype=pl.Boolean)
    if out.null_count():
        i = int(out.is_null().arg_true()[0])
        raise SchemaError(origin, f"{df[column][i]!r} is not true or false", row=int(df[ROW][i]), field=column)
    return out


def choice(df: pl.DataFrame, column: str, allowed: dict[str, str], origin: str) -> pl.Series:
    """Map a text column through `allowed`; any other value names row and field."""
    out = df[column].str.strip_chars().replace_strict(allowed, default=None, return_dtype=pl.Utf8)
    if out.null_count():
        i = int(out.is_null().arg_true()[0])
        raise SchemaError(origin, f"{df[column][i]!r} is not one of {sorted(allowed)}", row=int(df[ROW][i]),
                          field=column)
    return out


def epoch_us(col: str | pl.Expr) -> pl.Expr:
    """Epoch microseconds (Int64) -> Datetime("ms")."""
    e = pl.col(col) if isinstance(col, str) else col
    return (e // 1000).cast(TS)


def in_time_order(frames: Iterable[pl.DataFrame], origin: str, window_ms: int = 5_000,
                  series: tuple[str, ...] = ("symbol",)) -> Iterator[pl.DataFrame]:
    """Rows sorted by `ts` per series, allowing a row to come up to `window_ms` after a later one (vendor files
    are in receive order; exchange times jitter). Rows further out of order are an error naming the row."""
    held: pl.DataFrame | None = None
    window = timedelta(milliseconds=window_ms)
    latest = None  # the latest ts of the rows read so far, in file order
    for frame in frames:
        if frame.height == 0:
            continue
        seen_before = pl.col("ts").cum_max().shift(1)
        if latest is not None:
            seen_before = pl.max_horizontal(seen_before, pl.lit(latest, dtype=TS))
        late = frame.filter((pl.col("ts") < seen_before - window).fill_null(False))
        if late.height:
            raise SchemaError(origin, f"out of order by more than {window_ms} ms: {late['ts'][0]} comes after a "
                                      "later time", row=int(late[ROW][0]), field="ts")
        latest = frame["ts"].max() if latest is None else max(latest, frame["ts"].max())
        both = frame if held is None else pl.concat([held, frame])
        both = both.sort([*series, "ts", ROW])
        cut = latest - window
        ready, held = both.filter(pl.col("ts") < cut), both.filter(pl.col("ts") >= cut)
        if ready.height:
            yield ready
    if held is not None and held.height:
        yield held


def last_per_ts(frames: Iterable[pl.DataFrame], series: tuple[str, ...] = ("symbol",)) -> Iterator[pl.DataFrame]:
    """Keep the last row of each (series, ts) millisecond: raw.books is keyed by time, vendors send several
    updates within one ms. Frames must come in time order (see `in_time_order`)."""
    carry: pl.DataFrame | None = None
    for frame in frames:
        both = frame if carry is None else pl.concat([carry, frame])
        if both.height == 0:
            continue
        both = both.unique([*series, "ts"], keep="last", maintain_order=True)
        last_ts = both["ts"].max()
        carry, ready = both.filter(pl.col("ts") == last_ts), both.filter(pl.col("ts") < last_ts)
        if ready.height:
            yield ready
    if carry is not None and carry.height:
        yield carry


def raw_frame(table: str, df: pl.DataFrame) -> pl.DataFrame:
    """The frame in the raw table's columns and order; a nullable column the format lacks comes as nulls."""
    schema = RAW_TABLES[table]
    absent = [pl.lit(None, dtype=schema.columns[c]).alias(c) for c in schema.nullable
              if c in schema.columns and c not in df.columns]
    return df.with_columns(absent).select(list(schema.columns))
