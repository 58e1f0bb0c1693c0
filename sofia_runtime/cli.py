"""`sofia-runtime`: the trading runtime's command line."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from sofia_runtime import paths


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sofia-runtime", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify-journal", help="exit 0 when every chain is intact, else name the first bad record")
    verify.add_argument("paths", nargs="*", help="journal files (default: every file under <data>/audit)")
    verify.set_defaults(func=cmd_verify_journal)
    pause = sub.add_parser("pause", help="stop new orders and cancel resting maker orders")
    pause.add_argument("--reason", required=True)
    pause.add_argument("--by", default=getpass.getuser())
    pause.set_defaults(func=cmd_pause)
    resume = sub.add_parser("resume", help="clear the pause control file")
    resume.set_defaults(func=cmd_resume)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
