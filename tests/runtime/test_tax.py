"""The Turkish tax model: FIFO, effective dates, components summing exactly, losses within the year."""

from datetime import date, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings, strategies as st

from sofia_pipelines.defs.fees.compute import load_yaml
from sofia_runtime.tax import Fill, TaxRule, net_pnl, rules_from_config

D = Decimal
RATE = lambda ts: D("40")  # noqa: E731  TRY per USD


def rule(kind, rate, valid_from=date(2020, 1, 1), valid_to=None, status="enacted", enabled=True):
    return TaxRule(f"{kind}-{valid_from}", kind, D(rate), valid_from, valid_to, status, enabled)


def fill(side, day, price, amount, fee="0", tid=None, account="a"):
    ts = datetime(2026, 1, 1) + timedelta(days=day)
    return Fill(account, "binance", "BTC/USDT", side, ts, D(price), D(amount), D(fee), tid or f"{side}{day}{price}")


def test_fifo_matches_a_hand_worked_ledger():
    fills = [fill("buy", 0, "100", "1", "1"), fill("buy", 1, "110", "1", "1"), fill("sell", 2, "120", "1.5", "2")]
    (t,) = net_pnl(fills, [], RATE).trades
    # cost = 1 x 100 + 0.5 x 110; fees = sell fee 2 + buy fees 1 + 0.5 x 1
    assert t.gross == D("180") - D("155")
    assert t.fees == D("3.5")
    more = net_pnl(fills + [fill("sell", 3, "90", "0.5", "0")], [], RATE).trades[1]
    assert more.gross == D("45") - D("55")  # the rest of the second lot


def test_transaction_tax_applies_exactly_from_its_date():
    rules = [rule("transaction_tax", "0.0003", valid_from=date(2026, 1, 4))]
    fills = [fill("buy", 0, "100", "2"), fill("sell", 2, "100", "1"), fill("sell", 3, "100", "1")]
    before, after = net_pnl(fills, rules, RATE).trades
    assert before.ts.date() == date(2026, 1, 3) and before.transaction_tax == 0
    assert after.ts.date() == date(2026, 1, 4) and after.transaction_tax == D("0.03")


def test_proposed_rules_are_off_unless_switched_on():
    config = load_yaml("tax_rules.yaml")
    off = rules_from_config(config)
    assert not any(r.enabled for r in off if r.status == "proposed")
    on = rules_from_config(config, proposed_start=date(2027, 1, 1))
    txn = next(r for r in on if r.kind == "transaction_tax")
    assert txn.enabled and txn.valid_from == date(2027, 1, 1) and txn.rate == D("0.0003")


def test_loss_offsets_gains_in_its_year_not_the_next():
    rules = [rule("corporate_income_tax", "0.25")]
    fills = [fill("buy", 0, "100", "3"),
             fill("sell", 10, "200", "1"),     # Q1 2026: +100
             fill("sell", 100, "0.01", "1"),    # Q2 2026: about -100
             fill("buy", 380, "100", "1"),
             fill("sell", 381, "0.01", "1"),    # Q1 2027: a loss that must not reach back into 2026
             fill("sell", 382, "200", "1")]     # Q1 2027: +100 on the 2026 lot
    q = {(r["year"], r["quarter"]): r for r in net_pnl(fills, rules, RATE).quarters}
    assert q[(2026, 1)]["profit_tax_try"] == D("100") * 40 * D("0.25")
    assert q[(2026, 1)]["profit_tax_try"] + q[(2026, 2)]["profit_tax_try"] == D("0.01") * 40 * D("0.25")
    # 2027 Q1: +100 and -99.99 net to 0.01 within the year; 2026's loss is not carried in
    assert q[(2027, 1)]["profit_tax_try"] == D("0.01") * 40 * D("0.25")


def test_withholding_is_credited_against_profit_tax():
    rules = [rule("corporate_income_tax", "0.25"), rule("withholding", "0.10")]
    (row,) = net_pnl([fill("buy", 0, "100", "1"), fill("sell", 1, "200", "1")], rules, RATE).quarters
    assert row["withholding_try"] == D("400") and row["profit_tax_try"] == D("600")


prices = st.decimals(min_value="0.01", max_value="100000", places=2)
amounts = st.decimals(min_value="0.001", max_value="10", places=3)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(prices, amounts, st.decimals(min_value="0", max_value="5", places=2),
                          st.integers(0, 500), prices), min_size=1, max_size=12))
def test_components_sum_exactly_to_gross(trades):
    rules = [rule("corporate_income_tax", "0.25"), rule("minimum_tax", "0.10"), rule("withholding", "0.10"),
             rule("transaction_tax", "0.0003", valid_from=date(2026, 6, 1))]
    fills = []
    for i, (buy_price, amount, fee, day, sell_price) in enumerate(trades):
        fills.append(fill("buy", day, buy_price, amount, fee, tid=f"b{i}"))
        fills.append(fill("sell", day + 1, sell_price, amount, fee, tid=f"s{i}"))
    report = net_pnl(fills, rules, lambda ts: D("38.5") + D(ts.month) / 10)
    for row in report.quarters:
        for cur in ("try", "usdt"):
            parts = sum(row[f"{c}_{cur}"] for c in ("fees", "transaction_tax", "withholding", "profit_tax", "net"))
            assert parts == row[f"gross_{cur}"]
    assert sum(t.gross for t in report.trades) == sum(r["gross_usdt"] for r in report.quarters)
