"""The embedded market simulator: a deterministic, seeded market that looks like one (the default source of the
raw assets, and of the paper runtime with `--source simulator`).

One fundamental price per base asset follows a GARCH(1,1) process with Student-t shocks (fat tails,
volatility clustering) scaled by an intraday activity profile. Each venue quotes it with a small
mean-reverting basis (so cross-venue prices stay within arbitrage bounds); perps add a funding-driven
basis; BtcTurk quotes in TRY through USD/TRY with a local premium. Volume, spread and latency follow the
same UTC-hour profile; venues have outages (no quotes, failing probes) and latency spikes; funding rates
move between persistent regimes.

The fundamental path for the whole span is drawn once (cheap); every other table is drawn per day from
an RNG seeded by (seed, day, table), so a day is reproducible on its own and days join continuously.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from sofia_runtime.schemas import LATENCY_ENDPOINTS, RAW_TABLES

DEFAULT_END = date(2026, 11, 1)
DEFAULT_BASES = ("BTC", "ETH", "SOL", "XRP", "AVAX", "DOGE")
DEFAULT_VENUES = ("binance", "okx", "bybit", "btcturk")
TRY_BASES = ("BTC", "ETH")
START_PRICES = {"BTC": 68_000.0, "ETH": 2_500.0, "SOL": 150.0, "XRP": 0.55, "AVAX": 27.0, "DOGE": 0.12}
# per-venue taste: base spread (bps), latency medians (ms) for public REST, private REST, websocket
VENUE_PROFILE = {
    "binance": {"spread_bps": 0.8, "latency": (35.0, 55.0, 12.0), "depth": 1.0},
    "okx": {"spread_bps": 1.2, "latency": (60.0, 80.0, 20.0), "depth": 0.7},
    "bybit": {"spread_bps": 1.0, "latency": (50.0, 70.0, 18.0), "depth": 0.8},
    "btcturk": {"spread_bps": 6.0, "latency": (110.0, 140.0, 45.0), "depth": 0.15},
}
FUNDING_EVERY_4H = {("bybit", "DOGE"), ("okx", "SOL")}
STEP_S = 10  # book snapshot interval
STEPS_PER_MIN = 60 // STEP_S
MIN_PER_DAY = 1440
PROBE_EVERY_S = 15


@dataclass(frozen=True)
class Instrument:
    venue: str
    base: str
    quote: str
    market: str  # "spot" | "perp"

    @property
    def symbol(self) -> str:
        return f"{self.base}/{self.quote}:{self.quote}" if self.market == "perp" else f"{self.base}/{self.quote}"


def hour_profile(hours: np.ndarray) -> np.ndarray:
    """Activity by UTC hour: busiest around the US open, a smaller Asian bump, quiet at ~04 and ~22 UTC."""
    h = np.asarray(hours, dtype=float)
    return 0.55 + 0.9 * np.exp(-((h - 14.5) / 2.5) ** 2) + 0.35 * np.exp(-((h - 1.5) / 2.0) ** 2) \
        + 0.25 * np.exp(-((h - 8.5) / 2.0) ** 2)


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _bases(n: int) -> tuple[str, ...]:
    """The six named bases, then synthetic SYM07, SYM08, … for scale runs."""
    extra = tuple(f"SYM{i:02d}" for i in range(len(DEFAULT_BASES) + 1, n + 1))
    return (DEFAULT_BASES + extra)[:n]


class MarketSimulator:
    """Implements the MarketSource protocol (name, provides, load, available_days)."""

    name = "simulated"

    def __init__(self, seed: int = 7, end: date = DEFAULT_END, days: int = 7,
                 bases: Sequence[str] = DEFAULT_BASES, venues: Sequence[str] = DEFAULT_VENUES):
        self.seed, self.end, self.n_days = seed, end, days
        self.bases, self.venues = tuple(bases), tuple(venues)
        self.start = end - timedelta(days=days)
        self.instruments = [
            Instrument(v, b, "TRY", "spot") if v == "btcturk" else Instrument(v, b, "USDT", m)
            for v in self.venues for b in self.bases for m in ("spot", "perp")
            if (v != "btcturk" or (b in TRY_BASES and m == "spot"))
        ]
        self._fundamental = self._draw_fundamental()
        self._fx = self._draw_fx()
        self._funding_regimes = self._draw_funding_regimes()

    # --- MarketSource -------------------------------------------------------------------------
    def provides(self) -> frozenset[str]:
        return frozenset(RAW_TABLES)

    def available_days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range(self.n_days)]

    def load(self, table: str, start: datetime, end: datetime) -> pl.DataFrame:
        if table not in RAW_TABLES:
            raise KeyError(f"simulator has no table {table!r}; it has {sorted(RAW_TABLES)}")
        frames = [self.day(d)[table] for d in self.available_days()
                  if datetime.combine(d, datetime.min.time()) < end
                  and datetime.combine(d + timedelta(days=1), datetime.min.time()) > start]
        if not frames:
            return RAW_TABLES[table].empty()
        df = pl.concat(frames)
        return df.filter((pl.col("ts") >= start) & (pl.col("ts") < end))

    # --- the whole span, drawn once --------------------------------------------------------------
    def _draw_fundamental(self) -> np.ndarray:
        """10-second log-price path per base: shape (bases, days * 8640 + 1)."""
        n_min = self.n_days * MIN_PER_DAY
        minutes = np.arange(n_min)
        season = np.sqrt(hour_profile((minutes // 60) % 24))
        rng = _rng(self.seed, "fundamental", self.start)
        nu = 4.0
        shocks = rng.standard_t(nu, size=(len(self.bases), n_min)) / np.sqrt(nu / (nu - 2))
        sigma0 = 0.0009  # per-minute vol at the quiet level (~ 50 %/yr … 80 %/yr once seasonality is in)
        omega, alpha, beta = sigma0**2 * (1 - 0.08 - 0.9), 0.08, 0.9
        var = np.full(len(self.bases), sigma0**2)
        rets = np.empty_like(shocks)
        for t in range(n_min):
            r = np.sqrt(var) * shocks[:, t]
            rets[:, t] = r * season[t]
            var = omega + alpha * r**2 + beta * var
        # spread each minute's return over its six 10-second steps with a zero-sum jitter
        sub = rng.normal(0.0, 0.35, size=(len(self.bases), n_min, STEPS_PER_MIN))
        sub -= sub.mean(axis=2, keepdims=True)
        steps = rets[:, :, None] / STEPS_PER_MIN + sub * np.sqrt(sigma0**2 / STEPS_PER_MIN) * season[None, :, None]
        steps = steps.reshape(len(self.bases), -1)
        start = np.log([START_PRICES.get(b, 10.0 * (1 + i)) for i, b in enumerate(self.bases)])
        return np.concatenate([start[:, None], start[:, None] + np.cumsum(steps, axis=1)], axis=1)

    def _draw_fx(self) -> np.ndarray:
        """USD/TRY per minute for the span."""
        rng = _rng(self.seed, "fx", self.start)
        n = self.n_days * MIN_PER_DAY
        drift = np.log(1.0004) / MIN_PER_DAY
        return 41.6 * np.exp(np.cumsum(drift + rng.normal(0.0, 0.00004, n)))

    def _draw_funding_regimes(self) -> dict[tuple[str, str], np.ndarray]:
        """Funding rate per perp and 4-hour slot; a Markov chain over regimes gives persistence."""
        levels = np.array([0.00012, 0.00002, -0.00008])  # bullish carry, neutral, negative
        stay = 0.93
        out = {}
        slots = self.n_days * 6
        for inst in self.instruments:
            if inst.market != "perp":
                continue
            rng = _rng(self.seed, "funding", inst.venue, inst.base)
            state = int(rng.integers(0, 3))
            rates = np.empty(slots)
            for s in range(slots):
                if rng.random() > stay:
                    state = int(rng.choice([x for x in range(3) if x != state]))
                rates[s] = levels[state] * (1.0 + 0.3 * rng.normal())
            out[(inst.venue, inst.base)] = rates
        return out

    # --- one day --------------------------------------------------------------------------------
    @functools.lru_cache(maxsize=2)
    def day(self, day: date) -> dict[str, pl.DataFrame]:
        """All six raw tables for one UTC day, each conforming to its schema."""
        index = (day - self.start).days
        if not 0 <= index < self.n_days:
            raise ValueError(f"simulator covers {self.start} … {self.end - timedelta(days=1)}, not {day}")
        t0 = datetime.combine(day, datetime.min.time())
        outages = self._outages(day)
        books, candles, trades = [], [], []
        for inst in self.instruments:
            mids = self._venue_mids(inst, day, index)
            b, c, t = self._instrument_day(inst, day, t0, mids, outages.get(inst.venue))
            books.append(b)
            candles.append(c)
            trades.append(t)
        tables = {
            "books": pl.concat(books), "candles": pl.concat(candles), "trades": pl.concat(trades),
            "funding": self._funding_day(day, index, t0), "latency": self._latency_day(day, t0, outages),
            "fx": self._fx_day(index, t0),
        }
        return {name: RAW_TABLES[name].conform(df, f"simulator {name} {day}") for name, df in tables.items()}

    def _outages(self, day: date) -> dict[str, tuple[int, int]]:
        """Per venue, an outage window in 10-second steps [a, b), or none. One venue is always out once
        in the span (okx on the third day), others with a small probability."""
        out = {}
        for v in self.venues:
            rng = _rng(self.seed, "outage", v, day)
            forced = v == "okx" and day == self.start + timedelta(days=2)
            if forced or rng.random() < 0.12:
                a = int(rng.integers(60, 8000))
                out[v] = (a, min(8640, a + int(rng.integers(90, 360))))
        return out

    def _venue_mids(self, inst: Instrument, day: date, index: int) -> np.ndarray:
        bi = self.bases.index(inst.base)
        lo = index * MIN_PER_DAY * STEPS_PER_MIN
        logp = self._fundamental[bi, lo: lo + MIN_PER_DAY * STEPS_PER_MIN]
        rng = _rng(self.seed, "basis", inst.venue, inst.base, inst.market, day)
        # AR(1) venue basis, ~1.5 bps wide, mean reverting within a few minutes
        n = logp.size
        noise = rng.normal(0.0, 0.00015 * np.sqrt(1 - 0.97**2), n)
        basis = np.empty(n)
        acc = 0.0
        for i in range(0, n, 2880):  # vectorised within blocks via lfilter-like recursion
            block = noise[i:i + 2880]
            out = np.empty_like(block)
            for j, e in enumerate(block):
                acc = 0.97 * acc + e
                out[j] = acc
            basis[i:i + block.size] = out
        if inst.market == "perp":
            slot = (index * 6 + np.arange(n) // (4 * 360)).clip(max=self.n_days * 6 - 1)
            basis += self._funding_regimes[(inst.venue, inst.base)][slot] * 3.0
        mids = np.exp(logp + basis)
        if inst.quote == "TRY":
            minute = np.arange(n) // STEPS_PER_MIN
            premium = 0.003 + 0.001 * np.sin(np.arange(n) / 5000.0)
            mids = mids * self._fx[index * MIN_PER_DAY + minute] * (1 + premium)
        return mids

    def _instrument_day(self, inst: Instrument, day: date, t0: datetime, mids: np.ndarray,
                        outage: tuple[int, int] | None) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        rng = _rng(self.seed, "book", inst.venue, inst.symbol, day)
        prof = VENUE_PROFILE[inst.venue]
        n = mids.size
        step_hour = (np.arange(n) * STEP_S // 3600) % 24
        activity = hour_profile(step_hour)
        alive = np.ones(n, dtype=bool)
        if outage:
            alive[outage[0]:outage[1]] = False
        # volatility over the last minute widens the spread
        logm = np.log(mids)
        absret = np.abs(np.diff(logm, prepend=logm[0]))
        local_vol = np.convolve(absret, np.ones(6) / 6, mode="same") / 0.0004
        spread_bps = prof["spread_bps"] * (1.6 / activity) * (1 + 0.5 * local_vol) * rng.lognormal(0, 0.15, n)
        spread_bps *= 1.3 if inst.market == "spot" else 1.0
        half = mids * spread_bps / 2e4
        bid, ask = mids - half, mids + half
        notional_depth = 250_000 * prof["depth"] * activity * (1.5 if inst.market == "perp" else 1.0)
        bid_size = notional_depth * rng.lognormal(0, 0.5, n) / mids
        ask_size = notional_depth * rng.lognormal(0, 0.5, n) / mids
        ts = np.datetime64(t0, "ms") + (np.arange(n) * STEP_S * 1000).astype("timedelta64[ms]")
        common = {"venue": inst.venue, "symbol": inst.symbol, "market": inst.market}
        books = pl.DataFrame({**{k: [v] * int(alive.sum()) for k, v in common.items()}, "ts": ts[alive],
                              "bid": bid[alive], "ask": ask[alive], "bid_size": bid_size[alive],
                              "ask_size": ask_size[alive]})

        # trades: Poisson per minute with the activity profile and recent volatility
        minute_mid = mids.reshape(-1, STEPS_PER_MIN)
        minute_alive = alive.reshape(-1, STEPS_PER_MIN).all(axis=1)
        minute_vol = absret.reshape(-1, STEPS_PER_MIN).sum(axis=1) / 0.0009
        base_rate = (3.0 if inst.market == "perp" else 2.0) * prof["depth"] ** 0.5
        lam = base_rate * hour_profile(np.arange(MIN_PER_DAY) // 60) * (0.6 + 0.8 * np.minimum(minute_vol, 4.0))
        counts = np.where(minute_alive, rng.poisson(lam), 0)
        k = int(counts.sum())
        minute_of = np.repeat(np.arange(MIN_PER_DAY), counts)
        offset_ms = rng.integers(0, 60_000, k)
        order = np.lexsort((offset_ms, minute_of))
        minute_of, offset_ms = minute_of[order], offset_ms[order]
        step_of = minute_of * STEPS_PER_MIN + offset_ms // (STEP_S * 1000)
        side_buy = rng.random(k) < 0.5
        price = np.where(side_buy, ask[step_of], bid[step_of])
        amount = (notional_depth[step_of] * 0.02) * rng.lognormal(0, 1.0, k) / mids[step_of]
        trade_ts = np.datetime64(t0, "ms") + (minute_of * 60_000 + offset_ms).astype("timedelta64[ms]")
        day_tag = day.strftime("%Y%m%d")
        trades = pl.DataFrame({**{c: [v] * k for c, v in common.items()}, "ts": trade_ts,
                               "trade_id": [f"{day_tag}-{i}" for i in range(k)],
                               "side": np.where(side_buy, "buy", "sell"), "price": price, "amount": amount})

        # candles from the 10-second mids, with the traded volume of the minute
        volume = np.bincount(minute_of, weights=amount, minlength=MIN_PER_DAY)
        wick = 1 + np.abs(rng.normal(0, 0.00008, (MIN_PER_DAY, 2)))
        opens, closes = minute_mid[:, 0], minute_mid[:, -1]
        highs = np.maximum(minute_mid.max(axis=1) * wick[:, 0], np.maximum(opens, closes))
        lows = np.minimum(minute_mid.min(axis=1) / wick[:, 1], np.minimum(opens, closes))
        candle_ts = np.datetime64(t0, "ms") + (np.arange(MIN_PER_DAY) * 60_000).astype("timedelta64[ms]")
        keep = minute_alive
        candles = pl.DataFrame({**{c: [v] * int(keep.sum()) for c, v in common.items()},
                                "timeframe": ["1m"] * int(keep.sum()), "ts": candle_ts[keep],
                                "open": opens[keep], "high": highs[keep], "low": lows[keep],
                                "close": closes[keep], "volume": volume[keep]})
        return books, candles, trades

    def _funding_day(self, day: date, index: int, t0: datetime) -> pl.DataFrame:
        rows = []
        for inst in self.instruments:
            if inst.market != "perp":
                continue
            every = 4 if (inst.venue, inst.base) in FUNDING_EVERY_4H else 8
            rates = self._funding_regimes[(inst.venue, inst.base)]
            rng = _rng(self.seed, "funding-noise", inst.venue, inst.base, day)
            for h in range(0, 24, every):
                slot = index * 6 + h // 4
                rate = rates[slot] * every / 8 + rng.normal(0, 0.000005)
                rows.append((inst.venue, inst.symbol, t0 + timedelta(hours=h), float(rate)))
        return pl.DataFrame(rows, schema=["venue", "symbol", "ts", "funding_rate"], orient="row")

    def _latency_day(self, day: date, t0: datetime, outages: dict[str, tuple[int, int]]) -> pl.DataFrame:
        frames = []
        n = 86_400 // PROBE_EVERY_S
        secs = np.arange(n) * PROBE_EVERY_S
        activity = hour_profile((secs // 3600) % 24)
        ts = np.datetime64(t0, "ms") + (secs * 1000).astype("timedelta64[ms]")
        for v in self.venues:
            for e, endpoint in enumerate(LATENCY_ENDPOINTS):
                rng = _rng(self.seed, "latency", v, endpoint, day)
                median = VENUE_PROFILE[v]["latency"][e]
                lat = median * (0.75 + 0.35 * activity) * rng.lognormal(0, 0.35, n)
                # latency spikes: a few bursts a day where latency jumps 5-20x for a couple of minutes
                for _ in range(int(rng.poisson(3))):
                    a = int(rng.integers(0, n - 12))
                    lat[a:a + int(rng.integers(4, 12))] *= rng.uniform(5, 20)
                fail = rng.random(n) < 0.003 * activity
                if v in outages:
                    a, b = outages[v]
                    fail |= (secs >= a * STEP_S) & (secs < b * STEP_S)
                errors = np.where(rng.random(n) < 0.5, "timeout", "HTTP 503 Service Unavailable")
                frames.append(pl.DataFrame({
                    "venue": [v] * n, "endpoint": [endpoint] * n, "ts": ts,
                    "latency_ms": np.where(fail, np.nan, lat), "ok": ~fail,
                    "error": errors,
                }).with_columns(pl.col("latency_ms").fill_nan(None),
                                pl.when(pl.col("ok")).then(None).otherwise(pl.col("error")).alias("error")))
        return pl.concat(frames)

    def _fx_day(self, index: int, t0: datetime) -> pl.DataFrame:
        rates = self._fx[index * MIN_PER_DAY:(index + 1) * MIN_PER_DAY]
        ts = np.datetime64(t0, "ms") + (np.arange(MIN_PER_DAY) * 60_000).astype("timedelta64[ms]")
        return pl.DataFrame({"pair": ["USD/TRY"] * MIN_PER_DAY, "ts": ts, "rate": rates})


def stream_to_parquet(out_dir: Path, days: int, n_bases: int = 20, venues: Sequence[str] = DEFAULT_VENUES,
                      seed: int = 7, tables: Sequence[str] = ("candles", "books"),
                      end: date = DEFAULT_END) -> Iterator[tuple[date, dict[str, int]]]:
    """Write `days` days of the chosen tables to `out_dir/<table>/<day>.parquet`, a week of fundamentals at
    a time, so memory stays bounded whatever the span. Yields (day, rows per table) as it goes."""
    out_dir = Path(out_dir)
    for t in tables:
        (out_dir / t).mkdir(parents=True, exist_ok=True)
    first = end - timedelta(days=days)
    chunk = 7
    for c in range(0, days, chunk):
        n = min(chunk, days - c)
        sim = MarketSimulator(seed=seed + c, end=first + timedelta(days=c + n), days=n,
                              bases=_bases(n_bases), venues=venues)
        for d in sim.available_days():
            day_tables = sim.day(d)
            counts = {}
            for t in tables:
                day_tables[t].write_parquet(out_dir / t / f"{d.isoformat()}.parquet")
                counts[t] = day_tables[t].height
            yield d, counts
        sim.day.cache_clear()
