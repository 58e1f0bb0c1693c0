"""The pause control file `<data>/control/pause.json`: who paused, why, when. Written atomically; a file
that cannot be read counts as paused, since trading on an unknown state is the worse mistake."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path


@dataclass(frozen=True)
class PauseState:
    paused: bool
    paused_by: str = ""
    reason: str = ""
    ts: str = ""


def read_pause(path: Path) -> PauseState:
    if not path.exists():
        return PauseState(False)
    try:
        data = json.loads(path.read_text())
        return PauseState(True, str(data["paused_by"]), str(data["reason"]), str(data["ts"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return PauseState(True, "unknown", f"unreadable control file {path}: {exc}", "")


def write_pause(path: Path, paused_by: str, reason: str) -> PauseState:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = PauseState(True, paused_by, reason, datetime.now(timezone.utc).isoformat())
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state.__dict__))
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return state


def clear_pause(path: Path) -> bool:
    """Resume: remove the control file; False when it was not paused."""
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False
