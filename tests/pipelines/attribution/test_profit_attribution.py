"""Profit attribution on a hand-made trade list: every component of every row computed by hand (below), the
components summing to net exactly, the blocking check catching a row that does not, and the asset, its charts
and the static HTML report through Dagster on a real warehouse."""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from decimal import Decimal as D

import dagster as dg
import polars as pl
import pytest

from sofia_pipelines.defs.attribution.compute import (COMPONENTS, allocate, profit_attribution, sum_mismatches)
from sofia_pipelines.defs.audit.compute import all_journal_files, events_frame, fills_frame
from sofia_runtime.journal import Journal
from sofia_runtime.schemas import FX, NET_PNL_QUARTERS, PROFIT_ATTRIBUTION, TAX_RULES
from sofia_runtime.tax import TaxRule

WALL = datetime(2026, 3, 5, 12, tzinfo=timezone.utc).timestamp()  # when the journal was written
DAY1, DAY2, DAY3 = date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4)


def ms(day: date, hour: int) -> int:
    return int(datetime(day.year, day.month, day.day, hour, tzinfo=timezone.utc).timestamp() * 1000)


class Trader:
    """Writes a runtime's journal the way the engine does: start, decision (with the leg's mid), order, fill."""

    def __init__(self, audit_dir, runtime_id: str, strategy: str):
        self.j = Journal(audit_dir, runtime_id, clock=lambda: WALL)
        self.strategy, self.n = strategy, 0
        self.j.append("start", {"pid": 1, "mode": "paper", "strategy": strategy})

    def trade(self, when: int, venue: str, symbol: str, side: str, price: str, amount: str, mid: str, fee: str,
              liquidity: str, fee_currency: str = "USDT") -> None:
        self.n += 1
        leg = {"venue": venue, "symbol": symbol, "side": side, "type": "limit", "price": D(price),
               "amount": D(amount), "mid": D(mid)}
        rec = self.j.append("decision", {"strategy": self.strategy, "passed": True, "result": "passed",
                                         "legs": [leg], "market_ts": when})
        cid = f"{self.j.runtime_id}-{rec['seq']}-0"
        self.j.append("order", {"client_order_id": cid, "decision_seq": rec["seq"], "leg": 0,
                                "strategy": self.strategy, "venue": venue, "symbol": symbol, "side": side,
                                "type": "limit", "price": D(price), "amount": D(amount), "market_ts": when})
        self.j.append("fill", {"trade_id": f"{self.j.runtime_id}-T{self.n}", "order_id": f"o{self.n}",
                               "client_order_id": cid, "venue": venue, "symbol": symbol, "side": side,
                               "price": D(price), "amount": D(amount), "fee": D(fee), "fee_currency": fee_currency,
                               "liquidity": liquidity, "strategy": self.strategy, "market_ts": when})

    def funding(self, when: int, venue: str, symbol: str, amount: str) -> None:
        self.j.append("funding", {"venue": venue, "symbol": symbol, "funding_id": f"F{when}", "rate": D("0.0001"),
                                  "position": D("-1"), "mark": D("200"), "amount": D(amount), "currency": "USDT",
                                  "market_ts": when})


def write_trades(audit_dir) -> None:
    """The hand-made trade list.

    mm-a (strategy mm): binance BTC/USDT spot, transaction tax 0.1 % on sales
      day 1: buy 1 @ 100 maker (mid 101, fee 0.02); sell 1 @ 103 maker (mid 102, fee 0.0206);
             buy 2 @ 105 taker (mid 104, fee 0.21); book mark at the day's end 106
      day 2: no trade, mark 108
      day 3: sell 2 @ 107.5 maker (mid 107, fee 0.043), mark 107
    mm-a also: btcturk BTC/TRY day 1: buy 0.5 @ 4000 TRY maker (mid 4040, fee 2 TRY), mark 4080, USD/TRY 40
    ff-b (strategy ff): okx BTC/USDT:USDT perp day 1: sell 1 @ 199.9 taker (mid 200, fee 0.08), funding +0.5;
      no book for it: marked at the day's last fill price 199.9, which holds on days 2 and 3
    """
    a = Trader(audit_dir, "mm-a", "mm")
    a.trade(ms(DAY1, 1), "binance", "BTC/USDT", "buy", "100", "1", "101", "0.02", "maker")
    a.trade(ms(DAY1, 2), "binance", "BTC/USDT", "sell", "103", "1", "102", "0.0206", "maker")
    a.trade(ms(DAY1, 3), "binance", "BTC/USDT", "buy", "105", "2", "104", "0.21", "taker")
    a.trade(ms(DAY1, 4), "btcturk", "BTC/TRY", "buy", "4000", "0.5", "4040", "2", "maker", fee_currency="TRY")
    a.trade(ms(DAY3, 5), "binance", "BTC/USDT", "sell", "107.5", "2", "107", "0.043", "maker")
    b = Trader(audit_dir, "ff-b", "ff")
    b.trade(ms(DAY1, 6), "okx", "BTC/USDT:USDT", "sell", "199.9", "1", "200", "0.08", "taker")
    b.funding(ms(DAY1, 8), "okx", "BTC/USDT:USDT", "0.5")
    a.j.close()
    b.j.close()


MARKS = pl.DataFrame({"venue": ["binance", "binance", "binance", "btcturk"],
                      "symbol": ["BTC/USDT", "BTC/USDT", "BTC/USDT", "BTC/TRY"],
                      "day": [DAY1, DAY2, DAY3, DAY1], "mark": [106.0, 108.0, 107.0, 4080.0]})
FX_ROWS = pl.DataFrame({"pair": ["USD/TRY"], "ts": [datetime(2026, 3, 1, 23)], "rate": [40.0]})
RULES = [TaxRule("tx", "transaction_tax", D("0.001"), date(2020, 1, 1), None, "enacted", True)]
# mm-a's 2026 Q1 tax (withholding + profit tax), chosen as 10 % of its realized P&L so the shares are round:
# realized (FIFO) day 1: sell 1 @ 103 against the buy @ 100 = 3 - fees 0.0206 - 0.02 - tax 0.103 = 2.8564;
# day 3: sell 2 @ 107.5 against the buy @ 105 = 5 - fees 0.043 - 0.21 - tax 0.215 = 4.532; total 7.3884
QUARTERS = NET_PNL_QUARTERS.conform(pl.DataFrame([{
    "account": "mm-a", "year": 2026, "quarter": 1, "usd_try": D("40"), "gross_try": D(0), "fees_try": D(0),
    "transaction_tax_try": D(0), "withholding_try": D(0), "profit_tax_try": D(0), "net_try": D(0),
    "gross_usdt": D(0), "fees_usdt": D(0), "transaction_tax_usdt": D(0), "withholding_usdt": D("0.13884"),
    "profit_tax_usdt": D("0.6"), "net_usdt": D(0)}]), "test quarters")

# every component by hand (USD; costs negative)
EXPECTED = {
    # edge: (101-100)*1 + -(102-103)*1 = 2; slippage: (104-105)*2 = -2;
    # MTM: 1*(106-101) - 1*(106-102) + 2*(106-104) = 5; fees -(0.02+0.0206+0.21); tax -103*0.001;
    # profit tax -0.73884 * 2.8564 / 7.3884 = -0.28564
    ("mm", "binance", "BTC/USDT", DAY1): dict(edge_usd="2", slippage_usd="-2", inventory_mtm_usd="5",
                                              funding_usd="0", fees_usd="-0.2506", transaction_tax_usd="-0.103",
                                              profit_tax_usd="-0.28564", net_usd="4.36076"),
    # the 2 BTC carried: 2 * (108 - 106)
    ("mm", "binance", "BTC/USDT", DAY2): dict(edge_usd="0", slippage_usd="0", inventory_mtm_usd="4",
                                              funding_usd="0", fees_usd="0", transaction_tax_usd="0",
                                              profit_tax_usd="0", net_usd="4"),
    # edge -(107-107.5)*2 = 1; MTM 2*(107-108) - 2*(107-107) = -2; tax -215*0.001; profit tax -0.4532
    ("mm", "binance", "BTC/USDT", DAY3): dict(edge_usd="1", slippage_usd="0", inventory_mtm_usd="-2",
                                              funding_usd="0", fees_usd="-0.043", transaction_tax_usd="-0.215",
                                              profit_tax_usd="-0.4532", net_usd="-1.7112"),
    # TRY at 40: price 100, mid 101, mark 102, fee 0.05 USD; edge (101-100)*0.5; MTM 0.5*(102-101)
    ("mm", "btcturk", "BTC/TRY", DAY1): dict(edge_usd="0.5", slippage_usd="0", inventory_mtm_usd="0.5",
                                             funding_usd="0", fees_usd="-0.05", transaction_tax_usd="0",
                                             profit_tax_usd="0", net_usd="0.95"),
    # the 0.5 BTC held on, no book and no fill: the mark of day 1 holds, nothing moves
    ("mm", "btcturk", "BTC/TRY", DAY2): dict.fromkeys(COMPONENTS + ("net_usd",), "0"),
    ("mm", "btcturk", "BTC/TRY", DAY3): dict.fromkeys(COMPONENTS + ("net_usd",), "0"),
    # slippage -(200-199.9)*1; MTM at the fill price -1*(199.9-200); funding +0.5; no transaction tax on a perp
    ("ff", "okx", "BTC/USDT:USDT", DAY1): dict(edge_usd="0", slippage_usd="-0.1", inventory_mtm_usd="0.1",
                                               funding_usd="0.5", fees_usd="-0.08", transaction_tax_usd="0",
                                               profit_tax_usd="0", net_usd="0.42"),
    ("ff", "okx", "BTC/USDT:USDT", DAY2): dict.fromkeys(COMPONENTS + ("net_usd",), "0"),
    ("ff", "okx", "BTC/USDT:USDT", DAY3): dict.fromkeys(COMPONENTS + ("net_usd",), "0"),
}


@pytest.fixture
def journal(data_dir):
    write_trades(data_dir / "audit")
    events = events_frame(all_journal_files(data_dir / "audit"))
    return events, fills_frame(events)


def test_components_by_hand_and_they_sum_to_net(journal):
    events, fills = journal
    attribution, notes = profit_attribution(fills, events, MARKS, FX_ROWS, RULES, QUARTERS)
    got = {(r["strategy"], r["venue"], r["symbol"], r["day"]): r for r in attribution.iter_rows(named=True)}
    assert set(got) == set(EXPECTED)
    for key, expected in EXPECTED.items():
        for column, value in expected.items():
            assert got[key][column] == D(value), (key, column, got[key][column])
        assert sum((got[key][c] for c in COMPONENTS), D(0)) == got[key]["net_usd"]
    # net as cash and inventory value, independently: day 1 of mm binance
    day1 = got[("mm", "binance", "BTC/USDT", DAY1)]
    assert (day1["cash_flow_usd"], day1["inventory_value_end_usd"], day1["position_end"]) == (D(-207), D(212), D(2))
    bad, components, net = sum_mismatches(attribution)
    assert bad == [] and components == net == D("8.01956")
    assert notes["fills without a decision mid (mid = fill price)"] == 0
    assert (notes["marks from raw.books"], notes["marks from the last fill price"],
            notes["marks carried from the day before"]) == (4, 1, 4)


def test_a_row_that_does_not_sum_is_named(journal):
    events, fills = journal
    attribution, _ = profit_attribution(fills, events, MARKS, FX_ROWS, RULES, QUARTERS)
    broken = attribution.with_columns(
        pl.when(pl.col("venue") == "okx").then(pl.col("fees_usd") - D("0.000000000001")).otherwise(pl.col("fees_usd"))
        .cast(PROFIT_ATTRIBUTION.columns["fees_usd"]).alias("fees_usd"))
    bad, components, net = sum_mismatches(broken)
    assert len(bad) == 3 and all(b.startswith("ff okx BTC/USDT:USDT") for b in bad)
    assert net - components == D("0.000000000003")


def test_allocation_is_exact_and_without_quarters_there_is_no_profit_tax(journal):
    shares = allocate(D("1"), {"a": D(1), "b": D(1), "c": D(1)})
    assert sum(shares.values()) == D(1) and sorted(shares.values())[0] == D("0.333333333333")
    assert allocate(D("-0.3"), {"gain": D(5), "loss": D(-2)}) == {"gain": D(0), "loss": D("-0.3")}  # a credit
    events, fills = journal
    attribution, notes = profit_attribution(fills, events, MARKS, FX_ROWS, RULES, None)
    assert attribution["profit_tax_usd"].cast(pl.Float64).abs().sum() == 0
    assert "not computed" in notes["profit tax"]
    assert sum_mismatches(attribution)[0] == []


def test_try_fill_without_a_usd_try_rate_is_refused(journal):
    events, fills = journal
    with pytest.raises(ValueError, match="no USD/TRY rate in raw.fx on or before 2026-03-02"):
        profit_attribution(fills, events, MARKS, None, RULES, QUARTERS)


def test_asset_check_and_html_report(journal, resources, data_dir):
    from sofia_pipelines.defs.attribution.assets import profit_attribution_asset
    from sofia_pipelines.defs.attribution.checks import components_sum_to_net
    from sofia_pipelines.report import main as report_main
    from sofia_pipelines.warehouse import replace_rows
    from sofia_runtime.schemas import AUDIT_EVENTS, BOOKS, FILLS

    events, fills = journal
    books = pl.DataFrame([{"venue": r["venue"], "symbol": r["symbol"], "market": "spot",
                           "ts": datetime.combine(r["day"], datetime.min.time()).replace(hour=23),
                           "bid": r["mark"] - 0.5, "ask": r["mark"] + 0.5, "bid_size": 1.0, "ask_size": 1.0}
                          for r in MARKS.iter_rows(named=True)])
    rules = pl.DataFrame([{"rule_id": "tx", "kind": "transaction_tax", "rate": 0.001, "valid_from": date(2020, 1, 1),
                           "valid_to": None, "status": "enacted", "enabled": True, "source": "test"}])
    with resources["warehouse"].get_connection() as conn:
        replace_rows(conn, "audit", AUDIT_EVENTS, events)
        replace_rows(conn, "audit", FILLS, fills)
        replace_rows(conn, "audit", NET_PNL_QUARTERS, QUARTERS)
        replace_rows(conn, "raw", BOOKS, books)
        replace_rows(conn, "raw", FX, FX_ROWS)
        replace_rows(conn, "analytics", TAX_RULES, rules)
    result = dg.materialize([profit_attribution_asset, components_sum_to_net], resources=resources)
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["total_net_usd"].value == "8.019560000000000000"
    md = result.get_asset_materialization_events()[0].materialization.metadata
    assert md["dagster/row_count"].value == 9 and md["total net_usd"].value == pytest.approx(8.01956)
    for chart in ("waterfall", "P&L by strategy over time"):
        assert md[chart].value.startswith("![chart](data:image/png;base64,iVBOR")

    # a broken row in the warehouse fails the blocking check, naming it
    with resources["warehouse"].get_connection() as conn:
        conn.execute("UPDATE analytics.profit_attribution SET edge_usd = edge_usd + 1 WHERE venue = 'btcturk'")
    bad = dg.materialize([profit_attribution_asset, components_sum_to_net], resources=resources,
                         selection=dg.AssetSelection.checks(components_sum_to_net), raise_on_error=False)
    (check,) = bad.get_asset_check_evaluations()
    assert not check.passed and "mm btcturk BTC/TRY 2026-03-02: components 1.95" in check.description

    assert report_main([]) == 0
    page = (data_dir / "reports" / "attribution.html").read_text()
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,iVBOR', page)) == 2
    assert "<h2>Profit attribution</h2>" in page and "inventory MTM" in page
    assert "analytics.anomaly_scores is not materialized yet" in page and "No risk tables" in page
