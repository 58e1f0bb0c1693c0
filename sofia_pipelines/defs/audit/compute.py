"""The audit journal as tables, reconciliation against the venues' own records, and net P&L on the fills."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import polars as pl

from sofia_runtime.journal import canonical, read_records
from sofia_runtime.schemas import AUDIT_EVENTS, BALANCES, FILLS, NET_PNL_DAYS, NET_PNL_QUARTERS, RECONCILIATION
from sofia_runtime.tax import Fill, TaxRule, net_pnl


def journal_files_for_day(audit_dir: Path, day: date) -> list[Path]:
    return sorted(audit_dir.glob(f"*/{day.isoformat()}.jsonl"))


def all_journal_files(audit_dir: Path) -> list[Path]:
    return sorted(audit_dir.glob("*/*.jsonl"))


def _ts(iso: str) -> datetime:
    return datetime.fromisoformat(iso).astimezone(timezone.utc).replace(tzinfo=None)


def _market_ts(ms) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).replace(tzinfo=None) if isinstance(ms, int) and ms else None


def events_frame(files: Iterable[Path]) -> pl.DataFrame:
    """Every complete record of the files; a record still being written (no newline yet) waits for the next run."""
    rows = [{"runtime_id": rec["runtime_id"], "seq": rec["seq"], "ts": _ts(rec["ts"]), "kind": rec["kind"],
             "payload": canonical(rec["payload"]).decode(), "prev_hash": rec["prev_hash"], "hash": rec["hash"],
             "file": str(path), "line": line}
            for path, line, rec in read_records(files, in_progress=True)]
    return AUDIT_EVENTS.conform(pl.DataFrame(rows, schema=AUDIT_EVENTS.polars_schema), "journal records") \
        if rows else AUDIT_EVENTS.empty()


def _payloads(events: pl.DataFrame, kind: str) -> list[tuple[dict, dict]]:
    return [(row, json.loads(row["payload"])) for row in events.filter(pl.col("kind") == kind).iter_rows(named=True)]


def fills_frame(events: pl.DataFrame) -> pl.DataFrame:
    rows = [{"runtime_id": r["runtime_id"], "seq": r["seq"], "ts": r["ts"], "trade_id": p["trade_id"],
             "order_id": p.get("order_id"), "client_order_id": p.get("client_order_id"), "venue": p["venue"],
             "symbol": p["symbol"], "side": p["side"], "price": p["price"], "amount": p["amount"], "fee": p["fee"],
             "fee_currency": p.get("fee_currency"), "liquidity": p.get("liquidity"), "strategy": p["strategy"],
             "market_ts": _market_ts(p.get("market_ts"))} for r, p in _payloads(events, "fill")]
    if not rows:
        return FILLS.empty()
    return FILLS.conform(pl.DataFrame(rows, infer_schema_length=None), "journal fill records")


def balances_frame(events: pl.DataFrame) -> pl.DataFrame:
    rows = [{"runtime_id": r["runtime_id"], "ts": r["ts"], "venue": p["venue"], "asset": asset, "total": total}
            for r, p in _payloads(events, "balances") for asset, total in p["total"].items()]
    if not rows:
        return BALANCES.empty()
    return BALANCES.conform(pl.DataFrame(rows, infer_schema_length=None), "journal balances records")


# --- reconciliation ---------------------------------------------------------------------------------------
@dataclass
class VenueRecord:
    """What a venue says about one runtime's orders and trades."""
    orders: dict[str, dict] = field(default_factory=dict)  # order id -> order
    trades: dict[str, dict] = field(default_factory=dict)  # trade id -> trade
    error: str | None = None


def paper_venue_record(path: Path) -> VenueRecord:
    """The paper venue's own record file (its order book of record and trade log)."""
    record = VenueRecord()
    if not path.exists():
        record.error = f"{path} does not exist"
        return record
    with path.open() as f:
        for number, raw in enumerate(f, start=1):
            if not raw.endswith("\n"):
                break  # still being written
            try:
                line = json.loads(raw)
            except json.JSONDecodeError as exc:
                record.error = f"{path}:{number}: not JSON: {exc}"
                return record
            if line["t"] == "order":
                record.orders[line["order"]["id"]] = line["order"]
            elif line["t"] == "trade":
                record.trades[line["trade"]["id"]] = line["trade"]
    return record


@dataclass
class JournalView:
    """One runtime's orders and fills as its journal tells them."""
    orders: dict[str, dict] = field(default_factory=dict)  # client order id -> order payload + ack/close
    fills: dict[str, dict] = field(default_factory=dict)  # trade id -> fill payload
    mode: str = "paper"
    venue_urls: dict = field(default_factory=dict)


def journal_views(events: pl.DataFrame) -> dict[str, JournalView]:
    views: dict[str, JournalView] = {}
    for row in events.sort("runtime_id", "seq").iter_rows(named=True):
        view = views.setdefault(row["runtime_id"], JournalView())
        p, kind = json.loads(row["payload"]), row["kind"]
        if kind == "start":
            view.mode = p.get("mode", view.mode)
            view.venue_urls = (p.get("config") or {}).get("venue_urls") or {}
        elif kind == "order":
            view.orders[p["client_order_id"]] = dict(p)
        elif kind in ("order_ack", "order_rejected", "order_closed") and p["client_order_id"] in view.orders:
            o = view.orders[p["client_order_id"]]
            if kind == "order_ack":
                o["order_id"] = p["order_id"]
            elif kind == "order_rejected":
                o["rejected"] = p["status"]
            else:
                o["final_status"], o["final_filled"] = p["status"], p["filled"]
        elif kind == "fill":
            view.fills[p["trade_id"]] = p
    return views


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    try:
        return Decimal(str(a)) == Decimal(str(b))
    except ArithmeticError:
        return str(a) == str(b)


def reconcile(views: dict[str, JournalView], venue_record: Callable[[str, str, JournalView], VenueRecord]) -> pl.DataFrame:
    """Match every journaled order and fill of every runtime against the venue's record, both ways."""
    rows = []

    def add(runtime_id, venue, item, id_, status, detail=None):
        rows.append({"runtime_id": runtime_id, "venue": venue, "item": item, "id": id_, "status": status,
                     "detail": detail})

    for runtime_id, view in sorted(views.items()):
        venues = sorted({o["venue"] for o in view.orders.values()} | {f["venue"] for f in view.fills.values()})
        for venue in venues:
            record = venue_record(runtime_id, venue, view)
            if record.error:
                add(runtime_id, venue, "venue", venue, "missing_at_venue", f"venue record unavailable: {record.error}")
                continue
            by_client = {o["clientOrderId"]: o for o in record.orders.values()}
            journal_orders = {cid: o for cid, o in view.orders.items() if o["venue"] == venue}
            for cid, o in sorted(journal_orders.items()):
                theirs = by_client.get(cid)
                if theirs is None:
                    if o.get("rejected"):
                        add(runtime_id, venue, "order", cid, "matched", f"not sent ({o['rejected']}), not at the venue")
                    else:
                        add(runtime_id, venue, "order", cid, "missing_at_venue", "journaled as sent, the venue has no such order")
                    continue
                if o.get("rejected") and o["rejected"] != "rejected":
                    add(runtime_id, venue, "order", cid, "mismatched",
                        f"journal says {o['rejected']}, the venue has order {theirs['id']}")
                    continue
                diffs = [f"{k}: journal {o.get(k)} venue {theirs.get(k)}" for k in ("symbol", "side", "type")
                         if o.get(k) != theirs.get(k)]
                diffs += [f"{k}: journal {o.get(k)} venue {theirs.get(k)}" for k in ("price", "amount")
                          if not _same(o.get(k), theirs.get(k))]
                if o.get("order_id") and str(o["order_id"]) != str(theirs["id"]):
                    diffs.append(f"order id: journal {o['order_id']} venue {theirs['id']}")
                filled = sum((Decimal(str(f["amount"])) for f in view.fills.values()
                              if f.get("client_order_id") == cid), Decimal(0))
                if not _same(filled, theirs.get("filled")):
                    diffs.append(f"filled: journal fills {filled} venue {theirs.get('filled')}")
                add(runtime_id, venue, "order", cid, "mismatched" if diffs else "matched", "; ".join(diffs) or None)
            for cid, theirs in sorted(by_client.items()):
                if cid not in journal_orders:
                    add(runtime_id, venue, "order", cid, "missing_in_journal",
                        f"the venue has order {theirs['id']} ({theirs['side']} {theirs['amount']} {theirs['symbol']})")
            journal_fills = {t: f for t, f in view.fills.items() if f["venue"] == venue}
            for tid, f in sorted(journal_fills.items()):
                theirs = record.trades.get(tid)
                if theirs is None:
                    add(runtime_id, venue, "fill", tid, "missing_at_venue", "journaled fill the venue has no trade for")
                    continue
                diffs = [f"{k}: journal {f.get(k)} venue {theirs.get(k)}" for k in ("symbol", "side")
                         if f.get(k) != theirs.get(k)]
                diffs += [f"{k}: journal {f.get(k)} venue {theirs.get(k)}" for k in ("price", "amount")
                          if not _same(f.get(k), theirs.get(k))]
                fee = (theirs.get("fee") or {}).get("cost")
                if not _same(f.get("fee"), fee):
                    diffs.append(f"fee: journal {f.get('fee')} venue {fee}")
                if str(f.get("order_id")) != str(theirs.get("order")):
                    diffs.append(f"order: journal {f.get('order_id')} venue {theirs.get('order')}")
                add(runtime_id, venue, "fill", tid, "mismatched" if diffs else "matched", "; ".join(diffs) or None)
            own_orders = {str(o["id"]) for o in by_client.values()}
            for tid, theirs in sorted(record.trades.items()):
                if tid not in journal_fills and str(theirs.get("order")) in own_orders:
                    add(runtime_id, venue, "fill", tid, "missing_in_journal",
                        f"the venue has trade {tid} of order {theirs.get('order')} ({theirs['side']} {theirs['amount']})")
    if not rows:
        return RECONCILIATION.empty()
    return RECONCILIATION.conform(pl.DataFrame(rows, schema=RECONCILIATION.polars_schema), "reconciliation")


def live_venue_record(venue: str, view: JournalView, env) -> VenueRecord:
    """A live venue's record of one runtime's orders and trades, fetched with ccxt (keys from the environment)."""
    import asyncio

    from sofia_runtime.exchange.base import ExchangeError
    from sofia_runtime.exchange.live import LiveVenue, keys_from_env

    try:
        key, secret = keys_from_env(venue, env)
    except ValueError as exc:
        return VenueRecord(error=str(exc))

    async def fetch() -> VenueRecord:
        client = LiveVenue(venue, key, secret, base_url=view.venue_urls.get(venue))
        record = VenueRecord()
        try:
            orders = [o for o in view.orders.values() if o["venue"] == venue]
            for o in orders:
                found = await client.find_order(o["client_order_id"], o["symbol"])
                if found:
                    record.orders[str(found["id"])] = found
            for symbol in sorted({o["symbol"] for o in orders}):
                for t in await client.fetch_my_trades(symbol):
                    record.trades[str(t["id"])] = dict(t, clientOrderId=None)
        except ExchangeError as exc:
            record.error = str(exc)
        finally:
            await client.close()
        return record

    return asyncio.run(fetch())


# --- net P&L ----------------------------------------------------------------------------------------------
def net_pnl_frames(fills: pl.DataFrame, rules: list[TaxRule], usd_try: Callable[[datetime], Decimal]
                   ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per runtime (the account): FIFO realized P&L, gross -> fees -> taxes -> net, by day and by quarter.
    A fill is dated by its market time when it has one (the replayed day), else by when it was journaled.
    Inventory a runtime sold that it did not buy first (it was on the venue when the runtime started) enters
    the ledger as bought at that first sale's price: its earlier gain or loss is not the runtime's."""
    ledger: list[Fill] = []
    held: dict[tuple[str, str], Decimal] = {}
    for r in fills.sort("market_ts", "ts", "trade_id", nulls_last=True).iter_rows(named=True):
        when = r["market_ts"] or r["ts"]
        fill = Fill(r["runtime_id"], r["venue"], r["symbol"], r["side"], when, Decimal(r["price"]),
                    Decimal(r["amount"]), Decimal(r["fee"]), r["trade_id"])
        key = (r["runtime_id"], r["symbol"])
        pos = held.get(key, Decimal(0))
        if fill.side == "sell" and ":" not in fill.symbol and pos < fill.amount:
            ledger.append(Fill(fill.account, fill.venue, fill.symbol, "buy", when - timedelta(microseconds=1),
                               fill.price, fill.amount - pos, Decimal(0), f"{fill.trade_id}:opening-inventory"))
            pos = fill.amount
        held[key] = pos + (fill.amount if fill.side == "buy" else -fill.amount)
        ledger.append(fill)
    report = net_pnl(ledger, rules, usd_try)
    days = pl.DataFrame(report.days, schema_overrides={"day": pl.Date}) if report.days else NET_PNL_DAYS.empty()
    quarters = pl.DataFrame(report.quarters) if report.quarters else NET_PNL_QUARTERS.empty()
    return (NET_PNL_DAYS.conform(days, "net_pnl days"), NET_PNL_QUARTERS.conform(quarters, "net_pnl quarters"))
