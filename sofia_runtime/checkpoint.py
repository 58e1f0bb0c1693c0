"""Signed anchors of a journal's head, kept outside the journal file: `<audit>/<runtime_id>/checkpoint.json`.

A hash chain shows a changed or removed record in the middle, not records cut from the end at a record boundary:
what is left is a shorter, intact chain. The runtime therefore writes, at day rotation, at stop and every
`CHECKPOINT_EVERY` durable records, the seq and hash of its last durable record, signed with HMAC-SHA256 under
the key in SOFIA_JOURNAL_KEY. A journal that ends before its checkpoint, or whose record at the checkpoint's seq
has another hash, has lost or changed records. Without a key (paper runs) the checkpoint is written unsigned and
says so; live trading needs the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

KEY_ENV = "SOFIA_JOURNAL_KEY"
CHECKPOINT_EVERY = 1000
FILE_NAME = "checkpoint.json"


class CheckpointError(ValueError):
    pass


@dataclass(frozen=True)
class Checkpoint:
    runtime_id: str
    seq: int
    hash: str
    ts: str
    signed: bool


def journal_key() -> bytes | None:
    key = os.environ.get(KEY_ENV, "")
    return key.encode() if key else None


def _mac(key: bytes, runtime_id: str, seq: int, head: str, ts: str) -> str:
    message = json.dumps([runtime_id, seq, head, ts], separators=(",", ":")).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def write_checkpoint(directory: Path, runtime_id: str, seq: int, head: str, key: bytes | None) -> None:
    """Atomically replace the runtime's checkpoint with (seq, head), durable before it is visible."""
    ts = datetime.now(timezone.utc).isoformat()
    body = {"runtime_id": runtime_id, "seq": seq, "hash": head, "ts": ts,
            "mac": _mac(key, runtime_id, seq, head, ts) if key else None}
    tmp = directory / f".{FILE_NAME}.{os.getpid()}.tmp"
    with tmp.open("w") as f:
        json.dump(body, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / FILE_NAME)


def read_checkpoint(directory: Path, key: bytes | None) -> Checkpoint | None:
    """The runtime's checkpoint, None when it has none yet. A checkpoint that cannot be read, or whose signature
    does not verify under `key`, raises CheckpointError naming the file."""
    path = directory / FILE_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
        runtime_id, seq, head, ts, mac = (data[k] for k in ("runtime_id", "seq", "hash", "ts", "mac"))
        if not (isinstance(runtime_id, str) and type(seq) is int and isinstance(head, str) and isinstance(ts, str)
                and (mac is None or isinstance(mac, str))):
            raise TypeError("runtime_id, seq, hash, ts or mac has the wrong type")
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: not a journal checkpoint: {exc}") from None
    if key is not None:
        if mac is None:
            raise CheckpointError(f"{path}: unsigned, but {KEY_ENV} is set: a checkpoint written without the key "
                                  "cannot vouch for the journal")
        # as bytes: compare_digest refuses str with non-ASCII characters, and a changed mac may have any
        if not hmac.compare_digest(mac.encode("utf-8", "surrogatepass"), _mac(key, runtime_id, seq, head, ts).encode()):
            raise CheckpointError(f"{path}: signature does not verify under {KEY_ENV} (changed, or another key)")
    return Checkpoint(runtime_id, seq, head, ts, signed=mac is not None)
