"""Market data from files a user brings: every file under DIR (recursively, symlinks followed) in one of the
formats of `formats/` (see README, Sources). The path says what the rows do not:

    DIR/…/<venue>_<BASE>_<QUOTE>[_<SETTLE>]_<tf>[_futures|_funding_rate].parquet   freqtrade's test-data layout
    DIR/…/<venue>/[futures/]<BASE>_<QUOTE>[_<SETTLE>]-<tf>[-<candle type>].(feather|parquet|json)   freqtrade's own
    DIR/…/<venue>_<BASE>_<QUOTE>[_<SETTLE>]_(trades|books|quotes).parquet, <venue>/<BASE>_<QUOTE>-trades.feather
    DIR/ohlcv/<venue>/<BASE>_<QUOTE>[_<SETTLE>]/<tf>.(csv|parquet|json)
    DIR/funding/<venue>/<BASE>_<QUOTE>[_<SETTLE>].(csv|parquet|json)
A `_<SETTLE>` part marks a perp (BTC_USDT_USDT -> BTC/USDT:USDT); funding is a perp's by definition.
Documentation (*.md), hidden files and mark/index/premium-index candles are listed by `ignored()`, not
read; a file in no known format is an error naming it. Every batch a format yields is checked by
`check_raw_frame` (rows numbered in the file) before `load` returns anything.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import polars as pl

from sofia_pipelines.defs.fees.markets import find_market_dumps
from sofia_pipelines.defs.market_data.formats import HEAD_BYTES, FileHints, Format, format_of, is_ignored, read_head
from sofia_pipelines.defs.market_data.sources import check_raw_frame, series_order
from sofia_runtime.schemas import RAW_TABLES, SchemaError

_PAIR = r"(?P<base>[A-Z0-9]+)_(?P<quote>[A-Z0-9]+)(?:_(?P<settle>[A-Z0-9]+))?"
_TF = r"(?P<tf>\d+[smhdwM])"
_KIND = r"(?P<kind>futures|spot|mark|index|premiumIndex|funding_rate)"
FREQTRADE_FLAT = re.compile(rf"^(?P<venue>[a-z][a-z0-9]*)_{_PAIR}_"
                            rf"(?:{_TF}(?:_{_KIND})?|(?:ccxt_)?(?P<table>trades|books|quotes)(?:_\w+)?)$")
FREQTRADE_OWN = re.compile(rf"^{_PAIR}-(?:{_TF}(?:-{_KIND})?|(?P<table>trades))$")
# candle types that are not trades' prices: raw.candles holds what traded
NOT_TRADED = {"mark": "mark-price candles", "index": "index-price candles", "premiumIndex": "premium-index candles"}
KINDS = {"futures": "candles", "spot": "candles", "funding_rate": "funding", None: "candles"}


def _symbol(base: str, quote: str, settle: str | None, perp: bool = False) -> tuple[str, str]:
    if settle or perp:
        return f"{base}/{quote}:{settle or quote}", "perp"
    return f"{base}/{quote}", "spot"


def hints_from_path(path: Path, root: Path) -> FileHints:
    """Venue, symbol, market, timeframe and kind as far as the path says them."""
    stem = path.name.split(".")[0]
    parts = path.relative_to(root).parts
    for layout in ("ohlcv", "funding"):
        if layout in parts[:-1]:
            i = parts.index(layout)
            tail = parts[i + 1:]
            if layout == "ohlcv" and len(tail) == 3 and (m := re.fullmatch(_PAIR, tail[1])) \
                    and re.fullmatch(_TF, stem):
                return FileHints(tail[0], *_symbol(m["base"], m["quote"], m["settle"]), timeframe=stem,
                                 kind="candles")
            if layout == "funding" and len(tail) == 2 and (m := re.fullmatch(_PAIR, stem)):
                return FileHints(tail[0], *_symbol(m["base"], m["quote"], m["settle"], perp=True), kind="funding")
            raise SchemaError(str(path), f"a file under {layout}/ must be " + (
                "ohlcv/<venue>/<BASE>_<QUOTE>[_<SETTLE>]/<timeframe>.<ext>" if layout == "ohlcv"
                else "funding/<venue>/<BASE>_<QUOTE>[_<SETTLE>].<ext>"))
    if m := FREQTRADE_FLAT.match(stem):
        venue = m["venue"]
    elif m := FREQTRADE_OWN.match(stem):
        folder = path.parent if path.parent.name != "futures" else path.parent.parent
        venue = folder.name if folder != root.parent else None
    else:
        return FileHints()
    if m["table"]:
        kind = {"quotes": "books"}.get(m["table"], m["table"])
    else:
        kind = m["kind"] if m["kind"] in NOT_TRADED else KINDS[m["kind"]]
    symbol, market = _symbol(m["base"], m["quote"], m["settle"], perp=kind == "funding" or m["kind"] == "futures")
    return FileHints(venue, symbol, market, timeframe=m["tf"] if kind in ("candles", *NOT_TRADED) else None, kind=kind)


@dataclass(frozen=True)
class _Indexed:
    format: Format
    hints: FileHints
    days: dict[str, frozenset[date]]  # raw table -> UTC days it has rows on


@dataclass(frozen=True)
class _Survey:
    state: tuple[tuple[Path, int, int], ...]
    ignored: dict[str, str]
    markets: dict[str, dict]
    markets_key: tuple  # which dumps, in which version: formats name symbols by them
    data: tuple[tuple[Path, int, int], ...]


# per file version (path, mtime, size, DIR, the markets dumps in force): its format, hints and days
_INDEX: dict[tuple, _Indexed] = {}


class FilesSource:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.name = f"files:{self.root}"
        self._surveyed: _Survey | None = None
        if not self.root.is_dir():
            raise FileNotFoundError(f"files source: {self.root} is not a folder")

    def _walk(self) -> tuple[tuple[Path, int, int], ...]:
        """Every file under DIR with its mtime and size: what decides whether anything must be read again."""
        found, seen = [], set()
        for folder, dirs, files in os.walk(self.root, followlinks=True):
            real = os.path.realpath(folder)
            if real in seen:  # a symlink back up the tree: walked once
                dirs[:] = []
                continue
            seen.add(real)
            dirs.sort()
            for name in sorted(files):
                path = Path(folder) / name
                stat = path.stat()
                found.append((path, stat.st_mtime_ns, stat.st_size))
        return tuple(found)

    def _survey(self) -> _Survey:
        state = self._walk()
        if self._surveyed is None or self._surveyed.state != state:
            dumps = find_market_dumps(self.root)[0]
            dump_paths = {p for p, _ in dumps.values()}
            ignored = {}
            for path, _, _ in state:
                rel = path.relative_to(self.root)
                if is_ignored(path) or any(p.startswith(".") for p in rel.parts):
                    ignored[str(rel)] = "documentation or hidden file"
                elif path in dump_paths:
                    ignored[str(rel)] = "ccxt markets dump: names vendor symbols, read by the markets asset"
                elif _is_currencies_dump(path):
                    ignored[str(rel)] = "ccxt currencies dump: no market data"
                elif (kind := hints_from_path(path, self.root).kind) in NOT_TRADED:
                    ignored[str(rel)] = f"{NOT_TRADED[kind]}: raw.candles holds traded prices"
            markets = {venue: dump for venue, (_, dump) in dumps.items()}
            versions = {path: (mtime, size) for path, mtime, size in state}
            dumps_key = tuple(sorted((venue, str(path), versions.get(path)) for venue, (path, _) in dumps.items()))
            data = tuple(f for f in state if str(f[0].relative_to(self.root)) not in ignored)
            self._surveyed = _Survey(state, ignored, markets, dumps_key, data)
        return self._surveyed

    def market_dumps(self) -> dict[str, dict]:
        """ccxt load_markets() dumps in DIR by venue: they name vendor symbols (and feed the markets asset)."""
        return self._survey().markets

    def ignored(self) -> dict[str, str]:
        """Files deliberately not read as market data (path relative to DIR -> why), for the asset's metadata."""
        return self._survey().ignored

    def data_files(self) -> list[Path]:
        return [path for path, _, _ in self._survey().data]

    def _index(self) -> dict[Path, _Indexed]:
        survey, out = self._survey(), {}
        markets = survey.markets or None
        for path, mtime, size in survey.data:
            key = (path, mtime, size, self.root, survey.markets_key)
            if key not in _INDEX:
                hints = dataclasses.replace(hints_from_path(path, self.root), markets=markets)
                fmt = format_of(path)
                days: dict[str, set[date]] = {}
                scan = getattr(fmt, "times", None)
                batches = scan(path, hints) if scan else ((t, df["ts"]) for t, df in fmt.read(path, hints))
                for table, ts in batches:
                    days.setdefault(table, set()).update(ts.dt.date().unique().to_list())
                _INDEX[key] = _Indexed(fmt, hints, {t: frozenset(d) for t, d in days.items()})
            out[path] = _INDEX[key]
        return out

    def provides(self) -> frozenset[str]:
        return frozenset(t for entry in self._index().values() for t, days in entry.days.items() if days)

    def available_days(self) -> list[date]:
        return sorted({d for entry in self._index().values() for days in entry.days.values() for d in days})

    def load(self, table: str, start: datetime, end: datetime) -> pl.DataFrame:
        """The table's rows in [start, end) from every file that has some; each file is checked whole."""
        frames = []
        for path, entry in self._index().items():
            if any(start.date() <= d <= end.date() for d in entry.days.get(table, ())):
                frames += [df.with_columns(pl.lit(str(path)).alias("_file"))
                           for df in _read_checked(path, entry, table, start, end)]
        if not frames:
            return RAW_TABLES[table].empty()
        df = pl.concat(frames)
        keys = list(RAW_TABLES[table].keys)
        dup = df.filter(pl.struct(keys).is_duplicated())
        if dup.height:
            files = sorted(dup["_file"].unique().to_list())
            first = dup.row(0, named=True)
            key = {k: first[k] for k in keys}
            if len(files) == 1:  # the same row in two batches of one file
                raise SchemaError(files[0], f"duplicate row for key {key}", field=keys[-1])
            raise SchemaError(files[0], f"rows for key {key} are also in {files[1:]}: one series, one file",
                              field=keys[-1])
        return df.drop("_file")


def _is_currencies_dump(path: Path) -> bool:
    """ccxt fetch_currencies() output: {code: {id, code, precision, …}} (small; read only when it looks like one)."""
    if path.suffix != ".json" or path.stat().st_size > 16 * HEAD_BYTES * 64:
        return False
    head = read_head(path).lstrip()
    if head[:1] != b"{" or b'"code"' not in head:
        return False
    try:
        obj = json.loads(path.read_text())
    except ValueError:
        return False
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, dict) and v.get("code") == k
                                                       for k, v in obj.items())


def _read_checked(path: Path, entry: _Indexed, table: str, start: datetime, end: datetime):
    """The file's rows of `table` in the window, every batch checked; a series must stay in time order
    across batches too."""
    origin, row, last = str(path), 1, None
    schema = RAW_TABLES[table]
    series = series_order(schema)[:-1]
    for name, batch in entry.format.read(path, entry.hints):
        if name == table:
            df = check_raw_frame(table, batch, origin, row_offset=row)
            if last is not None and df.height:
                firsts = df.with_row_index("_row").group_by(series, maintain_order=True).first()
                joined = firsts.join(last, on=series, suffix="_last")
                back = joined.filter(pl.col("ts") < pl.col("ts_last"))
                if back.height:
                    raise SchemaError(origin, f"out of order: {back['ts'][0]} comes after a later time",
                                      row=int(back["_row"][0]) + row, field="ts")
            last = df.group_by(series).agg(pl.col("ts").max()) if last is None else \
                pl.concat([last, df.select(*series, "ts")]).group_by(series).agg(pl.col("ts").max())
            yield df.filter((pl.col("ts") >= start) & (pl.col("ts") < end))
        row += batch.height
