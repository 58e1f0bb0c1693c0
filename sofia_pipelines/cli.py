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
    console.print(f"asset checks passed: {summary.checks_passed}, failed: {len(summary.checks_failed)}")
    for failed in summary.checks_failed:
        console.print(f"  [red]failed[/red] {failed}")
    console.print(f"graph wall time: {summary.wall_seconds:.1f} s over {len(summary.run_ids)} run(s)")


def cmd_backfill(args) -> int:
    from sofia_pipelines.definitions import defs
    from sofia_pipelines.materialize import materialize_partitions

    keys = _partition_keys(args.start, args.end)
    summary = materialize_partitions(defs, keys, _instance(), select=args.select, log_level="WARNING",
                                     on_partition=lambda k, r: console.print(f"partition {k}: run {r.run_id}"))
    _print_graph_summary(summary)
    return 1 if summary.checks_failed else 0


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
    wh = Path(defs.resources["warehouse"].database)
    console.print(f"warehouse {wh}: {wh.stat().st_size / 2**20:.1f} MiB")
    console.print(f"demo wall time: {time.perf_counter() - started:.1f} s")
    return 1 if summary.checks_failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sofia", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="materialize the whole graph on the configured source and summarize")
    demo.add_argument("--partitions", type=int, default=0, help="only the last N partitions (default: all)")
    demo.set_defaults(func=cmd_demo)
    backfill = sub.add_parser("backfill", help="materialize a range of daily partitions, one run each")
    backfill.add_argument("start", help="first partition, YYYY-MM-DD")
    backfill.add_argument("end", help="last partition, YYYY-MM-DD (inclusive)")
    backfill.add_argument("--select", help="comma-separated asset keys (default: every asset)")
    backfill.set_defaults(func=cmd_backfill)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
