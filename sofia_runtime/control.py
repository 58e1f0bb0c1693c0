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


MAX_CONTROL_BYTES = 64 * 1024  # a pause record is a few hundred bytes; more is not a pause record


def read_pause(path: Path) -> PauseState:
    """The control file's state. Whatever cannot be read as a pause record (not JSON, not an object, missing
    fields, too large, nested past the parser's depth, unreadable) is a pause: this function never raises."""
    try:
        if not path.exists():
            return PauseState(False)
        with path.open("rb") as f:
            raw = f.read(MAX_CONTROL_BYTES + 1)
        if len(raw) > MAX_CONTROL_BYTES:
            raise ValueError(f"larger than {MAX_CONTROL_BYTES} bytes")
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        fields = [data[k] for k in ("paused_by", "reason", "ts")]
        if not all(isinstance(v, str) for v in fields):
            raise ValueError("paused_by, reason and ts must be strings")
        return PauseState(True, *fields)
    except Exception as exc:  # noqa: BLE001 - RecursionError, MemoryError, OSError …: all mean paused
        detail = "nested too deeply" if isinstance(exc, RecursionError) else f"{type(exc).__name__}: {exc}"
        return PauseState(True, "unknown", f"unreadable control file {path}: {detail}"[:500], "")


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
