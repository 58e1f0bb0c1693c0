"""Whether a runtime named by a run file is alive: its OS lock (`<data>/run/<id>.lock`, held by the running
process, which writes its pid into it) and the pid's command line. A run file alone proves nothing: it outlives a
runtime killed with SIGKILL, and its pid may by now belong to any process."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sofia_runtime import paths


def lock_path(runtime_id: str) -> Path:
    return paths.data_dir() / "run" / f"{runtime_id}.lock"


def running_runtimes() -> list[str]:
    """The ids of the runtimes whose lock is held: the ones running on this data folder."""
    locks = sorted((paths.data_dir() / "run").glob("*.lock"))
    return [lock.stem for lock in locks if lock_holder(lock.stem) is not None]


def lock_holder(runtime_id: str) -> int | None:
    """The pid written by the process holding the runtime's lock, or None when nobody holds it."""
    try:
        fd = os.open(lock_path(runtime_id), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 64, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else -1  # held, by a process that has not written its pid yet
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def is_runtime_process(pid: int) -> bool:
    """The pid runs sofia-runtime (its command line says so)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"sofia-runtime" in cmdline or b"sofia_runtime" in cmdline
