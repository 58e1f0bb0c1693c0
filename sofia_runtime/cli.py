"""`sofia-runtime`: the trading runtime's command line."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from sofia_runtime import checkpoint, liveness, paths


def cmd_verify_journal(args) -> int:
    from sofia_runtime.journal import verify

    files = [Path(p) for p in args.paths] or sorted(paths.audit_dir().glob("*/*.jsonl"))
    if not files:
        print(f"no journal files under {paths.audit_dir()}")
        return 1
    problem = verify(files)
    if problem:
        print(f"BROKEN: {problem}")
        return 1
    print(f"intact: {len(files)} file(s)")
    return 0


def cmd_pause(args) -> int:
    from sofia_runtime.control import write_pause

    state = write_pause(paths.pause_file(), args.by, args.reason)
    print(f"paused by {state.paused_by} at {state.ts}: {state.reason}")
    return 0


def cmd_resume(args) -> int:
    from sofia_runtime.control import clear_pause

    print("resumed" if clear_pause(paths.pause_file()) else "was not paused")
    return 0


def parse_duration(text: str) -> float:
    """"90", "90s", "10m", "2h" -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text and text[-1] in units:
            value = float(text[:-1]) * units[text[-1]]
        else:
            value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"duration {text!r}: use e.g. 90s, 10m, 2h") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"duration {text!r} must be positive")
    return value


def cmd_run(args) -> int:
    import asyncio

    from pydantic import ValidationError

    from sofia_runtime.config import load_config
    from sofia_runtime.auth import CONTROL_TOKEN_ENV, control_token
    from sofia_runtime.runner import RefusedToStart, run_runtime

    overrides = {"strategy": args.strategy, "mode": args.mode, "venue": args.venue, "duration_s": args.duration,
                 "speed": args.speed, "port": args.port, "runtime_id": args.runtime_id, "slot": args.slot,
                 "deployment": args.deployment, "source": args.source, "market_data": args.market_data}
    try:
        cfg = load_config(Path(args.config) if args.config else None, **overrides)
        if cfg.mode == "live" and args.mode != "live":  # live is asked for explicitly, never inherited
            raise RefusedToStart("live trading refused: --mode live is not on the command line (mode: live in the "
                                 "configuration file or SOFIA_RUNTIME_MODE is not enough)")
        if cfg.slot and control_token() is None:
            raise RefusedToStart(f"a blue-green slot takes its handover over HTTP: set {CONTROL_TOKEN_ENV} (the "
                                 "bearer token deploy sends) before starting slot " + cfg.slot)
        if cfg.mode == "live" and checkpoint.journal_key() is None:
            raise RefusedToStart(f"live trading refused: {checkpoint.KEY_ENV} is not set; live journals are anchored "
                                 "by checkpoints signed with it (see README, The audit journal)")
        if args.order:
            cfg.router.order = args.order
        return asyncio.run(run_runtime(cfg))
    except (RefusedToStart, ValidationError, FileNotFoundError, ValueError) as exc:
        print(f"sofia-runtime: {exc}", file=sys.stderr)
        return 2


def cmd_status(args) -> int:
    import json
    import urllib.error
    import urllib.request

    from rich.console import Console
    from rich.table import Table

    console = Console()
    files = sorted((paths.data_dir() / "run").glob(f"{args.runtime_id or '*'}.json"))
    if not files:
        console.print(f"no runtime is running (nothing in {paths.data_dir() / 'run'})")
        return 1
    code = 0
    for f in files:
        info = json.loads(f.read_text())
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{info['port']}/api/dev/status", timeout=3) as resp:
                st = json.load(resp)
        except (urllib.error.URLError, OSError) as exc:
            console.print(f"[red]{info['runtime_id']}[/red] (pid {info['pid']}, port {info['port']}): not answering: {exc}")
            code = 1
            continue
        if args.json:
            print(json.dumps(st, indent=2))
            continue
        paused = f"[red]PAUSED[/red] {st['pause_reason']}" if st["paused"] else "[green]trading[/green]"
        console.print(f"[bold]{st['runtime_id']}[/bold] {st['strategy']} {st['mode']} - {paused} - snapshot "
                      f"{st['snapshot_id']} - market data {st.get('market_data')} - market time {st['market_time']} - "
                      f"up {st['uptime_s']:.0f} s")
        pnl = st["pnl"]
        console.print(f"  P&L net {pnl['net_usd']:.2f} USD (gross {pnl['gross_usd']:.2f}, fees {pnl['fees_usd']:.2f}, "
                      f"today {pnl['today_usd']:.2f})   " + ", ".join(f"{k} {v}" for k, v in st["counters"].items()))
        for title, rows in (("positions", st["positions"]), ("open orders", st["open_orders"])):
            if rows:
                table = Table(title=title)
                for col in rows[0]:
                    table.add_column(col)
                for row in rows:
                    table.add_row(*(str(v) for v in row.values()))
                console.print(table)
    return code


def _slot_run_args(args) -> list[str]:
    out = ["--strategy", args.strategy, "--port", "0"]
    for flag, value in (("--speed", args.speed), ("--config", args.config), ("--mode", args.mode),
                        ("--venue", args.venue), ("--order", args.order)):
        if value is not None:
            out += [flag, str(value)]
    return out


def _print_handover(h) -> None:
    gap = f"{h.gap_s * 1000:.0f} ms" if h.gap_s is not None else "n/a (no decision on one side yet)"
    print(f"{h.deployment}: {h.from_slot or 'nobody'} -> {h.to_slot} (fencing token {h.token}); "
          f"gap between the last decision of {h.from_slot} and the first of {h.to_slot}: {gap}; "
          f"trading intervals overlap: {'YES' if h.overlap else 'no'}")


def cmd_deploy(args) -> int:
    from sofia_runtime import deploy

    deployment = args.deployment or args.strategy
    if args.status:
        import json

        print(json.dumps(deploy.status(deployment), indent=2))
        return 0
    if args.command == "rollback":
        try:
            to = deploy.rollback_target(deployment)
        except deploy.DeployError as exc:
            print(f"sofia-runtime: {exc}", file=sys.stderr)
            return 2
    else:
        if not args.to:
            print("sofia-runtime: deploy needs --to blue|green (or --status)", file=sys.stderr)
            return 2
        to = args.to
    try:
        handover = deploy.deploy(deployment, to, _slot_run_args(args), health_timeout=args.health_timeout,
                                 confirm_s=args.confirm)
    except deploy.DeployError as exc:
        print(f"sofia-runtime: {exc}", file=sys.stderr)
        return 1
    _print_handover(handover)
    return 1 if handover.overlap else 0


def cmd_chaos(args) -> int:
    from sofia_runtime.chaos import DrillOptions, run_drill

    return run_drill(DrillOptions(scenario=args.scenario, duration_s=args.duration, strategy=args.strategy,
                                  speed=args.speed, mode=args.mode, venue=args.venue, venue_url=args.venue_url,
                                  order=args.order, config=Path(args.config) if args.config else None, seed=args.seed))


def cmd_stop(args) -> int:
    """SIGTERM to a running runtime (it cancels resting orders, journals `stop` and exits), then wait for it."""
    import json
    import os
    import signal
    import time

    files = sorted((paths.data_dir() / "run").glob(f"{args.runtime_id or '*'}.json"))
    if not files:
        print(f"no runtime is running (nothing in {paths.data_dir() / 'run'})")
        return 1
    pids = {}
    for f in files:
        try:
            info = json.loads(f.read_text())
            rid, pid = str(info["runtime_id"]), int(info["pid"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"{f}: not a run file ({exc}); nothing signalled")
            continue
        # a run file outlives a killed runtime and its pid may since be another process's: signal it only while
        # the runtime's lock is held and the pid is a sofia-runtime process
        holder = liveness.lock_holder(rid)
        if holder is None:
            print(f"{rid}: not running (its lock is free); {f.name} was left by a runtime that died: removed")
            f.unlink(missing_ok=True)
            continue
        if holder != pid or not liveness.is_runtime_process(pid):
            print(f"{rid}: pid {pid} of {f.name} is not the process holding the runtime's lock (pid {holder}); "
                  "nothing signalled")
            continue
        try:
            os.kill(pid, signal.SIGTERM)
            pids[rid] = (pid, f)
        except ProcessLookupError:
            print(f"{rid}: pid {pid} is not running (stale {f.name})")
    deadline = time.monotonic() + args.timeout
    while pids and time.monotonic() < deadline:
        for rid, (pid, run_file) in list(pids.items()):
            # the runtime removes its run file as the last thing it does (a finished child may linger unreaped)
            if not run_file.exists():
                print(f"{rid}: stopped")
                del pids[rid]
        time.sleep(0.05)
    for rid, (pid, _) in pids.items():
        print(f"{rid}: pid {pid} still running after {args.timeout:g} s")
    return 1 if pids else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sofia-runtime", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="trade a strategy on the CURRENT serving snapshot")
    run.add_argument("--strategy", choices=["mm_lite", "funding_farmer", "router"])
    run.add_argument("--mode", choices=["paper", "live"], help="paper (default) or live")
    run.add_argument("--venue", help="live: the ccxt exchange id; paper: trade on this venue only")
    run.add_argument("--duration", type=parse_duration, help="stop after this wall time (90s, 10m, 2h)")
    run.add_argument("--speed", type=float, help="replay speed, market seconds per second; 0 = as fast as possible")
    run.add_argument("--source", choices=["replay", "simulator"],
                     help="paper market data: the snapshot's day replayed (default) or the simulator in real time")
    run.add_argument("--market-data", choices=["auto", "websocket", "polling"],
                     help="live market data: the venue's websocket stream where ccxt has one, polling the REST order "
                          "book while it is down (auto, default); or only one of them")
    run.add_argument("--port", type=int, help="health and metrics port (default 8000; 0 = any free port)")
    run.add_argument("--order", help='router: the parent order, e.g. "buy 0.5 BTC/USDT"')
    run.add_argument("--runtime-id", help="journal and lock name (default <strategy>-<mode>)")
    run.add_argument("--config", help="YAML configuration (default <data>/runtime.yaml when present)")
    run.add_argument("--slot", choices=["blue", "green"], help="a blue-green slot: trades only while it holds the "
                                                                "deployment's lease, waits as standby otherwise")
    run.add_argument("--deployment", help="the blue-green pair's name (default: the strategy)")
    run.set_defaults(func=cmd_run)
    for name, help_text in (("deploy", "start the standby slot, wait for its health, hand over to it"),
                            ("rollback", "hand back to the other slot, the same way")):
        d = sub.add_parser(name, help=help_text)
        if name == "deploy":
            d.add_argument("--to", choices=["blue", "green"])
            d.add_argument("--status", action="store_true", help="print the lease and both slots' health")
        d.set_defaults(status=False, to=None)
        d.add_argument("--strategy", choices=["mm_lite", "funding_farmer", "router"], default="mm_lite")
        d.add_argument("--deployment", help="the pair's name (default: the strategy)")
        d.add_argument("--speed", type=float)
        d.add_argument("--config")
        d.add_argument("--mode", choices=["paper", "live"])
        d.add_argument("--venue")
        d.add_argument("--order")
        d.add_argument("--health-timeout", type=float, default=30.0)
        d.add_argument("--confirm", type=float, default=10.0, help="seconds the new slot must hold the lease and "
                                                                  "stay healthy before the deploy counts as done; "
                                                                  "if it fails, the old slot takes the lease back")
        d.set_defaults(func=cmd_deploy)
    status = sub.add_parser("status", help="what each running runtime's /api/dev/status says")
    status.add_argument("--runtime-id")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    stop = sub.add_parser("stop", help="stop running runtimes cleanly (SIGTERM) and wait for them")
    stop.add_argument("--runtime-id", help="default: every running runtime")
    stop.add_argument("--timeout", type=float, default=30.0)
    stop.set_defaults(func=cmd_stop)
    verify = sub.add_parser("verify-journal", help="exit 0 when every chain is intact, else name the first bad record")
    verify.add_argument("paths", nargs="*", help="journal files (default: every file under <data>/audit)")
    verify.set_defaults(func=cmd_verify_journal)
    pause = sub.add_parser("pause", help="stop new orders and cancel resting maker orders")
    pause.add_argument("--reason", required=True)
    pause.add_argument("--by", default=getpass.getuser())
    pause.set_defaults(func=cmd_pause)
    resume = sub.add_parser("resume", help="clear the pause control file")
    resume.set_defaults(func=cmd_resume)
    chaos = sub.add_parser("chaos", help="run the runtime through injected faults and judge what it did")
    chaos.add_argument("--scenario", default="all", help="latency, timeouts, http_5xx, dropped_after_send, "
                                                         "rate_limits, stale_data, kill_restart, refused (live) or all")
    chaos.add_argument("--duration", type=parse_duration, default=20.0, help="wall time per scenario (default 20s)")
    chaos.add_argument("--strategy", choices=["mm_lite", "funding_farmer", "router"],
                       help="default mm_lite (paper), router (live)")
    chaos.add_argument("--speed", type=float, help="replay speed (market seconds per second, 0 = full speed)")
    chaos.add_argument("--mode", choices=["paper", "live"], default="paper")
    chaos.add_argument("--venue", help="live: the ccxt exchange id; paper: trade on this venue only")
    chaos.add_argument("--venue-url", help="live: the venue's http:// URL; the chaos proxy relays to it")
    chaos.add_argument("--order", help='router: the parent order, e.g. "buy 0.01 BTC/USDT"')
    chaos.add_argument("--config", help="your runtime YAML (default <data>/runtime.yaml); live needs allow_live in it")
    chaos.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    chaos.set_defaults(func=cmd_chaos)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
