"""Reconciliation: every order and fill a runtime journaled against the venue's own record, both ways.

Runtimes that trade one venue account (the two slots of a blue-green deployment share one) are reconciled
together against it. Used by the pipelines' `reconciliation` asset and by the chaos drill's verdict.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path


@dataclass
class VenueRecord:
    """What a venue says about one account's orders and trades."""
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
    """One venue account's orders and fills as its runtimes' journals tell them."""
    orders: dict[str, dict] = field(default_factory=dict)  # client order id -> order payload + ack/close
    fills: dict[str, dict] = field(default_factory=dict)  # trade id -> fill payload
    mode: str = "paper"
    venue_urls: dict = field(default_factory=dict)
    runtimes: set[str] = field(default_factory=set)


def account_of(records: Iterable[dict]) -> dict[str, str]:
    """runtime id -> the venue account its start records name (the runtime id itself when none does)."""
    accounts = {}
    for rec in records:
        if rec["kind"] == "start":
            accounts[rec["runtime_id"]] = rec["payload"].get("venue_account") or rec["runtime_id"]
        accounts.setdefault(rec["runtime_id"], rec["runtime_id"])
    return accounts


def journal_views(records: Iterable[dict]) -> dict[str, JournalView]:
    """Records (each with runtime_id, seq, kind and payload as a dict), in seq order per runtime."""
    records = list(records)
    accounts = account_of(records)
    views: dict[str, JournalView] = {}
    for rec in records:
        view = views.setdefault(accounts[rec["runtime_id"]], JournalView())
        view.runtimes.add(rec["runtime_id"])
        p, kind = rec["payload"], rec["kind"]
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


def reconcile(views: dict[str, JournalView], venue_record: Callable[[str, str, JournalView], VenueRecord]) -> list[dict]:
    """Rows {account, venue, item, id, status, detail}: status matched, missing_at_venue, missing_in_journal or
    mismatched (detail names the fields)."""
    rows = []

    def add(account, venue, item, id_, status, detail=None):
        rows.append({"account": account, "venue": venue, "item": item, "id": id_, "status": status,
                     "detail": detail})

    for account, view in sorted(views.items()):
        venues = sorted({o["venue"] for o in view.orders.values()} | {f["venue"] for f in view.fills.values()})
        for venue in venues:
            record = venue_record(account, venue, view)
            if record.error:
                add(account, venue, "venue", venue, "missing_at_venue", f"venue record unavailable: {record.error}")
                continue
            by_client = {o["clientOrderId"]: o for o in record.orders.values()}
            journal_orders = {cid: o for cid, o in view.orders.items() if o["venue"] == venue}
            for cid, o in sorted(journal_orders.items()):
                theirs = by_client.get(cid)
                if theirs is None:
                    if o.get("rejected"):
                        add(account, venue, "order", cid, "matched", f"not sent ({o['rejected']}), not at the venue")
                    else:
                        add(account, venue, "order", cid, "missing_at_venue", "journaled as sent, the venue has no such order")
                    continue
                if o.get("rejected") and o["rejected"] != "rejected":
                    add(account, venue, "order", cid, "mismatched",
                        f"journal says {o['rejected']}, the venue has order {theirs['id']}")
                    continue
                diffs = [f"{k}: journal {o.get(k)} venue {theirs.get(k)}" for k in ("symbol", "side", "type")
                         if o.get(k) != theirs.get(k)]
                # a market order has no price of its own (venues report the average fill price there)
                compared = ("price", "amount") if o.get("type") == "limit" else ("amount",)
                diffs += [f"{k}: journal {o.get(k)} venue {theirs.get(k)}" for k in compared
                          if not _same(o.get(k), theirs.get(k))]
                if o.get("order_id") and str(o["order_id"]) != str(theirs["id"]):
                    diffs.append(f"order id: journal {o['order_id']} venue {theirs['id']}")
                filled = sum((Decimal(str(f["amount"])) for f in view.fills.values()
                              if f.get("client_order_id") == cid), Decimal(0))
                if not _same(filled, theirs.get("filled")):
                    diffs.append(f"filled: journal fills {filled} venue {theirs.get('filled')}")
                add(account, venue, "order", cid, "mismatched" if diffs else "matched", "; ".join(diffs) or None)
            for cid, theirs in sorted(by_client.items()):
                if cid not in journal_orders:
                    add(account, venue, "order", cid, "missing_in_journal",
                        f"the venue has order {theirs['id']} ({theirs['side']} {theirs['amount']} {theirs['symbol']})")
            journal_fills = {t: f for t, f in view.fills.items() if f["venue"] == venue}
            for tid, f in sorted(journal_fills.items()):
                theirs = record.trades.get(tid)
                if theirs is None:
                    add(account, venue, "fill", tid, "missing_at_venue", "journaled fill the venue has no trade for")
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
                add(account, venue, "fill", tid, "mismatched" if diffs else "matched", "; ".join(diffs) or None)
            own_orders = {str(o["id"]) for o in by_client.values()}
            for tid, theirs in sorted(record.trades.items()):
                if tid not in journal_fills and str(theirs.get("order")) in own_orders:
                    add(account, venue, "fill", tid, "missing_in_journal",
                        f"the venue has trade {tid} of order {theirs.get('order')} ({theirs['side']} {theirs['amount']})")
    return rows
