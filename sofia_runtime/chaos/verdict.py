"""The verdict of one scenario, judged from the runtime's journal, the venue's own record and the fault logs:
- orders sent: the journal's `order` records;
- duplicates: client order ids the venue created more than once, plus re-sends the venue refused as duplicates
  (must be 0);
- journal intact: `journal.verify` over the runtime's files;
- reconciliation: `reconcile.reconcile` of the journal against the venue's own record, matched rows / all rows
  (must be 100 %);
- auto-pause: a `pause` record by the runtime's own breaker (`runtime-breaker:<id>`), which must fire exactly
  where the scenario expects it;
- time to recover, in wall seconds:
  * fault scenarios: from the last fault injected to the first `order_ack` the runtime journaled after it
    (http_5xx: this includes the breaker's pause and the drill's resume right after the burst);
  * stale_data: from the first replayed event past the stale window to the first `order_ack` on the stale venue;
  * kill_restart: from the SIGKILL to the first `decision` of the restarted process (same runtime id).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sofia_runtime.chaos.scenarios import Scenario
from sofia_runtime.exchange import base


@dataclass
class Verdict:
    scenario: str
    runtime_id: str
    mode: str
    strategy: str
    summary: str = ""
    orders_sent: int = 0
    acknowledged: int = 0
    recovered_acks: int = 0
    unknown: int = 0
    not_sent: int = 0
    rejected: int = 0
    fills: int = 0
    injected: dict = field(default_factory=dict)
    duplicates: int = 0
    duplicate_detail: list = field(default_factory=list)
    journal_intact: bool = False
    journal_problem: str | None = None
    reconciliation_pct: float | None = None
    reconciliation_rows: int = 0
    reconciliation_problems: list = field(default_factory=list)
    auto_pause_expected: bool = False
    auto_pause: bool = False
    pause_reason: str | None = None
    pause_after_s: float | None = None  # first injected fault -> the breaker's pause record
    resumed_by_drill: bool = False
    recovery_s: float | None = None
    recovery_definition: str = ""
    exit_codes: list = field(default_factory=list)
    stale: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    failures: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "passed": self.passed}


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def judge(scenario: Scenario, verdict: Verdict, records: list[dict], venue_record, faults: list[dict],
          *, kill_at: float | None = None, restart_seq: int | None = None, stale_after_s: float = 5.0,
          proxy_faults: list[tuple[float, str, str]] = (), live_duplicates: dict | None = None) -> Verdict:
    """Fill `verdict` from the runtime's journal `records`, `venue_record(account, venue, view)` and the fault
    logs; a failed check appends its reason to `verdict.failures`."""
    from sofia_runtime.reconcile import journal_views, reconcile

    fail = verdict.failures.append
    kinds = Counter(r["kind"] for r in records)
    orders = {r["payload"]["client_order_id"]: r["payload"] for r in records if r["kind"] == "order"}
    acks = [r for r in records if r["kind"] == "order_ack"]
    rejected = [r["payload"] for r in records if r["kind"] == "order_rejected"]
    verdict.orders_sent = kinds["order"]
    verdict.acknowledged = len(acks)
    verdict.recovered_acks = sum(1 for r in acks if r["payload"].get("recovered"))
    verdict.unknown = kinds["order_unknown"]
    verdict.not_sent = sum(1 for p in rejected if p["status"] == "not_sent")
    verdict.rejected = len(rejected) - verdict.not_sent
    verdict.fills = kinds["fill"]
    injected = Counter(f["kind"] for f in faults if f["kind"] not in ("stale_start", "stale_end"))
    injected.update(kind for _, kind, _ in proxy_faults if kind != "refused_connections_end")
    verdict.injected = dict(sorted(injected.items()))
    if verdict.orders_sent == 0:
        fail("no order was sent: the drill proved nothing")

    # duplicates: at the venue, and re-sends it refused
    views = journal_views(records)
    resent = [p["client_order_id"] for p in rejected if "duplicate" in str(p.get("error", "")).lower()]
    if live_duplicates is not None:
        verdict.duplicates = len(live_duplicates) + len(resent)
        verdict.duplicate_detail = [f"venue order {oid} ({why})" for oid, why in sorted(live_duplicates.items())]
    else:
        per_client: Counter[str] = Counter()
        for account, view in views.items():
            for venue in sorted({o["venue"] for o in view.orders.values()}):
                rec = venue_record(account, venue, view)
                per_client.update(o["clientOrderId"] for o in rec.orders.values())
        twice = {cid: n for cid, n in per_client.items() if n > 1}
        verdict.duplicates = sum(n - 1 for n in twice.values()) + len(resent)
        verdict.duplicate_detail = [f"{cid} created {n} times at the venue" for cid, n in sorted(twice.items())]
    verdict.duplicate_detail += [f"{cid} re-sent, refused by the venue as a duplicate" for cid in resent]
    if verdict.duplicates:
        fail(f"{verdict.duplicates} duplicate order(s): {verdict.duplicate_detail[:3]}")

    # reconciliation
    rows = reconcile(views, venue_record)
    verdict.reconciliation_rows = len(rows)
    matched = sum(1 for r in rows if r["status"] == "matched")
    verdict.reconciliation_pct = round(100.0 * matched / len(rows), 4) if rows else None
    verdict.reconciliation_problems = [r for r in rows if r["status"] != "matched"][:20]
    if rows and matched != len(rows):
        fail(f"reconciliation {verdict.reconciliation_pct:.2f} %: {len(rows) - matched} row(s) not matched, first: "
             f"{verdict.reconciliation_problems[0]}")

    # auto-pause by the runtime's own breaker
    breaker = f"runtime-breaker:{verdict.runtime_id}"
    pauses = [r for r in records if r["kind"] == "pause" and r["payload"].get("paused_by") == breaker]
    verdict.auto_pause = bool(pauses)
    verdict.pause_reason = pauses[0]["payload"]["reason"] if pauses else None
    fault_times = [f["ts"] for f in faults if f["kind"] not in ("stale_start", "stale_end")]
    fault_times += [t for t, _, _ in proxy_faults]
    if pauses and fault_times:
        verdict.pause_after_s = round(_epoch(pauses[0]["ts"]) - min(fault_times), 3)
    if verdict.auto_pause != verdict.auto_pause_expected:
        fail(f"auto-pause {'fired' if verdict.auto_pause else 'did not fire'}, expected "
             f"{'a pause' if verdict.auto_pause_expected else 'none'} ({scenario.pause_why})")

    # time to recover
    if scenario.kill:
        verdict.recovery_definition = "SIGKILL -> first decision of the restarted process"
        later = [r for r in records if restart_seq is not None and r["seq"] > restart_seq and r["kind"] == "decision"]
        if kill_at is not None and later:
            verdict.recovery_s = round(_epoch(later[0]["ts"]) - kill_at, 3)
    elif scenario.stale:
        verdict.recovery_definition = "stale venue's data back -> first order_ack on that venue"
        start = next((f for f in faults if f["kind"] == "stale_start"), None)
        end = next((f for f in faults if f["kind"] == "stale_end"), None)
        venue = (start or {}).get("venue")
        blocked = sum(1 for r in records if r["kind"] == "decision"
                      and str(r["payload"].get("reason", "")).startswith("stale data"))
        verdict.stale = {"venue": venue, "market_from": (start or {}).get("market_from"),
                         "market_to": (start or {}).get("market_to"), "dropped_events": (end or {}).get("dropped"),
                         "blocked_stale_decisions": blocked}
        if start is None or end is None:
            fail("the stale window did not start and end within the run (lengthen --duration)")
        else:
            verdict.injected["stale_events_dropped"] = end["dropped"]
            guard_from, guard_to = start["market_from"] + int(stale_after_s * 1000), start["market_to"]
            on_stale = [cid for cid, o in orders.items() if o["venue"] == venue
                        and guard_from <= o["market_ts"] < guard_to]
            verdict.stale["orders_on_stale_book"] = len(on_stale)
            if on_stale:
                fail(f"{len(on_stale)} order(s) sent on {venue} while its data was stale: {on_stale[:3]}")
            back = [r for r in acks if _epoch(r["ts"]) >= end["ts"]
                    and orders.get(r["payload"]["client_order_id"], {}).get("venue") == venue]
            if back:
                verdict.recovery_s = round(_epoch(back[0]["ts"]) - end["ts"], 3)
    else:
        verdict.recovery_definition = "last injected fault -> next order_ack"
        if not fault_times:
            fail("no fault was injected")
        else:
            last = max(fault_times)
            after = [r for r in acks if _epoch(r["ts"]) >= last]
            if after:
                verdict.recovery_s = round(_epoch(after[0]["ts"]) - last, 3)
    if verdict.recovery_s is None and not any("stale window" in f or "no fault" in f for f in verdict.failures):
        stop = next((r["payload"] for r in reversed(records) if r["kind"] == "stop"), {})
        hint = (" (the strategy was done: give it more to do, e.g. a larger --order)"
                if stop.get("reason") == "strategy done" else "")
        fail(f"did not recover: nothing matched '{verdict.recovery_definition}' before the run ended{hint}")
    return verdict



def live_venue_record(venue: str, view, base_url: str, env, since_ms: int | None = None) -> tuple:
    """(VenueRecord, unexplained) for a live venue: each journaled order looked up by client order id, the trades
    of their symbols since `since_ms` (the runtime's start); `unexplained` maps venue order ids among those trades
    that no journaled client id resolves to (a duplicate, or other trading on the account meanwhile: run a live
    drill on an account of its own) to a description."""
    from sofia_runtime.exchange.live import LiveVenue, keys_from_env
    from sofia_runtime.reconcile import VenueRecord

    try:
        key, secret = keys_from_env(venue, env)
    except ValueError as exc:
        return VenueRecord(error=str(exc)), {}

    async def fetch():
        client = LiveVenue(venue, key, secret, base_url=base_url)
        record, unexplained = VenueRecord(), {}
        try:
            orders = [o for o in view.orders.values() if o["venue"] == venue]
            for o in orders:
                found = await client.find_order(o["client_order_id"], o["symbol"])
                if found:
                    found = dict(found, clientOrderId=o["client_order_id"])
                    if found.get("type") == "market":
                        # ccxt puts a market order's average fill price in `price`; the order had none (its
                        # fills' prices are reconciled one by one)
                        found["price"] = None
                    record.orders[str(found["id"])] = found
            for symbol in sorted({o["symbol"] for o in orders}):
                for t in await client.fetch_my_trades(symbol, since_ms):
                    record.trades[str(t["id"])] = dict(t, clientOrderId=None)
                    if str(t["order"]) not in record.orders:
                        unexplained[str(t["order"])] = f"trade {t['id']} of an order no journaled client id names"
        except base.ExchangeError as exc:
            record.error = str(exc)
        finally:
            await client.close()
        return record, unexplained

    return asyncio.run(fetch())




def print_verdicts(verdicts: list[Verdict], report: Path | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()

    def ok(flag: bool) -> str:
        return "[green]ok[/green]" if flag else "[red]FAIL[/red]"

    for v in verdicts:
        table = Table(title=f"chaos {v.scenario} ({v.runtime_id}): {'PASS' if v.passed else 'FAIL'}",
                      title_justify="left")
        for col in ("check", "result", "expected", ""):
            table.add_column(col)
        faults = ", ".join(f"{k} {n}" for k, n in v.injected.items()) or "none"
        recon = "n/a" if v.reconciliation_pct is None else f"{v.reconciliation_pct:.2f} % of {v.reconciliation_rows}"
        table.add_row("faults injected", faults, "", "")
        table.add_row("orders sent", f"{v.orders_sent} ({v.acknowledged} acked, {v.recovered_acks} recovered, "
                      f"{v.unknown} unknown, {v.not_sent} not sent, {v.rejected} rejected), {v.fills} fills",
                      "> 0", ok(v.orders_sent > 0))
        table.add_row("duplicates", str(v.duplicates), "0", ok(v.duplicates == 0))
        table.add_row("journal intact", "yes" if v.journal_intact else f"no: {v.journal_problem}", "yes",
                      ok(v.journal_intact))
        table.add_row("reconciliation", recon, "100 %", ok(v.reconciliation_pct in (None, 100.0)))
        paused = "no" if not v.auto_pause else (f"yes, {v.pause_after_s:.3f} s after the first fault"
                                                 if v.pause_after_s is not None else "yes")
        table.add_row("auto-pause", paused + (", resumed by the drill" if v.resumed_by_drill else ""),
                      "yes" if v.auto_pause_expected else "no", ok(v.auto_pause == v.auto_pause_expected))
        table.add_row("time to recover", "-" if v.recovery_s is None else f"{v.recovery_s:.3f} s",
                      v.recovery_definition, ok(v.recovery_s is not None))
        if v.stale:
            table.add_row("stale data", ", ".join(f"{k} {val}" for k, val in v.stale.items()), "", "")
        console.print(table)
        for reason in v.failures:
            console.print(f"  [red]FAIL[/red] {reason}")
        for note in v.notes:
            console.print(f"  note: {note}")
    summary = Table(title="chaos drill summary", title_justify="left")
    for col in ("scenario", "orders", "faults", "duplicates", "journal", "reconciliation", "auto-pause (expected)",
                "recovery", "verdict"):
        summary.add_column(col)
    for v in verdicts:
        summary.add_row(v.scenario, str(v.orders_sent), str(sum(v.injected.values())), str(v.duplicates),
                        "intact" if v.journal_intact else "BROKEN",
                        "n/a" if v.reconciliation_pct is None else f"{v.reconciliation_pct:.2f} %",
                        f"{'yes' if v.auto_pause else 'no'} ({'yes' if v.auto_pause_expected else 'no'})",
                        "-" if v.recovery_s is None else f"{v.recovery_s:.3f} s",
                        "[green]PASS[/green]" if v.passed else "[red]FAIL[/red]")
    console.print(summary)
    if report is not None:
        console.print(f"verdicts written to {report}")
