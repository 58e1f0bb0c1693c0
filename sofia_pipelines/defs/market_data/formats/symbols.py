"""Vendor exchange ids and instrument names -> ccxt venue ids and unified symbols.

One mapping for every vendor format (Tardis.dev, Binance archives): a ccxt `load_markets()` dump of the
venue decides where one is given; otherwise the symbol is split at its quote currency and the result is
marked `inferred`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from sofia_runtime.schemas import SchemaError

# Tardis.dev exchange id -> (ccxt id, the market its symbols are; None: each symbol says, e.g. -PERPETUAL)
TARDIS_EXCHANGES: dict[str, tuple[str, str | None]] = {
    "binance": ("binance", "spot"),
    "binance-futures": ("binance", "perp"),
    "binance-delivery": ("binance", "perp"),
    "binance-us": ("binanceus", "spot"),
    "bitmex": ("bitmex", "perp"),
    "deribit": ("deribit", None),
    "okex": ("okx", "spot"),
    "okex-swap": ("okx", "perp"),
    "okx": ("okx", "spot"),
    "okx-swap": ("okx", "perp"),
    "bybit": ("bybit", "perp"),
    "bybit-spot": ("bybit", "spot"),
    "kraken": ("kraken", "spot"),
    "cryptofacilities": ("krakenfutures", "perp"),
    "coinbase": ("coinbase", "spot"),
    "bitfinex": ("bitfinex", "spot"),
    "bitfinex-derivatives": ("bitfinex", "perp"),
    "bitstamp": ("bitstamp", "spot"),
    "gemini": ("gemini", "spot"),
    "huobi": ("htx", "spot"),
    "huobi-dm-swap": ("htx", "perp"),
    "huobi-dm-linear-swap": ("htx", "perp"),
    "kucoin": ("kucoin", "spot"),
    "kucoin-futures": ("kucoinfutures", "perp"),
    "gate-io": ("gateio", "spot"),
    "gate-io-futures": ("gateio", "perp"),
    "bitget": ("bitget", "spot"),
    "bitget-futures": ("bitget", "perp"),
    "hyperliquid": ("hyperliquid", "perp"),
    "bittrex": ("bittrex", "spot"),
    "poloniex": ("poloniex", "spot"),
    "phemex": ("phemex", "perp"),
    "ftx": ("ftx", None),
}

# Longest first, so BTCFDUSD splits as BTC/FDUSD, not BTCFD/USD.
QUOTE_CURRENCIES = tuple(sorted((
    "USDT", "USDC", "FDUSD", "BUSD", "TUSD", "USDP", "USDS", "DAI", "USD", "EUR", "GBP", "TRY", "BRL", "JPY",
    "AUD", "RUB", "UAH", "ZAR", "PLN", "RON", "ARS", "MXN", "BIDR", "IDRT", "BTC", "ETH", "BNB", "XBT", "TRX",
    "XRP", "DOGE", "SOL", "DOT", "PAX",
), key=len, reverse=True))
ALIASES = {"XBT": "BTC"}
# What a venue's USD-quoted perps settle in where it is not their base (inverse): BitMEX's in XBT, FTX's in USD
USD_PERP_SETTLE = {"bitmex": "BTC", "ftx": "USD"}
# Venues that name a perp by its base alone, and the quote they all have
PERP_QUOTE = {"deribit": "USD", "ftx": "USD", "hyperliquid": "USDC"}
_PERP_SUFFIXES = ("-PERPETUAL", "-SWAP", "_PERP", "-PERP")
_EXPIRY = re.compile(r"^\d{6}$|^\d{1,2}[A-Z]{3}\d{2}$")


@dataclass(frozen=True)
class Instrument:
    venue: str  # ccxt id
    symbol: str  # ccxt unified
    market: str  # "spot" or "perp"
    inferred: bool  # True when split by quote currency, False when found in a markets dump


def tardis_venue(exchange: str, origin: str, row: int | None = None) -> tuple[str, str | None]:
    """(ccxt id, default market) of a Tardis.dev exchange id."""
    try:
        return TARDIS_EXCHANGES[exchange]
    except KeyError:
        raise SchemaError(origin, f"Tardis exchange {exchange!r} has no known ccxt id (known: "
                                  f"{', '.join(sorted(TARDIS_EXCHANGES))})", row=row, field="exchange") from None


def instrument(venue: str, raw_symbol: str, market: str | None, origin: str, *,
               markets: Mapping | list | None = None, row: int | None = None) -> Instrument:
    """The ccxt instrument a venue's own symbol names (`BTCUSDT`, `XBTUSD`, `BTC-PERPETUAL`, `BTC-USDT-SWAP`).
    `market` is what the file's source says ("spot"/"perp") or None to take it from the symbol."""
    if markets and _has_market_type(markets, market):
        return _from_markets(venue, raw_symbol, market, markets, origin, row)
    s = raw_symbol.upper()
    perp = False
    for prefix in ("PI_", "PF_"):  # Kraken Futures: PI_ inverse, PF_ linear multi-collateral
        if s.startswith(prefix):
            s, perp = s[len(prefix):], True
    for suffix in _PERP_SUFFIXES:
        if s.endswith(suffix):
            s, perp = s[: -len(suffix)], True
    if perp and market == "spot":
        raise SchemaError(origin, f"symbol {raw_symbol!r} is a perpetual, but the file is a spot market's",
                          row=row, field="symbol")
    market = market or ("perp" if perp else "spot")
    parts = [p for p in re.split(r"[-_/:]", s) if p]
    if any(_EXPIRY.match(p) for p in parts[1:]):
        raise SchemaError(origin, f"symbol {raw_symbol!r} is a dated future; raw tables hold spot and perpetuals",
                          row=row, field="symbol")
    if len(parts) == 2:
        base, quote = parts
    elif len(parts) == 1 and market == "perp" and venue in PERP_QUOTE:
        base, quote = parts[0], PERP_QUOTE[venue]  # BTC-PERPETUAL, BTC-PERP, BTC: the venue's one quote
    elif len(parts) == 1:
        base, quote = _split_at_quote(parts[0], raw_symbol, origin, row)
    else:
        raise SchemaError(origin, f"symbol {raw_symbol!r} is not BASE QUOTE", row=row, field="symbol")
    base, quote = ALIASES.get(base, base), ALIASES.get(quote, quote)
    if market == "spot":
        return Instrument(venue, f"{base}/{quote}", "spot", True)
    inverse = quote == "USD" and not raw_symbol.upper().startswith("PF_")
    settle = USD_PERP_SETTLE.get(venue, base) if inverse else quote
    return Instrument(venue, f"{base}/{quote}:{settle}", "perp", True)


def markets_for(hints, venue: str) -> Mapping | None:
    """The ccxt markets dump of `venue` among the hints' dumps (by venue id), None when there is none."""
    markets = getattr(hints, "markets", None) or {}
    return markets.get(venue)


def _split_at_quote(s: str, raw_symbol: str, origin: str, row: int | None) -> tuple[str, str]:
    for alias, name in ALIASES.items():
        if s.startswith(alias):
            s = name + s[len(alias):]
    splits = [(s[: -len(q)], q) for q in QUOTE_CURRENCIES if s.endswith(q) and len(s) > len(q)]
    if not splits:
        raise SchemaError(origin, f"symbol {raw_symbol!r} does not end in a known quote currency "
                                  f"({', '.join(QUOTE_CURRENCIES)}); give a ccxt markets dump", row=row,
                          field="symbol")
    # DOTUSD is DOT/USD, not DO/TUSD: the longest quote that leaves a base of three letters or more
    return next((split for split in splits if len(split[0]) >= 3), splits[0])


def _has_market_type(markets: Mapping | list, market: str | None) -> bool:
    """A dump loaded with spot markets only says nothing about the venue's perps: those are inferred."""
    entries = markets.values() if isinstance(markets, Mapping) else markets
    return market is None or any(bool(m.get("swap")) == (market == "perp") for m in entries)


def _from_markets(venue: str, raw_symbol: str, market: str | None, markets: Mapping | list, origin: str,
                  row: int | None) -> Instrument:
    entries = markets.values() if isinstance(markets, Mapping) else markets
    candidates = [m for m in entries if str(m.get("id", "")).upper() == raw_symbol.upper()
                  and (m.get("spot") or m.get("swap"))]
    if market is not None:
        candidates = [m for m in candidates if bool(m.get("swap")) == (market == "perp")]
    if len(candidates) != 1:
        what = "no market" if not candidates else f"{len(candidates)} markets ({[m['symbol'] for m in candidates]})"
        raise SchemaError(origin, f"the markets dump of {venue} has {what} with id {raw_symbol!r}"
                                  + (f" for {market}" if market else "; the path should say spot or perp"),
                          row=row, field="symbol")
    found = candidates[0]
    return Instrument(venue, found["symbol"], "perp" if found.get("swap") else "spot", False)
