"""The audit journal as tables, reconciliation against the venues' own records, and net P&L on the fills."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import polars as pl

from sofia_runtime.journal import Anchor, canonical, last_record, read_records, verify
from sofia_runtime.reconcile import JournalView, VenueRecord, journal_views, reconcile
from sofia_runtime.schemas import (AUDIT_EVENTS, BALANCES, FILLS, NET_PNL_DAYS, NET_PNL_QUARTERS, RECONCILIATION,
                                   TableSchema)
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


# --- reconciliation (the matching itself is sofia_runtime.reconcile, shared with the chaos drill) ----------
def reconciliation_frame(events: pl.DataFrame, venue_record) -> pl.DataFrame:
    records = [{"runtime_id": r["runtime_id"], "seq": r["seq"], "kind": r["kind"], "payload": json.loads(r["payload"])}
               for r in events.sort("runtime_id", "seq").iter_rows(named=True)]
    rows = reconcile(journal_views(records), venue_record)
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
def tax_ledger(fills: pl.DataFrame) -> list[Fill]:
    """The runtimes' fills (audit.fills) as the tax model's ledger, one account per runtime_id. A fill is dated by
    its market time when it has one (the replayed day), else by when it was journaled. Inventory a runtime sold
    that it did not buy first (it was on the venue when the runtime started) enters the ledger as bought at that
    first sale's price: its earlier gain or loss is not the runtime's."""
    ledger: list[Fill] = []
    held: dict[tuple[str, str], Decimal] = {}
    for r in fills.sort("market_ts", "ts", "trade_id", nulls_last=True).iter_rows(named=True):
        when = r["market_ts"] or r["ts"]
        fill = Fill(r["runtime_id"], r["venue"], r["symbol"], r["side"], when, _decimal(r["price"]),
                    _decimal(r["amount"]), _decimal(r["fee"]), r["trade_id"])
        key = (r["runtime_id"], r["symbol"])
        pos = held.get(key, Decimal(0))
        if fill.side == "sell" and ":" not in fill.symbol and pos < fill.amount:
            ledger.append(Fill(fill.account, fill.venue, fill.symbol, "buy", when - timedelta(microseconds=1),
                               fill.price, fill.amount - pos, Decimal(0), f"{fill.trade_id}:opening-inventory"))
            pos = fill.amount
        held[key] = pos + (fill.amount if fill.side == "buy" else -fill.amount)
        ledger.append(fill)
    return ledger


def _decimal(value) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def net_pnl_frames(fills: pl.DataFrame, rules: list[TaxRule], usd_try: Callable[[datetime], Decimal]
                   ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per runtime (the account): FIFO realized P&L of `tax_ledger`, gross -> fees -> taxes -> net, by day and
    by quarter."""
    ledger = tax_ledger(fills)
    report = net_pnl(ledger, rules, usd_try)
    days = pl.DataFrame(report.days, schema_overrides={"day": pl.Date}) if report.days else NET_PNL_DAYS.empty()
    quarters = pl.DataFrame(report.quarters) if report.quarters else NET_PNL_QUARTERS.empty()
    return (NET_PNL_DAYS.conform(days, "net_pnl days"), NET_PNL_QUARTERS.conform(quarters, "net_pnl quarters"))


# --- what ingestion trusts: the chain verified, the heads it ingested remembered ---------------------------------

INGESTED_HEADS = TableSchema(
    "ingested_heads", {"runtime_id": pl.Utf8, "seq": pl.Int64, "hash": pl.Utf8, "ingested_at": pl.Datetime("ms")},
    ("runtime_id",), description="per runtime, the last journal record ingested: a journal that later ends "
                                 "before it, or holds another record at its seq, lost or changed records")


def runtime_files(audit_dir: Path) -> dict[str, list[Path]]:
    """Every runtime's journal files, in day order."""
    out: dict[str, list[Path]] = {}
    for path in all_journal_files(audit_dir):
        out.setdefault(path.parent.name, []).append(path)
    return out


def journal_problems(audit_dir: Path, heads: pl.DataFrame, running: Callable[[str], bool],
                     runtimes: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """What makes the runtimes' journals untrustworthy, as (kind, message naming file and line): "broken" for a
    broken chain, a cut tail (the runtime's checkpoint, or a head ingested before, lies past the files' end) or a
    record changed since it was ingested; "torn" for a torn last line left by a runtime that is not running
    (`running(runtime_id)` false), whose complete records before it are still sound."""
    files_by_runtime = runtime_files(audit_dir)
    remembered = {r["runtime_id"]: r for r in heads.iter_rows(named=True)}
    problems = []
    for rid in sorted(set(runtimes) if runtimes is not None else set(files_by_runtime) | set(remembered)):
        files = files_by_runtime.get(rid, [])
        head = remembered.get(rid)
        if not files:
            if head:
                problems.append(("broken", f"{audit_dir / rid}: no journal files, but records up to seq "
                                           f"{head['seq']} were ingested on {head['ingested_at']}: the journal was "
                                           "removed"))
            continue
        anchors = {rid: Anchor(head["seq"], head["hash"], f"the record ingested on {head['ingested_at']}")} \
            if head else None
        problem = verify(files, in_progress=True, anchors=anchors)
        if problem:
            problems.append(("broken", str(problem)))
            continue
        tail = files[-1].read_bytes()
        if tail and not tail.endswith(b"\n") and not running(rid):
            line, torn = tail.count(b"\n") + 1, len(tail) - tail.rfind(b"\n") - 1
            problems.append(("torn", f"{files[-1]}:{line}: torn last line ({torn} bytes without newline) and runtime "
                                     f"{rid} is not running: its last record was never completed (the runtime "
                                     "moves it aside when it restarts)"))
    return problems


def heads_frame(audit_dir: Path, now: datetime) -> pl.DataFrame:
    """The last complete record of every runtime's journal, as INGESTED_HEADS rows."""
    rows = [{"runtime_id": rid, "seq": last["seq"], "hash": last["hash"], "ingested_at": now}
            for rid, files in runtime_files(audit_dir).items() if (last := last_record(files)) is not None]
    return INGESTED_HEADS.conform(pl.DataFrame(rows, schema=INGESTED_HEADS.polars_schema), "journal heads")
