"""`sofia`: the pipelines' command line (demo, backfill)."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console()


def _instance():
    """The instance under DAGSTER_HOME (the Makefile sets it to .dagster/), so runs show in the UI;
    ./.dagster when unset and present; otherwise an ephemeral one, said aloud."""
    import os

    import dagster as dg

    if not os.environ.get("DAGSTER_HOME") and (Path.cwd() / ".dagster" / "dagster.yaml").exists():
        os.environ["DAGSTER_HOME"] = str(Path.cwd() / ".dagster")
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    console.print("[yellow]DAGSTER_HOME is not set: runs go to an ephemeral instance and will not show in the UI")
    return dg.DagsterInstance.ephemeral()


def _partition_keys(start: str, end: str) -> list[str]:
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    if last < first:
        raise SystemExit(f"backfill: end {end} is before start {start}")
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _print_graph_summary(summary) -> None:
    from sofia_pipelines.materialize import summary_rows

    table = Table(title="Materialized assets")
    for col in ("asset", "partitions", "rows", "seconds"):
        table.add_column(col, justify="left" if col == "asset" else "right")
    for name, partitions, rows, seconds in summary_rows(summary):
        table.add_row(name, str(partitions), f"{rows:,}", f"{seconds:.1f}")
    console.print(table)
    console.print(f"asset checks passed: {summary.checks_passed}, failed: {len(summary.checks_failed)}, "
                  f"warnings: {len(summary.checks_warned)}")
    for failed in summary.checks_failed:
        console.print(f"  [red]failed[/red] {failed}")
    for warned in summary.checks_warned:
        console.print(f"  [yellow]warning[/yellow] {warned[:300]}")
    for skipped in summary.skipped:
        console.print(f"  [yellow]skipped[/yellow] {skipped}")
    for failed in summary.failed_runs:
        console.print(f"  [red]run failed[/red] {failed}")
    console.print(f"graph wall time: {summary.wall_seconds:.1f} s over {len(summary.run_ids)} run(s)")


def cmd_backfill(args) -> int:
    from sofia_pipelines.definitions import defs
    from sofia_pipelines.materialize import materialize_partitions

    keys = _partition_keys(args.start, args.end)
    summary = materialize_partitions(defs, keys, _instance(), select=args.select, log_level="WARNING",
                                     on_partition=lambda k, r: console.print(
                                         f"partition {k}: run {r.run_id}{'' if r.success else ' [red]failed'}"))
    _print_graph_summary(summary)
    return 1 if summary.checks_failed or summary.failed_runs else 0


def cmd_demo(args) -> int:
    from sofia_pipelines.definitions import defs
    from sofia_pipelines.materialize import materialize_partitions

    started = time.perf_counter()
    source = defs.resources["market_source"].get()
    keys = [d.isoformat() for d in source.available_days()]
    if args.partitions:
        keys = keys[-args.partitions:]
    console.print(f"source {source.name}: materializing {len(keys)} partition(s) {keys[0]} … {keys[-1]}")
    summary = materialize_partitions(defs, keys, _instance(), log_level="WARNING",
                                     on_partition=lambda k, r: console.print(f"  partition {k} done"))
    _print_graph_summary(summary)
    database = defs.resources["warehouse"].database
    if Path(database).exists():
        console.print(f"warehouse {database}: {Path(database).stat().st_size / 2**20:.1f} MiB")
    else:
        console.print(f"warehouse {database}")
    failed = bool(summary.checks_failed or summary.failed_runs)
    if args.runtime_seconds > 0:
        failed |= _demo_runtime(defs, args.runtime_seconds, args.speed)
    console.print(f"demo wall time: {time.perf_counter() - started:.1f} s")
    return 1 if failed else 0


def _demo_runtime(defs, seconds: float, speed: float) -> bool:
    """Run mm_lite and funding_farmer in paper mode side by side on the snapshot, ingest their journals,
    reconcile, and summarize. Returns True when something failed."""
    import subprocess
    from datetime import datetime, timezone

    from sofia_pipelines.materialize import ingest_journal
    from sofia_runtime import paths
    from sofia_runtime.journal import journal_files, read_records

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    runtimes = {s: f"demo-{s}-{stamp}" for s in ("mm_lite", "funding_farmer")}
    console.print(f"paper runtimes for {seconds:g} s at replay speed {speed:g}: {', '.join(runtimes.values())}")
    procs = {s: subprocess.Popen([sys.executable, "-m", "sofia_runtime.cli", "run", "--strategy", s, "--mode", "paper",
                                  "--speed", str(speed), "--duration", f"{seconds}s", "--port", "0",
                                  "--runtime-id", rid]) for s, rid in runtimes.items()}
    failed = False
    for s, proc in procs.items():
        if proc.wait() != 0:
            console.print(f"[red]runtime {runtimes[s]} exited with {proc.returncode}")
            failed = True
    files = [f for rid in runtimes.values() for f in journal_files(paths.audit_dir() / rid)]
    days = sorted({f.stem for f in files})
    outcome = ingest_journal(defs, _instance(), days)
    table = Table(title="Paper trading")
    for col in ("runtime", "decisions", "gate pass rate", "orders", "fills", "gross P&L USD", "fees USD",
                "net P&L USD"):
        table.add_column(col, justify="left" if col == "runtime" else "right")
    recon = outcome.get("reconciliation", {})
    for s, rid in runtimes.items():
        records = [rec for _, _, rec in read_records(journal_files(paths.audit_dir() / rid))]
        decisions = [r for r in records if r["kind"] == "decision"]
        passed = sum(1 for r in decisions if r["payload"]["passed"])
        stop = next((r["payload"] for r in reversed(records) if r["kind"] == "stop"), {})
        net, fees = float(stop.get("net_pnl_usd", 0)), float(stop.get("fees_usd", 0))
        table.add_row(rid, f"{len(decisions):,}", f"{passed / len(decisions):.1%}" if decisions else "-",
                      f"{sum(1 for r in records if r['kind'] == 'order'):,}",
                      f"{sum(1 for r in records if r['kind'] == 'fill'):,}", f"{net + fees:,.2f}", f"{fees:,.2f}",
                      f"{net:,.2f}")
    console.print(table)
    rate = recon.get("reconciliation_rate")
    console.print(f"reconciliation: {recon.get('matched', 0)} matched, {recon.get('breaks', '?')} breaks, rate "
                  f"{rate:.1%}" if rate is not None else "reconciliation: did not run")
    for name, passed in outcome["checks"].items():
        console.print(f"  check {name}: {'[green]passed' if passed else '[red]failed'}")
        failed |= not passed
    totals = {k.removeprefix("total "): v for k, v in outcome.get("profit_attribution", {}).items()
              if k.startswith("total ")}
    if totals:
        console.print("attribution (USD): " + ", ".join(f"{k} {v:,.2f}" for k, v in totals.items()))
    console.print("P&L marked to mid at the end of the run; realized P&L through the tax model is in audit.net_pnl_*; "
                  "`make report` writes the attribution report")
    return failed or not outcome["success"]


def cmd_ingest_journal(args) -> int:
    """What the journal sensor does, now: ingest the journal days, reconcile, net P&L, attribution, SLOs."""
    from sofia_pipelines.definitions import defs
    from sofia_pipelines.materialize import ingest_journal
    from sofia_runtime import paths

    days = args.days or sorted({f.stem for f in paths.audit_dir().glob("*/*.jsonl")})
    if not days:
        console.print(f"no journal files under {paths.audit_dir()}")
        return 1
    outcome = ingest_journal(defs, _instance(), days)
    recon = outcome.get("reconciliation", {})
    console.print(f"ingested {len(days)} journal day(s): {', '.join(days)}")
    if recon:
        console.print(f"reconciliation: {recon.get('matched', 0)} matched, {recon.get('breaks', '?')} breaks, "
                      f"rate {recon.get('reconciliation_rate', 0):.1%}")
    failed = [name for name, ok in outcome["checks"].items() if not ok]
    for name in failed:
        console.print(f"  [red]check failed[/red] {name}")
    return 1 if failed or not outcome["success"] else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sofia", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="materialize the whole graph on the configured source and summarize")
    demo.add_argument("--partitions", type=int, default=0, help="only the last N partitions (default: all)")
    demo.add_argument("--runtime-seconds", type=float, default=60.0,
                      help="wall time of the paper runtimes after the graph (0: skip them)")
    demo.add_argument("--speed", type=float, default=600.0, help="their replay speed (market s per wall s)")
    demo.set_defaults(func=cmd_demo)
    backfill = sub.add_parser("backfill", help="materialize a range of daily partitions, one run each")
    backfill.add_argument("start", help="first partition, YYYY-MM-DD")
    backfill.add_argument("end", help="last partition, YYYY-MM-DD (inclusive)")
    backfill.add_argument("--select", help="comma-separated asset keys of any partitioning, or '*' for every asset "
                                           "(default: every asset but those following the journal); grouped by "
                                           "partitions definition: market-partitioned ones per day in the range, "
                                           "journal-partitioned ones per journal day that exists, unpartitioned once")
    backfill.set_defaults(func=cmd_backfill)
    ingest = sub.add_parser("ingest-journal", help="ingest the runtimes' journals now, reconcile, compute P&L and SLOs")
    ingest.add_argument("days", nargs="*", help="journal days YYYY-MM-DD (default: every day with a journal file)")
    ingest.set_defaults(func=cmd_ingest_journal)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
