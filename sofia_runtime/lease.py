"""The trading lease of a blue-green pair (feature L): exactly one slot may send orders.

Two things together:
- an OS file lock on `<control>/<deployment>.lease.lock`, held for as long as the slot trades; the kernel
  drops it when the process dies, so a crashed active slot never blocks its standby;
- a lease record `<control>/<deployment>.lease.json` {deployment, slot, runtime_id, pid, token, acquired_at,
  released_at}, rewritten atomically by each new holder with a fencing token one higher than the last.

The order path calls `check()` before every order: it refuses when the record's token is not this holder's
(a newer holder exists: this process is a zombie that lost its lock) or when the lock is not held.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path


@dataclass(frozen=True)
class LeaseRecord:
    deployment: str
    slot: str
    runtime_id: str
    pid: int
    token: int
    acquired_at: str
    released_at: str | None = None


def read_lease(path: Path) -> LeaseRecord | None:
    try:
        return LeaseRecord(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise ValueError(f"lease record {path} is unreadable: {exc}") from exc


def _write_atomic(path: Path, record: LeaseRecord) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as f:
        json.dump(asdict(record), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class TradingLease:
    def __init__(self, control_dir: Path, deployment: str, slot: str, runtime_id: str):
        control_dir.mkdir(parents=True, exist_ok=True)
        self.lock_path = control_dir / f"{deployment}.lease.lock"
        self.record_path = control_dir / f"{deployment}.lease.json"
        self.deployment, self.slot, self.runtime_id = deployment, slot, runtime_id
        self.fd: int | None = None
        self.token: int | None = None
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) of the record when last checked

    def try_acquire(self) -> bool:
        """Take the lease when no other process holds it; the new fencing token is one above the last."""
        if self.token is not None:
            return True
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        previous = read_lease(self.record_path)
        token = (previous.token if previous else 0) + 1
        _write_atomic(self.record_path, LeaseRecord(self.deployment, self.slot, self.runtime_id, os.getpid(), token,
                                                    datetime.now(timezone.utc).isoformat()))
        self.fd, self.token, self._seen = fd, token, None
        return True

    def check(self) -> str | None:
        """None when this process may send an order now, else why not."""
        if self.token is None or self.fd is None:
            return f"slot {self.slot} does not hold the trading lease of {self.deployment}"
        stat = os.stat(self.record_path)
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen != self._seen:  # re-read only when the record changed
            record = read_lease(self.record_path)
            if record is None or record.token != self.token:
                return (f"stale fencing token {self.token}: the lease of {self.deployment} is now held by "
                        f"{record.slot if record else 'nobody'} with token {record.token if record else '-'}")
            self._seen = seen
        return None

    def release(self) -> None:
        if self.token is None:
            return
        record = read_lease(self.record_path)
        if record is not None and record.token == self.token:
            _write_atomic(self.record_path, LeaseRecord(**{**asdict(record),
                                                           "released_at": datetime.now(timezone.utc).isoformat()}))
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd, self.token = None, None
