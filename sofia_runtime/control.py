"""The pause control file `<data>/control/pause.json`: who paused, why, when. Written atomically; a file
that cannot be read counts as paused, since trading on an unknown state is the worse mistake."""

from __future__ import annotations

import json
import os
import threading
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
    """Pause (or replace the pause's reason), atomically."""
    state, tmp = _staged(path, paused_by, reason)
    os.replace(tmp, path)
    return state


def pause_unless_paused(path: Path, paused_by: str, reason: str) -> PauseState | None:
    """Pause unless trading is paused already, in one atomic step: a pause written meanwhile by someone else (an
    operator) is never overwritten. Returns the new state, or None when it was paused."""
    state, tmp = _staged(path, paused_by, reason)
    try:
        os.link(tmp, path)  # fails when the file exists, where a check then a write would race
    except FileExistsError:
        return None
    finally:
        tmp.unlink()
    return state


def _staged(path: Path, paused_by: str, reason: str) -> tuple[PauseState, Path]:
    """The pause state, and a durable file next to `path` holding it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = PauseState(True, paused_by, reason, datetime.now(timezone.utc).isoformat())
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(state.__dict__))
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    return state, tmp


def clear_pause(path: Path) -> bool:
    """Resume: remove the control file; False when it was not paused."""
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False
