"""Profit attribution (feature J): the runtimes' P&L by strategy x venue x symbol x market day, split into
components that add up to net exactly (Decimal, no float anywhere in the sum).

Every amount is in USD: a fill's price, its decision's mid and the day's mark are converted to USD first
(USDT/USDC/USD at 1, TRY at the day's last USD/TRY rate) and quantized to 1e-8, amounts to at most 1e-10, so
every product has at most 18 decimals and is exact in the warehouse's DECIMAL(38, 18). With s = +1 for a buy,
-1 for a sell, `mid` the mid the runtime decided on (the decision leg's `mid`) and `mark` the day's last mid:

    edge            = sum over maker fills of s * (mid - price) * amount     spread captured against arrival mid
    slippage        = sum over taker fills of s * (mid - price) * amount     paid against arrival mid (<= 0 usually)
    inventory_mtm   = position_start * (mark_end - mark_start) + sum over fills of s * amount * (mark_end - mid)
    fees            = -fee                                                   (the venue's fee, in USD)
    transaction_tax = -price * amount * rate on spot sales                   (analytics.tax_rules, rate_on the day)
    profit_tax      = -(withholding + profit tax) of the runtime's quarter   (audit.net_pnl_quarters), allocated to
                      its rows of that quarter pro rata to their positive realized P&L (FIFO, sofia_runtime.tax);
                      a credit (negative tax) pro rata to the losses
    funding         = funding received (+) or paid (-)                        (the journal's `funding` records)

and net is computed independently of the components, from cash and inventory value:

    net = cash_flow + position_end * mark_end - position_start * mark_start + fees + transaction_tax
          + profit_tax + funding,          cash_flow = sum of -s * price * amount

edge + slippage + inventory_mtm = cash_flow + position_end * mark_end - position_start * mark_start is an
identity, so the components sum to net exactly when every fill, mid and mark is where it should be; the
`components_sum_to_net` check verifies it on the stored rows. The day's mark is the last book mid of that
market day (raw.books), else the day's last fill price of that venue and symbol, else the day before's mark.
Positions start at zero where a strategy's fills
start (P&L relative to the inventory it started with) and carry across days; a day with neither activity nor
position is not a row.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, localcontext

import polars as pl

from sofia_pipelines.defs.audit.compute import tax_ledger
from sofia_runtime.schemas import PROFIT_ATTRIBUTION
from sofia_runtime.tax import TaxRule, net_pnl, rate_on

ZERO = Decimal(0)
PRICE_Q = Decimal("1e-8")
AMOUNT_Q = Decimal("1e-10")
MONEY_Q = Decimal("1e-12")
USD_QUOTES = ("USDT", "USDC", "USD")
COMPONENTS = ("edge_usd", "slippage_usd", "inventory_mtm_usd", "funding_usd", "fees_usd", "transaction_tax_usd",
              "profit_tax_usd")
COMPONENT_LABELS = {"edge_usd": "edge captured", "slippage_usd": "slippage", "inventory_mtm_usd": "inventory MTM",
                    "funding_usd": "funding", "fees_usd": "fees", "transaction_tax_usd": "transaction tax",
                    "profit_tax_usd": "profit tax"}


def _dec(value) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def market_time(ms) -> datetime | None:
    """A journal `market_ts` (ms) as a naive UTC datetime; None when absent or zero."""
    if not isinstance(ms, int) or not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).replace(tzinfo=None)


def quote_of(symbol: str) -> str:
    return symbol.split("/")[1].split(":")[0]


# --- the journal's records ------------------------------------------------------------------------------------
def payloads(events: pl.DataFrame, kinds: Iterable[str]) -> list[tuple[dict, dict]]:
    """(record row, decoded payload) of the records of the given kinds, in (runtime, seq) order."""
    kinds = list(kinds)
    rows = events.filter(pl.col("kind").is_in(kinds)).sort("runtime_id", "seq")
    return [(r, json.loads(r["payload"])) for r in rows.iter_rows(named=True)]


def record_time(row: dict, payload: dict) -> datetime:
    """The market time of a record (the replayed time in paper mode), else when it was journaled."""
    return market_time(payload.get("market_ts")) or row["ts"]


def runtime_strategies(events: pl.DataFrame) -> dict[str, str]:
    return {r["runtime_id"]: p["strategy"] for r, p in payloads(events, ["start"]) if p.get("strategy")}


def arrival_mids(fills: pl.DataFrame, events: pl.DataFrame) -> pl.DataFrame:
    """`fills` (audit.fills) with the mid the runtime decided on: fill -> its order (client order id) -> the
    order's decision and leg -> the leg's `mid`. `mid` is a decimal string, null when the chain is broken (a
    fill of an order the journal does not show, or a decision without a mid)."""
    legs = {(r["runtime_id"], r["seq"]): p.get("legs") or [] for r, p in payloads(events, ["decision"])}
    orders = {(r["runtime_id"], p["client_order_id"]): (p["decision_seq"], p["leg"])
              for r, p in payloads(events, ["order"])}
    mids = []
    for r in fills.select("runtime_id", "client_order_id").iter_rows(named=True):
        ref = orders.get((r["runtime_id"], r["client_order_id"]))
        mid = None
        if ref is not None:
            decision_legs = legs.get((r["runtime_id"], ref[0]), [])
            if ref[1] < len(decision_legs):
                mid = decision_legs[ref[1]].get("mid")
        mids.append(None if mid is None else str(mid))
    return fills.with_columns(pl.Series("mid", mids, dtype=pl.Utf8))


def funding_frame(events: pl.DataFrame) -> pl.DataFrame:
    strategies = runtime_strategies(events)
    rows = [{"runtime_id": r["runtime_id"], "strategy": strategies.get(r["runtime_id"], r["runtime_id"]),
             "venue": p["venue"], "symbol": p["symbol"], "time": record_time(r, p), "amount": str(p["amount"]),
             "currency": p.get("currency")} for r, p in payloads(events, ["funding"])]
    schema = {"runtime_id": pl.Utf8, "strategy": pl.Utf8, "venue": pl.Utf8, "symbol": pl.Utf8,
              "time": pl.Datetime("ms"), "amount": pl.Utf8, "currency": pl.Utf8}
    return pl.DataFrame(rows, schema=schema)


# --- currency -------------------------------------------------------------------------------------------------
class UsdRates:
    """USD per unit of a quote currency on a day: 1 for USD stablecoins, 1 / USD-TRY (the day's last rate of
    raw.fx, else the last before it) for TRY."""

    def __init__(self, fx: pl.DataFrame | None):
        if fx is None:
            fx = pl.DataFrame(schema={"pair": pl.Utf8, "ts": pl.Datetime("ms"), "rate": pl.Float64})
        usd_try = fx.filter(pl.col("pair") == "USD/TRY").sort("ts")
        self._days = usd_try.group_by(pl.col("ts").dt.date().alias("day")).agg(pl.col("rate").last()).sort("day")

    def try_per_usd(self, day: date) -> Decimal:
        known = self._days.filter(pl.col("day") <= day)
        if known.is_empty():
            raise ValueError(f"no USD/TRY rate in raw.fx on or before {day} to state TRY fills in USD; "
                             "materialize raw/fx for that day")
        return Decimal(repr(known["rate"][-1]))

    def to_usd(self, amount: Decimal, quote: str, day: date, quantum: Decimal) -> Decimal:
        if quote in USD_QUOTES:
            return amount.quantize(quantum)
        if quote == "TRY":
            return (amount / self.try_per_usd(day)).quantize(quantum)
        raise ValueError(f"no USD rate for quote currency {quote!r} (known: {', '.join(USD_QUOTES)}, TRY)")

    def usd_try_at(self, ts: datetime) -> Decimal:
        """For the tax ledger (TRY per USD at a time); 1 when no rate is known (then no TRY fills exist)."""
        known = self._days.filter(pl.col("day") <= ts.date())
        return Decimal(repr(known["rate"][-1])) if known.height else Decimal(1)


def day_marks(books: pl.DataFrame) -> pl.DataFrame:
    """The last mid of each market day per venue and symbol (raw.books)."""
    return (books.sort("ts").group_by("venue", "symbol", pl.col("ts").dt.date().alias("day"))
            .agg(((pl.col("bid") + pl.col("ask")) / 2).last().alias("mark")))


# --- profit tax allocation ------------------------------------------------------------------------------------
def realized_by_fill(fills: pl.DataFrame, rules: list[TaxRule], rates: UsdRates) -> dict[tuple[str, str], Decimal]:
    """Realized P&L after fees and transaction tax (USDT) of each closing fill, keyed by (runtime, trade id): the
    tax ledger of `sofia_runtime.tax.net_pnl` per runtime, built as audit.net_pnl builds it (`tax_ledger`)."""
    ledger = tax_ledger(fills)
    report = net_pnl(ledger, rules, rates.usd_try_at)
    return {(t.account, t.trade_id): t.in_usdt(t.gross - t.fees - t.transaction_tax) for t in report.trades}


def allocate(total: Decimal, weights: dict, quantum: Decimal = MONEY_Q) -> dict:
    """Split `total` over keys pro rata to their weights, each share quantized, the rounding remainder on the
    largest weight, so the shares sum to `total` exactly. Positive weights take a tax, negative ones a credit;
    with neither, equal shares."""
    if not weights or total == 0:
        return {k: ZERO for k in weights}
    base = {k: w for k, w in weights.items() if (w > 0 if total > 0 else w < 0)} or \
        {k: w for k, w in weights.items() if w > 0} or {k: Decimal(1) for k in weights}
    denominator = sum(base.values(), ZERO)
    shares = {k: (total * w / denominator).quantize(quantum) for k, w in base.items()}
    largest = max(base, key=lambda k: (abs(base[k]), str(k)))
    shares[largest] += total - sum(shares.values(), ZERO)
    return {k: shares.get(k, ZERO) for k in weights}


def profit_tax_shares(fills: pl.DataFrame, quarters: pl.DataFrame, rules: list[TaxRule], rates: UsdRates,
                      strategies: dict[str, str]) -> dict[tuple[str, str, str, date], Decimal]:
    """Each runtime's quarterly withholding + profit tax (USDT), allocated to (strategy, venue, symbol, day)."""
    if fills.is_empty() or quarters.is_empty():
        return {}
    realized = realized_by_fill(fills, rules, rates)
    weights: dict[tuple, dict[tuple, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for r in fills.iter_rows(named=True):
        day = (r["market_ts"] or r["ts"]).date()
        quarter = (r["runtime_id"], day.year, (day.month - 1) // 3 + 1)
        key = (strategies.get(r["runtime_id"], r["strategy"]), r["venue"], r["symbol"], day)
        weights[quarter][key] += realized.get((r["runtime_id"], r["trade_id"]), ZERO)
    shares: dict[tuple, Decimal] = defaultdict(Decimal)
    for q in quarters.iter_rows(named=True):
        total = _dec(q["withholding_usdt"]) + _dec(q["profit_tax_usdt"])
        rows = weights.get((q["account"], q["year"], q["quarter"]))
        if not rows:
            if total != 0:
                raise ValueError(f"audit.net_pnl_quarters: {q['account']} {q['year']}Q{q['quarter']} owes "
                                 f"{total} USDT tax but has no fills in audit.fills to allocate it to")
            continue
        for key, share in allocate(total, dict(rows)).items():
            shares[key] += share
    return dict(shares)


# --- attribution ----------------------------------------------------------------------------------------------
@dataclass
class _Group:
    position: Decimal = ZERO
    mark: Decimal | None = None


def _amount(value, where: str) -> Decimal:
    amount = _dec(value)
    if amount != amount.quantize(AMOUNT_Q):
        raise ValueError(f"{where}: amount {amount} has more than 10 decimals")
    return amount.quantize(AMOUNT_Q)


def profit_attribution(fills: pl.DataFrame, events: pl.DataFrame, marks: pl.DataFrame, fx: pl.DataFrame | None,
                       rules: list[TaxRule], quarters: pl.DataFrame | None = None) -> tuple[pl.DataFrame, dict]:
    """The attribution table (PROFIT_ATTRIBUTION) and notes on what it used (mid sources, marks, profit tax).

    `fills` is audit.fills, `events` audit.events (decisions, orders, funding and start records are used),
    `marks` the day's last mid per venue and symbol (`day_marks` of raw.books), `fx` raw.fx, `quarters`
    audit.net_pnl_quarters (None: not computed yet)."""
    rates = UsdRates(fx)
    strategies = runtime_strategies(events)
    fills = arrival_mids(fills, events)
    funding = funding_frame(events)
    marks = {(r["venue"], r["symbol"], r["day"]): r["mark"] for r in marks.iter_rows(named=True)}
    notes = {"fills": fills.height, "fills without a decision mid (mid = fill price)": 0,
             "marks from raw.books": 0, "marks from the last fill price": 0, "marks carried from the day before": 0,
             "funding records": funding.height,
             "profit tax": "allocated from audit.net_pnl_quarters" if quarters is not None
             else "audit.net_pnl_quarters not computed yet: profit tax 0"}
    ptax = profit_tax_shares(fills, quarters, rules, rates, strategies) if quarters is not None else {}

    groups: dict[tuple[str, str, str], _Group] = defaultdict(_Group)
    activity: dict[tuple[str, str, str], set[date]] = defaultdict(set)
    day_last_price: dict[tuple[str, str], dict[date, Decimal]] = defaultdict(dict)  # any strategy's last fill of a day
    with localcontext() as ctx:
        ctx.prec = 60  # exact products: prices 1e-8 x amounts 1e-10 stay far inside 60 digits
        by_time = fills.with_columns(pl.coalesce("market_ts", "ts").alias("_time")).sort("_time", "runtime_id", "seq")
        per_day_fills: dict[tuple, list[dict]] = defaultdict(list)
        for r in by_time.iter_rows(named=True):
            day = r["_time"].date()
            key = (strategies.get(r["runtime_id"], r["strategy"]), r["venue"], r["symbol"])
            per_day_fills[(*key, day)].append(r)
            activity[key].add(day)
            day_last_price[(r["venue"], r["symbol"])][day] = r["price"]
        per_day_funding: dict[tuple, Decimal] = defaultdict(Decimal)
        for r in funding.iter_rows(named=True):
            key, day = (r["strategy"], r["venue"], r["symbol"]), r["time"].date()
            quote = r["currency"] or quote_of(r["symbol"])
            per_day_funding[(*key, day)] += rates.to_usd(_dec(r["amount"]), quote, day, MONEY_Q)
            activity[key].add(day)
        for key, day in ((k[:3], k[3]) for k in ptax):
            activity[key].add(day)
        if not activity:
            return PROFIT_ATTRIBUTION.empty(), notes
        last_day = max(d for days in activity.values() for d in days)

        rows = []
        for key in sorted(activity):
            strategy, venue, symbol = key
            quote = quote_of(symbol)
            g = groups[key]
            day = min(activity[key])
            while day <= last_day:
                todays = per_day_fills.get((*key, day), [])
                funding_usd = per_day_funding.get((*key, day), ZERO)
                tax_usd = -ptax.get((*key, day), ZERO)
                if not todays and g.position == 0 and funding_usd == 0 and tax_usd == 0:
                    day += timedelta(days=1)
                    continue
                c = defaultdict(Decimal)
                position_start, mark_start = g.position, g.mark
                tx_rate = rate_on(rules, "transaction_tax", day)
                entries = []  # (signed amount, mid) of today's fills, for the inventory's entry prices
                for f in todays:
                    where = f"audit.fills {f['runtime_id']} trade {f['trade_id']}"
                    if f["side"] not in ("buy", "sell"):
                        raise ValueError(f"{where}: side must be buy or sell, not {f['side']!r}")
                    s = 1 if f["side"] == "buy" else -1
                    price = rates.to_usd(_dec(f["price"]), quote, day, PRICE_Q)
                    amount = _amount(f["amount"], where)
                    if f["mid"] is None:
                        notes["fills without a decision mid (mid = fill price)"] += 1
                        mid = price
                    else:
                        mid = rates.to_usd(_dec(f["mid"]), quote, day, PRICE_Q)
                    captured = s * (mid - price) * amount
                    c["edge_usd" if f["liquidity"] == "maker" else "slippage_usd"] += captured
                    c["cash_flow_usd"] -= s * price * amount
                    fee_ccy, base = f["fee_currency"] or quote, symbol.split("/")[0]
                    if fee_ccy not in (quote, base):
                        raise ValueError(f"{where}: fee in {fee_ccy}, neither the quote {quote} nor the base {base}")
                    fee = _dec(f["fee"]) * (_dec(f["price"]) if fee_ccy == base != quote else 1)
                    c["fees_usd"] -= rates.to_usd(fee, quote, day, MONEY_Q)
                    if s < 0 and ":" not in symbol:
                        c["transaction_tax_usd"] -= (price * amount * tx_rate).quantize(MONEY_Q)
                    c["bought"] += amount if s > 0 else ZERO
                    c["sold"] += amount if s < 0 else ZERO
                    entries.append((s * amount, mid))
                    g.position += s * amount
                book_mark = marks.get((venue, symbol, day))
                fill_mark = day_last_price[(venue, symbol)].get(day)
                if book_mark is not None:
                    mark_end = rates.to_usd(Decimal(repr(book_mark)), quote, day, PRICE_Q)
                    notes["marks from raw.books"] += 1
                elif fill_mark is not None:
                    mark_end = rates.to_usd(_dec(fill_mark), quote, day, PRICE_Q)
                    notes["marks from the last fill price"] += 1
                else:  # neither a book nor a fill that day: the last mark holds
                    mark_end = mark_start if mark_start is not None else ZERO
                    notes["marks carried from the day before"] += 1
                start_mark = mark_start if mark_start is not None else ZERO
                c["inventory_mtm_usd"] = position_start * (mark_end - start_mark) + \
                    sum((a * (mark_end - mid) for a, mid in entries), ZERO)
                c["funding_usd"], c["profit_tax_usd"] = funding_usd, tax_usd
                value_start, value_end = position_start * start_mark, g.position * mark_end
                net = c["cash_flow_usd"] + value_end - value_start + c["fees_usd"] + c["transaction_tax_usd"] \
                    + c["profit_tax_usd"] + c["funding_usd"]
                rows.append({"strategy": strategy, "venue": venue, "symbol": symbol, "day": day, "quote": quote,
                             "fills": len(todays), "bought": c["bought"], "sold": c["sold"],
                             "position_start": position_start, "position_end": g.position,
                             "mark_start_usd": mark_start, "mark_end_usd": mark_end,
                             "cash_flow_usd": c["cash_flow_usd"], "inventory_value_start_usd": value_start,
                             "inventory_value_end_usd": value_end,
                             **{k: c[k] for k in COMPONENTS}, "net_usd": net})
                g.mark = mark_end
                day += timedelta(days=1)
    frame = pl.DataFrame(rows, schema_overrides={c: pl.Decimal(38, 18) for c in PROFIT_ATTRIBUTION.columns
                                                 if PROFIT_ATTRIBUTION.columns[c] == pl.Decimal(38, 18)},
                         infer_schema_length=None)
    return PROFIT_ATTRIBUTION.conform(frame, "profit_attribution"), notes


def sum_mismatches(attribution: pl.DataFrame) -> tuple[list[str], Decimal, Decimal]:
    """Rows whose components do not add up to net exactly (each named), and the totals of both."""
    bad, total_components, total_net = [], ZERO, ZERO
    for r in attribution.iter_rows(named=True):
        parts = sum((_dec(r[c]) for c in COMPONENTS), ZERO)
        net = _dec(r["net_usd"])
        total_components += parts
        total_net += net
        if parts != net:
            bad.append(f"{r['strategy']} {r['venue']} {r['symbol']} {r['day']}: components {parts} != net {net}")
    return bad, total_components, total_net


def component_totals(attribution: pl.DataFrame) -> dict[str, Decimal]:
    return {c: sum((_dec(v) for v in attribution[c].to_list()), ZERO) for c in (*COMPONENTS, "net_usd")}


def strategy_days(attribution: pl.DataFrame) -> pl.DataFrame:
    """Net P&L per strategy and day (float, for charts)."""
    return (attribution.group_by("strategy", "day").agg(pl.col("net_usd").cast(pl.Float64).sum())
            .sort("day", "strategy"))

