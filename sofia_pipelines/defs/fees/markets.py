"""Markets for whatever the data holds: every (venue, symbol) of the raw tables resolved, in this order, from

(a) a ccxt `load_markets()` dump in the source folder (told by its content, any file name; the venue is the
    ccxt exchange id found in its path, e.g. `markets/binance.json` or `binance/markets.json`),
(b) `config/markets.yaml`,
(c) the data itself: the tick from the smallest positive price increment of candles and trades, the amount step
    from the smallest increment of trade amounts (of candle volumes where there are no trades).

Each row's `source` names which. ccxt dumps hold precision either as decimal places or as tick sizes, by the
exchange class's `precisionMode`; both become tick and step sizes here.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from functools import lru_cache
from collections.abc import Mapping
from pathlib import Path

import polars as pl

from sofia_runtime.schemas import MARKETS, SchemaError

INFERRED = "inferred:price_increments"
MAX_DUMP_BYTES = 64 * 1024 * 1024
DECIMAL_PLACES, SIGNIFICANT_DIGITS, TICK_SIZE = 2, 3, 4  # ccxt's precision modes (ccxt.DECIMAL_PLACES …)
_MODE_NAMES = {DECIMAL_PLACES: "decimal places", SIGNIFICANT_DIGITS: "significant digits", TICK_SIZE: "tick sizes"}


def split_symbol(symbol: str) -> tuple[str, str, str]:
    """base, quote and market of a ccxt unified symbol: BTC/USDT:USDT -> (BTC, USDT, perp)."""
    pair, _, settle = symbol.partition(":")
    base, _, quote = pair.partition("/")
    return base, quote, "perp" if settle else "spot"


# --- (a) ccxt load_markets() dumps ----------------------------------------------------------------
def _is_market_dump(obj) -> bool:
    # every entry a market under its own symbol; stubs (a future, an option) may lack precision and limits
    return (isinstance(obj, dict) and bool(obj) and all(isinstance(m, dict) and k == m.get("symbol")
                                                        for k, m in obj.items())
            and any("precision" in m and "limits" in m for m in obj.values()))


def _venue_of(path: Path, root: Path) -> str | None:
    import ccxt

    parts = [path.stem, *(p.name for p in path.parents if p == root or root in p.parents)]
    for part in parts:
        for word in [part.lower(), *re.split(r"[^a-z0-9]+", part.lower())]:
            if word in ccxt.exchanges:
                return word
    return None


@lru_cache(maxsize=1024)
def _market_dump(path: Path, mtime_ns: int, size: int) -> dict | None:
    """The file's markets when it is a ccxt markets dump, else None (read once per version of the file)."""
    if size > MAX_DUMP_BYTES:
        return None
    with path.open("rb") as fh:
        if fh.read(64).lstrip()[:1] != b"{":
            return None  # OHLCV lists and the like: not a markets object
    try:
        obj = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None  # not JSON a markets dump could be: the files source reports what it cannot read
    return obj if _is_market_dump(obj) else None


def find_market_dumps(root: Path | None) -> tuple[dict[str, tuple[Path, dict]], list[str]]:
    """ccxt market dumps under `root` by venue, and notes on dumps that could not be used (no venue in the path)."""
    dumps: dict[str, tuple[Path, dict]] = {}
    notes: list[str] = []
    if root is None:
        return dumps, notes
    root = Path(root)
    for path in sorted(root.rglob("*.json")):
        stat = path.stat()
        obj = _market_dump(path, stat.st_mtime_ns, stat.st_size)
        if obj is None:
            continue
        venue = _venue_of(path, root)
        if venue is None:
            notes.append(f"{path}: a ccxt markets dump, but no ccxt exchange id in its path names its venue")
            continue
        if venue in dumps:
            raise SchemaError(str(path), f"a second ccxt markets dump for {venue} (the first is {dumps[venue][0]})")
        dumps[venue] = (path, obj)
    return dumps, notes


def precision_mode(venue: str, dump: Mapping) -> tuple[int, str]:
    """How the dump's `precision` reads, and why. ccxt's exchange class says (offline), unless the dump's own
    numbers say otherwise: whole numbers above 1 everywhere are decimal places (dumps from ccxt versions that
    used them, as binance's did), any fraction is a tick size."""
    import ccxt

    declared = getattr(ccxt, venue)().precisionMode
    precisions = [m.get("precision") for m in dump.values() if isinstance(m, Mapping)]
    values = [float(v) for p in precisions if isinstance(p, Mapping) for k, v in p.items()
              if k in ("price", "amount") and isinstance(v, (int, float)) and not isinstance(v, bool)
              and math.isfinite(v)]
    if values and any(not v.is_integer() for v in values):
        found = TICK_SIZE
    elif values and any(v > 1 for v in values):
        found = DECIMAL_PLACES
    else:
        found = declared
    why = f"precision in {_MODE_NAMES.get(found, found)}"
    if found != declared:
        why += f", although ccxt {ccxt.__version__} says {_MODE_NAMES.get(declared, declared)} for {venue}"
    return found, why


def _to_step(value, mode: int, origin: str, field: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise SchemaError(origin, f"precision {value!r} is not a number", field=field)
    if mode == DECIMAL_PLACES and value >= 0 and float(value).is_integer():
        return float(10.0 ** -value)
    if mode == TICK_SIZE and value > 0:
        return float(value)
    if mode in (DECIMAL_PLACES, TICK_SIZE):
        raise SchemaError(origin, f"precision {value!r} is not a valid count of {_MODE_NAMES[mode]}"
                          if mode == DECIMAL_PLACES else f"tick size {value!r} is not positive", field=field)
    raise SchemaError(origin, f"precision in {_MODE_NAMES.get(mode, mode)} cannot be turned into a tick size "
                              "without a price", field=field)


def dump_markets(venue: str, path: Path, dump: Mapping, symbols: list[str]) -> pl.DataFrame:
    """MARKETS rows of `symbols` found in one venue's dump, precision converted to tick and step sizes."""
    mode, why = precision_mode(venue, dump)
    rows = []
    for symbol in symbols:
        m = dump.get(symbol)
        if m is None:
            continue
        if not isinstance(m, Mapping):
            raise SchemaError(str(path), f"market {symbol!r} is a {type(m).__name__}, not an object", field=symbol)
        precision = _section(m, "precision", path, symbol)
        limits = _section(m, "limits", path, symbol)
        tick = _to_step(precision.get("price"), mode, str(path), f"{symbol}.precision.price")
        step = _to_step(precision.get("amount"), mode, str(path), f"{symbol}.precision.amount")
        min_amount = _limit(limits, "amount", path, symbol)
        base, quote, market = split_symbol(symbol)
        names = {k: m.get(k) or default for k, default in (("base", base), ("quote", quote))}
        for k, v in names.items():
            if not isinstance(v, str):
                raise SchemaError(str(path), f"{k} {v!r} is not a currency code", field=f"{symbol}.{k}")
        rows.append({"venue": venue, "symbol": symbol, "market": "perp" if m.get("swap") else market,
                     **names, "price_tick": tick, "amount_step": step, "min_amount": min_amount or step,
                     "min_notional": _limit(limits, "cost", path, symbol),
                     "source": f"ccxt load_markets() {venue}: {path.name}, {why}"})
    return _frame(rows, str(path))


def _section(market: Mapping, name: str, path: Path, symbol: str) -> Mapping:
    value = market.get(name) or {}
    if not isinstance(value, Mapping):
        raise SchemaError(str(path), f"{name} {value!r} is not an object", field=f"{symbol}.{name}")
    return value


def _limit(limits: Mapping, name: str, path: Path, symbol: str) -> float | None:
    """limits.<name>.min as a number (None when the dump has none)."""
    entry = limits.get(name) or {}
    if not isinstance(entry, Mapping):
        raise SchemaError(str(path), f"limits.{name} {entry!r} is not an object", field=f"{symbol}.limits.{name}")
    value = entry.get("min")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 \
            or value > 1e15:
        raise SchemaError(str(path), f"limits.{name}.min {value!r} is not a finite number >= 0",
                          field=f"{symbol}.limits.{name}.min")
    return float(value)


# --- (c) inferred from the data ------------------------------------------------------------------
def smallest_increments(values: pl.DataFrame, column: str) -> pl.DataFrame:
    """Per venue and symbol, the smallest positive step between distinct values of `column` (or the smallest
    value, if smaller): a multiple of the true tick, and the tick itself once the data has a one-tick move.
    Values are compared at 12 significant digits so that binary-float noise is not taken for a tick."""
    return (values.select("venue", "symbol", pl.col(column).round_sig_figs(12).alias("v"))
            .filter(pl.col("v") > 0).unique().sort("venue", "symbol", "v")
            .with_columns((pl.col("v") - pl.col("v").shift(1).over("venue", "symbol")).alias("d"))
            .group_by("venue", "symbol")
            .agg(pl.min_horizontal(pl.col("d").filter(pl.col("d") > 0).min(), pl.col("v").min())
                 .round_sig_figs(6).alias(column)))


def decimal_steps(values: pl.DataFrame, column: str) -> pl.DataFrame:
    """Per venue and symbol, 10^-d for the most decimals d any value of `column` has (at 12 significant digits):
    the step of sums of amounts, such as candle volumes, whose increments say nothing about the step."""
    def step(v: float) -> float:
        return float(Decimal(1).scaleb(min(Decimal(f"{v:.12g}").normalize().as_tuple().exponent, 0)))

    return (values.filter(pl.col(column) > 0).unique()
            .with_columns(pl.col(column).map_elements(step, return_dtype=pl.Float64))
            .group_by("venue", "symbol").agg(pl.col(column).min()))


def inferred_markets(observed: pl.DataFrame, prices: pl.DataFrame, amounts: pl.DataFrame,
                     volumes: pl.DataFrame | None = None) -> pl.DataFrame:
    """MARKETS rows for `observed` (venue, symbol, market) from `prices` (venue, symbol, price), trade `amounts`
    (venue, symbol, amount) and, for markets without trades, candle `volumes` (venue, symbol, amount); markets
    with no price or no amount at all are left out (the caller reports them)."""
    ticks = smallest_increments(prices, "price").rename({"price": "price_tick"})
    steps = smallest_increments(amounts, "amount")
    if volumes is not None:
        steps = pl.concat([steps, decimal_steps(volumes.join(steps, on=["venue", "symbol"], how="anti"), "amount")])
    steps = steps.rename({"amount": "amount_step"})
    rows = []
    for m in observed.join(ticks, on=["venue", "symbol"]).join(steps, on=["venue", "symbol"]).iter_rows(named=True):
        base, quote, _ = split_symbol(m["symbol"])
        step = m["amount_step"]
        rows.append({"venue": m["venue"], "symbol": m["symbol"], "market": m["market"], "base": base, "quote": quote,
                     "price_tick": m["price_tick"], "amount_step": step, "min_amount": step, "min_notional": None,
                     "source": INFERRED})
    return _frame(rows, "markets inferred from the data")


def _frame(rows: list[dict], origin: str) -> pl.DataFrame:
    if not rows:
        return MARKETS.empty()
    return MARKETS.conform(pl.DataFrame(rows, schema_overrides={"min_notional": pl.Float64,
                                                                "amount_step": pl.Float64}), origin)


# --- resolution -------------------------------------------------------------------------------------
def resolve_markets(observed: pl.DataFrame, dumps: Mapping[str, tuple[Path, dict]], configured: pl.DataFrame,
                    infer) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Every observed (venue, symbol, market) resolved from a dump, else the config, else `infer(unresolved)`
    (a function returning inferred rows). Returns the markets and the observed markets none of them resolved."""
    key = ["venue", "symbol"]
    parts = [dump_markets(venue, path, dump, observed.filter(pl.col("venue") == venue)["symbol"].to_list())
             for venue, (path, dump) in sorted(dumps.items())]
    found = pl.concat(parts) if parts else MARKETS.empty()
    rest = observed.join(found, on=key, how="anti")
    found = pl.concat([found, configured.join(rest.select(key), on=key, how="semi")])
    rest = observed.join(found, on=key, how="anti")
    if rest.height:
        found = pl.concat([found, infer(rest)])
    return found.sort(key), observed.join(found, on=key, how="anti").sort(key)


# --- reading the raw tables ------------------------------------------------------------------------
RAW_WITH_MARKETS = ("candles", "books", "trades", "funding")


def observed_markets(conn) -> pl.DataFrame:
    """Distinct (venue, symbol, market) of the raw tables; funding rows are perps'."""
    from sofia_pipelines.warehouse import table_exists

    market = {t: "market" for t in RAW_WITH_MARKETS} | {"funding": "'perp'"}
    selects = [f"SELECT DISTINCT venue, symbol, {market[t]} AS market, {i} AS prio FROM raw.{t}"
               for i, t in enumerate(RAW_WITH_MARKETS) if table_exists(conn, "raw", t)]
    if not selects:
        return pl.DataFrame(schema={"venue": pl.Utf8, "symbol": pl.Utf8, "market": pl.Utf8})
    return conn.sql(f"SELECT venue, symbol, arg_min(market, prio) AS market FROM ({' UNION ALL '.join(selects)}) "
                    "GROUP BY ALL ORDER BY venue, symbol").pl()


def observed_values(conn, markets: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Distinct prices (candles' OHLC and trade prices), trade amounts and candle volumes of `markets`
    (venue, symbol), the arguments of `inferred_markets`."""
    from sofia_pipelines.warehouse import table_exists

    conn.register("_sofia_markets", markets.select("venue", "symbol").to_arrow())
    try:
        prices, amounts = [], []
        if table_exists(conn, "raw", "candles"):
            prices.append("SELECT DISTINCT venue, symbol, unnest([open, high, low, close]) AS price FROM raw.candles "
                          "SEMI JOIN _sofia_markets USING (venue, symbol)")
        if table_exists(conn, "raw", "trades"):
            prices.append("SELECT DISTINCT venue, symbol, price FROM raw.trades SEMI JOIN _sofia_markets "
                          "USING (venue, symbol)")
            amounts.append("SELECT DISTINCT venue, symbol, amount FROM raw.trades SEMI JOIN _sofia_markets "
                           "USING (venue, symbol)")
        volumes = ["SELECT DISTINCT venue, symbol, volume AS amount FROM raw.candles SEMI JOIN _sofia_markets "
                   "USING (venue, symbol)"] if table_exists(conn, "raw", "candles") else []

        def read(selects: list[str], column: str) -> pl.DataFrame:
            if not selects:
                return pl.DataFrame(schema={"venue": pl.Utf8, "symbol": pl.Utf8, column: pl.Float64})
            return conn.sql(" UNION ".join(selects)).pl()

        return read(prices, "price"), read(amounts, "amount"), read(volumes, "amount")
    finally:
        conn.unregister("_sofia_markets")
