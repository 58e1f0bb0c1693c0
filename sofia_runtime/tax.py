"""Turkish tax model: gross P&L -> fees -> transaction tax -> withholding and profit tax -> net.

`net_pnl` keeps FIFO lots per account and asset. Money is Decimal throughout. Taxes are computed in TRY
(USD/TRY from the data) on year-to-date gains at each quarter end, so a loss offsets gains earlier in its
calendar year (the quarter's tax can be negative: a credit) and never crosses into the next year.
Every component is reported in the quote currency of the fill (USDT) and in TRY, and in each currency
gross = fees + transaction_tax + withholding + profit_tax + net exactly.
"""

from __future__ import annotations

import os
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from sofia_runtime.config_files import TAX_STATUSES

ZERO = Decimal(0)
# Reported amounts are rounded to a fixed quantum (far below any currency's minor unit) so that sums of
# them are exact and net can be defined as gross minus the other components.
USDT_QUANTUM = Decimal("1e-12")


def q(value: Decimal) -> Decimal:
    return value.quantize(USDT_QUANTUM)


@dataclass(frozen=True)
class TaxRule:
    rule_id: str
    kind: str
    rate: Decimal
    valid_from: date
    valid_to: date | None
    status: str
    enabled: bool
    source: str = ""

    def applies(self, day: date) -> bool:
        return self.enabled and self.valid_from <= day and (self.valid_to is None or day < self.valid_to)


def rules_from_config(config: Mapping, proposed_start: date | None = None) -> list[TaxRule]:
    """Rules from tax_rules.yaml. Proposed rules are on only when the config or SOFIA_TAX_PROPOSED_START
    says so, and then from the later of their own date and the start date."""
    switch = config.get("proposed_rules", {})
    env = os.environ.get("SOFIA_TAX_PROPOSED_START")
    if proposed_start is None and env:
        try:
            proposed_start = date.fromisoformat(env)
        except ValueError:
            raise ValueError(f"SOFIA_TAX_PROPOSED_START: {env!r} is not a date YYYY-MM-DD") from None
    if proposed_start is None and switch.get("enabled"):
        proposed_start = switch["start"]
    rules = []
    for r in config["rules"]:
        if r["status"] not in TAX_STATUSES:
            raise ValueError(f"tax rule {r['rule_id']}: status must be one of {TAX_STATUSES}, not {r['status']!r}")
        valid_from = r["valid_from"]
        enabled = r["status"] == "enacted"
        if r["status"] == "proposed" and proposed_start is not None:
            enabled, valid_from = True, max(valid_from, proposed_start)
        rules.append(TaxRule(r["rule_id"], r["kind"], Decimal(str(r["rate"])), valid_from, r.get("valid_to"),
                             r["status"], enabled, r.get("source", "")))
    return rules


def rules_from_table(df) -> list[TaxRule]:
    """Rules from the tax_rules table (the snapshot's or the warehouse's)."""
    return [TaxRule(r["rule_id"], r["kind"], Decimal(repr(r["rate"])), r["valid_from"], r["valid_to"], r["status"],
                    r["enabled"], r["source"]) for r in df.iter_rows(named=True)]


def rate_on(rules: Iterable[TaxRule], kind: str, day: date) -> Decimal:
    active = [r for r in rules if r.kind == kind and r.applies(day)]
    return max(active, key=lambda r: r.valid_from).rate if active else ZERO


@dataclass(frozen=True)
class Fill:
    """One execution. `fee` is in the quote currency; `price` and `amount` as the venue reports them."""
    account: str
    venue: str
    symbol: str
    side: str  # "buy" | "sell"
    ts: datetime
    price: Decimal
    amount: Decimal
    fee: Decimal
    trade_id: str = ""

    @property
    def base(self) -> str:
        return self.symbol.split("/")[0]

    @property
    def quote(self) -> str:
        return self.symbol.split("/")[1].split(":")[0]


@dataclass
class TradePnl:
    trade_id: str
    account: str
    symbol: str
    ts: datetime
    quote: str
    gross: Decimal
    fees: Decimal
    transaction_tax: Decimal
    usd_try: Decimal

    def in_try(self, value: Decimal) -> Decimal:
        return value if self.quote == "TRY" else value * self.usd_try

    def in_usdt(self, value: Decimal) -> Decimal:
        return q(value / self.usd_try) if self.quote == "TRY" else value


@dataclass
class PnlReport:
    trades: list[TradePnl]
    quarters: list[dict] = field(default_factory=list)  # one row per account, year, quarter
    days: list[dict] = field(default_factory=list)       # one row per account and day


COMPONENTS = ("gross", "fees", "transaction_tax", "withholding", "profit_tax", "net")


def net_pnl(fills: Iterable[Fill], rules: list[TaxRule], usd_try: Callable[[datetime], Decimal]) -> PnlReport:
    """Realized P&L per trade, day and quarter. FIFO lots per account and symbol: a fill opens a lot (its fee
    per unit carried in the lot's cost) or closes the oldest lots on the other side; realized P&L is booked on
    the closing fill. A spot account cannot sell more than it holds; a perpetual (`BASE/QUOTE:SETTLE`) can go
    short. The transaction tax is charged on spot sales. `usd_try(ts)` gives TRY per USD at a time."""
    lots: dict[tuple[str, str], deque[list[Decimal]]] = defaultdict(deque)  # [signed amount, price, fee per unit]
    trades: list[TradePnl] = []
    for f in sorted(fills, key=lambda f: (f.ts, f.trade_id)):
        if f.side not in ("buy", "sell"):
            raise ValueError(f"fill {f.trade_id}: side must be buy or sell, not {f.side!r}")
        sign = 1 if f.side == "buy" else -1
        book = lots[(f.account, f.symbol)]
        fee_per_unit = f.fee / f.amount if f.amount else ZERO
        remaining, closed, basis, basis_fees = f.amount, ZERO, ZERO, ZERO
        while remaining > 0 and book and (book[0][0] > 0) != (sign > 0):
            lot = book[0]
            take = min(remaining, abs(lot[0]))
            basis += take * lot[1]
            basis_fees += q(take * lot[2])
            lot[0] += sign * take
            remaining -= take
            closed += take
            if lot[0] == 0:
                book.popleft()
        if remaining > 0:
            if sign < 0 and ":" not in f.symbol:
                raise ValueError(f"fill {f.trade_id}: sells {f.amount} {f.base} in account {f.account} "
                                 f"with only {f.amount - remaining} held (no short selling of spot in the tax ledger)")
            book.append([sign * remaining, f.price, fee_per_unit])
        if closed == 0:
            continue
        value = closed * f.price
        gross = value - basis if sign < 0 else basis - value  # closing a long sells; closing a short buys
        spot_sale = sign < 0 and ":" not in f.symbol
        txn = value * rate_on(rules, "transaction_tax", f.ts.date()) if spot_sale else ZERO
        fee = f.fee if remaining == 0 else q(closed * fee_per_unit)
        trades.append(TradePnl(f.trade_id, f.account, f.symbol, f.ts, f.quote, q(gross), q(fee + basis_fees),
                               q(txn), usd_try(f.ts)))
    return PnlReport(trades, _quarters(trades, rules), _days(trades))


def _quarter(ts: datetime) -> tuple[int, int]:
    return ts.year, (ts.month - 1) // 3 + 1


def _quarters(trades: list[TradePnl], rules: list[TaxRule]) -> list[dict]:
    by_q: dict[tuple[str, int, int], list[TradePnl]] = defaultdict(list)
    for t in trades:
        by_q[(t.account, *_quarter(t.ts))].append(t)
    rows = []
    ytd_gain: dict[tuple[str, int], Decimal] = defaultdict(Decimal)
    assessed: dict[tuple[str, int, str], Decimal] = defaultdict(Decimal)
    for (account, year, quarter), ts in sorted(by_q.items()):
        last = max(ts, key=lambda t: t.ts)
        quarter_end = last.ts.date()
        gross_try = q(sum((t.in_try(t.gross) for t in ts), ZERO))
        fees_try = q(sum((t.in_try(t.fees) for t in ts), ZERO))
        txn_try = q(sum((t.in_try(t.transaction_tax) for t in ts), ZERO))
        ytd_gain[(account, year)] += gross_try - fees_try - txn_try
        base = max(ytd_gain[(account, year)], ZERO)
        due = {}
        withholding_rate = rate_on(rules, "withholding", quarter_end)
        cit = max(rate_on(rules, "corporate_income_tax", quarter_end), rate_on(rules, "minimum_tax", quarter_end))
        for kind, rate in (("withholding", withholding_rate), ("profit_tax", cit)):
            total = q(base * rate)
            due[kind] = total - assessed[(account, year, kind)]
            assessed[(account, year, kind)] = total
        # withholding is a prepayment of the profit tax: only the remainder is due as profit tax
        due["profit_tax"] -= due["withholding"] if cit else ZERO
        rate = last.usd_try
        row = {"account": account, "year": year, "quarter": quarter, "usd_try": rate,
               "gross_try": gross_try, "fees_try": fees_try, "transaction_tax_try": txn_try,
               "withholding_try": due["withholding"], "profit_tax_try": due["profit_tax"]}
        row["net_try"] = gross_try - fees_try - txn_try - due["withholding"] - due["profit_tax"]
        for comp in ("gross", "fees", "transaction_tax"):
            row[f"{comp}_usdt"] = q(sum((t.in_usdt(getattr(t, comp)) for t in ts), ZERO))
        row["withholding_usdt"] = q(due["withholding"] / rate)
        row["profit_tax_usdt"] = q(due["profit_tax"] / rate)
        row["net_usdt"] = row["gross_usdt"] - row["fees_usdt"] - row["transaction_tax_usdt"] \
            - row["withholding_usdt"] - row["profit_tax_usdt"]
        rows.append(row)
    return rows


def _days(trades: list[TradePnl]) -> list[dict]:
    by_day: dict[tuple[str, date], list[TradePnl]] = defaultdict(list)
    for t in trades:
        by_day[(t.account, t.ts.date())].append(t)
    rows = []
    for (account, day), ts in sorted(by_day.items()):
        row = {"account": account, "day": day}
        for comp in ("gross", "fees", "transaction_tax"):
            row[f"{comp}_usdt"] = q(sum((t.in_usdt(getattr(t, comp)) for t in ts), ZERO))
            row[f"{comp}_try"] = q(sum((t.in_try(getattr(t, comp)) for t in ts), ZERO))
        row["pre_tax_usdt"] = row["gross_usdt"] - row["fees_usdt"] - row["transaction_tax_usdt"]
        rows.append(row)
    return rows
