"""Market data from files a user brings.

    DIR/ohlcv/<venue>/<BASE>_<QUOTE>[_<SETTLE>]/<timeframe>.(csv|parquet|json)
    DIR/funding/<venue>/<BASE>_<QUOTE>.(csv|parquet)

OHLCV has `timestamp` (epoch ms) or `date` (ISO 8601) plus open, high, low, close, volume, or is ccxt's
JSON list `[[ts, o, h, l, c, v], …]`. A `_<SETTLE>` suffix marks a perp (BTC_USDT_USDT -> BTC/USDT:USDT).
Funding files are perps' funding rates per interval. `raw.candles` holds 1-minute bars only: other
timeframes are listed as skipped, not mixed in.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path

import polars as pl

from sofia_pipelines.defs.market_data.sources import check_raw_frame
from sofia_runtime.schemas import RAW_TABLES, SchemaError

SUFFIXES = (".csv", ".parquet", ".json")
OHLCV = ("open", "high", "low", "close", "volume")


def _symbol(pair_dir: str, origin: str) -> tuple[str, str]:
    parts = pair_dir.split("_")
    if len(parts) == 2:
        return f"{parts[0]}/{parts[1]}", "spot"
    if len(parts) == 3:
        return f"{parts[0]}/{parts[1]}:{parts[2]}", "perp"
    raise SchemaError(origin, f"folder {pair_dir!r} is not <BASE>_<QUOTE> or <BASE>_<QUOTE>_<SETTLE>")


def _read_table(path: Path) -> pl.DataFrame:
    origin = str(path)
    try:
        if path.suffix == ".parquet":
            return pl.read_parquet(path)
        if path.suffix == ".csv":
            return pl.read_csv(path, infer_schema_length=0)  # all text: we parse and report bad cells ourselves
        rows = json.loads(path.read_text())
    except SchemaError:
        raise
    except Exception as exc:
        raise SchemaError(origin, f"unreadable file: {exc}") from exc
    if not isinstance(rows, list) or any(not isinstance(r, list) or len(r) != 6 for r in rows):
        bad = next((i for i, r in enumerate(rows) if not isinstance(r, list) or len(r) != 6), 0) \
            if isinstance(rows, list) else 0
        raise SchemaError(origin, "ccxt OHLCV JSON must be a list of [timestamp, open, high, low, close, volume]",
                          row=bad + 1)
    return pl.DataFrame(rows, schema=["timestamp", *OHLCV], orient="row", strict=False)


def _parse_time(df: pl.DataFrame, origin: str) -> pl.DataFrame:
    if "timestamp" in df.columns:
        raw = df["timestamp"]
        ms = raw.cast(pl.Int64, strict=False)
        bad = ms.is_null() & raw.is_not_null() | raw.is_null()
        field = "timestamp"
        ts = ms.cast(pl.Datetime("ms"))
    elif "date" in df.columns:
        raw = df["date"].cast(pl.Utf8)
        ts = raw.str.to_datetime(time_zone="UTC", strict=False, time_unit="ms")
        ts = ts.fill_null(raw.str.to_datetime(strict=False, time_unit="ms").dt.replace_time_zone("UTC"))
        ts = ts.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        bad = ts.is_null()
        field = "date"
    else:
        raise SchemaError(origin, "missing column 'timestamp' (epoch ms) or 'date' (ISO 8601)", field="timestamp")
    if bad.any():
        row = int(bad.arg_true()[0])
        raise SchemaError(origin, f"cannot read {df[field][row]!r} as a time", row=row + 1, field=field)
    return df.with_columns(ts.alias("ts"))


def _numeric(df: pl.DataFrame, columns: tuple[str, ...], origin: str) -> pl.DataFrame:
    for c in columns:
        if c not in df.columns:
            raise SchemaError(origin, f"missing column {c!r}; expected {list(columns)}", field=c)
        col = df[c]
        num = col.cast(pl.Float64, strict=False)
        bad = num.is_null()
        if bad.any():
            row = int(bad.arg_true()[0])
            raise SchemaError(origin, f"{col[row]!r} is not a number", row=row + 1, field=c)
        df = df.with_columns(num.alias(c))
    return df


@lru_cache(maxsize=256)
def _load_file(path: Path, mtime: float, table: str) -> pl.DataFrame:
    """Parse and validate one whole file; rows are reported as 1-based data rows of the file."""
    origin = str(path)
    df = _parse_time(_read_table(path), origin)
    venue = path.parents[1].name
    symbol, market = _symbol(path.parent.name if table == "candles" else path.stem, origin)
    if table == "candles":
        df = _numeric(df, OHLCV, origin).with_columns(
            pl.lit(venue).alias("venue"), pl.lit(symbol).alias("symbol"), pl.lit(market).alias("market"))
    else:
        if market == "spot":  # funding files name the perp by its pair: BTC_USDT -> BTC/USDT:USDT
            symbol = f"{symbol}:{symbol.split('/')[1]}"
        df = _numeric(df, ("funding_rate",), origin).with_columns(
            pl.lit(venue).alias("venue"), pl.lit(symbol).alias("symbol"))
    return check_raw_frame(table, df, origin)


class FilesSource:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.name = f"files:{self.root}"
        if not self.root.is_dir():
            raise FileNotFoundError(f"files source: {self.root} is not a folder")

    def candle_files(self) -> list[Path]:
        return sorted(p for p in (self.root / "ohlcv").glob("*/*/1m.*") if p.suffix in SUFFIXES)

    def skipped_files(self) -> list[Path]:
        """OHLCV files of other timeframes, which raw.candles does not hold."""
        return sorted(p for p in (self.root / "ohlcv").glob("*/*/*.*")
                      if p.suffix in SUFFIXES and p.stem != "1m")

    def funding_files(self) -> list[Path]:
        return sorted(p for p in (self.root / "funding").glob("*/*.*") if p.suffix in (".csv", ".parquet"))

    def _files(self, table: str) -> list[Path]:
        return {"candles": self.candle_files, "funding": self.funding_files}.get(table, list)()

    def provides(self) -> frozenset[str]:
        return frozenset(t for t in ("candles", "funding") if self._files(t))

    def load(self, table: str, start: datetime, end: datetime) -> pl.DataFrame:
        frames = [_load_file(p, p.stat().st_mtime, table) for p in self._files(table)]
        if not frames:
            return RAW_TABLES[table].empty()
        return pl.concat(frames).filter((pl.col("ts") >= start) & (pl.col("ts") < end))

    def available_days(self) -> list[date]:
        days: set[date] = set()
        for p in self.candle_files():
            days.update(_load_file(p, p.stat().st_mtime, "candles")["ts"].dt.date().unique().to_list())
        return sorted(days)
