"""The audit journal: append-only JSON lines, hash-chained, durable before the action is acknowledged.

Each record is {seq, ts, runtime_id, kind, payload, prev_hash, hash} with hash = sha256 of the canonical JSON
(sorted keys, no spaces, UTF-8) of everything but `hash`. One file per runtime and UTC day,
`<audit>/<runtime_id>/<YYYY-MM-DD>.jsonl`; a new day's first record links to the previous day's last hash.
The head is anchored by a signed checkpoint beside the files (sofia_runtime.checkpoint), so a cut tail is found.
Money goes in payloads as Decimal, written as a string; a float in a payload is refused.
"""

from __future__ import annotations

import hashlib
import logging
import json

import orjson
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

from sofia_runtime.checkpoint import CHECKPOINT_EVERY, CheckpointError, journal_key, read_checkpoint, write_checkpoint

GENESIS = "0" * 64
log = logging.getLogger(__name__)


class JournalError(RuntimeError):
    pass


def _default(value):
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} cannot go in the journal")


def _refuse_floats(value, where="payload"):
    if isinstance(value, float):
        raise JournalError(f"{where} is a float ({value!r}); journal money as Decimal")
    if isinstance(value, dict):
        for k, v in value.items():
            _refuse_floats(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _refuse_floats(v, f"{where}[{i}]")


def decimal_str(value: float) -> str:
    """str(Decimal(repr(value))), without the Decimal where repr already is in Decimal's notation (no exponent,
    not nan or inf): the journal writes tens of these per decision."""
    text = repr(value)
    return text if "e" not in text and "n" not in text else str(Decimal(text))


def decimals(value):
    """`value` with every float as the Decimal string of its shortest repr (model figures going into the journal)."""
    t = type(value)
    if t is float:
        return decimal_str(value)
    if t is dict:
        return {k: (decimal_str(v) if type(v) is float else decimals(v) if type(v) in (dict, list, tuple) else v)
                for k, v in value.items()}
    if t is list or t is tuple:
        return [decimals(v) for v in value]
    return value


def canonical(record: dict) -> bytes:
    """Sorted keys, no spaces, UTF-8 (orjson's output is exactly json.dumps(sort_keys=True, separators=(",", ":"),
    ensure_ascii=False) for the types a journal holds, at a fraction of the cost)."""
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS, default=_default)


def record_hash(record: dict) -> str:
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


@dataclass(frozen=True)
class Problem:
    path: Path
    line: int
    seq: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} (seq {self.seq}): {self.message}"


def journal_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.jsonl"))


def last_record(paths: list[Path]) -> dict | None:
    """The last complete record of a runtime's files (in day order), without parsing the others; a torn last
    line is not one."""
    for path in reversed(paths):
        data = path.read_bytes()
        end = data.rfind(b"\n")
        if end >= 0:
            return json.loads(data[data.rfind(b"\n", 0, end) + 1:end])
    return None


def read_records(paths: Iterable[Path], in_progress: bool = False) -> Iterator[tuple[Path, int, dict]]:
    """(file, line number, record) for every complete line; a torn or unparsable line raises JournalError.
    With `in_progress` (a runtime may be writing the files) a last line without its newline is a record still
    being written and is left for the next read."""
    for path, number, _, record in _read_lines(paths, in_progress):
        yield path, number, record


def _read_lines(paths: Iterable[Path], in_progress: bool) -> Iterator[tuple[Path, int, bytes, dict]]:
    """(file, line number, the line's bytes without newline, record): what `read_records` reads."""
    for path in paths:
        with path.open("rb") as f:
            for number, raw in enumerate(f, start=1):
                if not raw.endswith(b"\n"):
                    if in_progress:
                        break
                    raise JournalError(f"{path}:{number}: torn last line ({len(raw)} bytes without newline)")
                try:
                    # decoded here: json.loads of bytes would guess UTF-16 or -32 and raise UnicodeDecodeError
                    record = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    raise JournalError(f"{path}:{number}: not UTF-8 text: {exc}") from None
                except json.JSONDecodeError as exc:
                    raise JournalError(f"{path}:{number}: not JSON: {exc}") from exc
                except RecursionError:
                    raise JournalError(f"{path}:{number}: not a journal record: JSON nested too deeply") from None
                if not isinstance(record, dict):
                    raise JournalError(f"{path}:{number}: not a journal record: a JSON {type(record).__name__}, "
                                       "not an object")
                yield path, number, raw[:-1], record


@dataclass(frozen=True)
class Anchor:
    """A (seq, hash) the journal must still hold, and who says so ("its checkpoint of <ts>", "the record
    ingested on <time>"): the records of an intact chain cut back at a record boundary are found by it."""
    seq: int
    hash: str
    said_by: str


def verify(paths: Iterable[Path], in_progress: bool = False, key: bytes | None = None,
           anchors: Mapping[str, Anchor] | None = None) -> Problem | None:
    """The first record that breaks the chain (a changed byte, a deleted or reordered record, a broken link
    across files, records cut from the end before the runtime's checkpoint or another anchor of `anchors`, by
    runtime id), or None when every chain is intact. Files are checked per runtime, in day order. `key` verifies
    the checkpoints' signatures (default: the key in SOFIA_JOURNAL_KEY)."""
    key = journal_key() if key is None else key
    by_runtime: dict[Path, list[Path]] = {}
    for p in sorted(paths):
        by_runtime.setdefault(p.parent, []).append(p)
    for directory, files in by_runtime.items():
        try:
            checkpoint = read_checkpoint(directory, key)
        except CheckpointError as exc:
            return Problem(directory / "checkpoint.json", 0, None, str(exc))
        held = [Anchor(checkpoint.seq, checkpoint.hash, f"its checkpoint of {checkpoint.ts}")] if checkpoint else []
        if anchors and directory.name in anchors:
            held.append(anchors[directory.name])
        problem = _verify_runtime(files, in_progress, held)
        if problem:
            return problem
    return None


def _verify_runtime(files: list[Path], in_progress: bool, anchors: list[Anchor]) -> Problem | None:
    prev_hash, expected_seq = GENESIS, 1
    last = (files[0], 0)
    found: dict[int, tuple[Path, int, str]] = {}  # anchor seq -> where the record is and its hash
    wanted = {a.seq for a in anchors}
    try:
        for path, line, raw, rec in _read_lines(files, in_progress):
            seq = rec.get("seq")
            try:
                expected_hash = record_hash(rec)
            except (TypeError, orjson.JSONEncodeError) as exc:  # e.g. an integer past 64 bits
                return Problem(path, line, None, f"not a journal record: {exc}")
            if rec.get("hash") != expected_hash:
                return Problem(path, line, seq, "hash does not match the record's content")
            # the hash covers the parsed record; the bytes must be its canonical form, as Journal writes it,
            # or a reformatted line (a space, a key twice) would pass as intact
            if raw != canonical(rec):
                return Problem(path, line, seq, "not in canonical form (a space, the key order or a key "
                                                "given twice changed): not the bytes the runtime wrote")
            if rec.get("prev_hash") != prev_hash:
                return Problem(path, line, seq, "prev_hash does not link to the previous record")
            if seq != expected_seq:
                return Problem(path, line, seq, f"seq {seq} where {expected_seq} was expected")
            if seq in wanted:
                found[seq] = (path, line, rec["hash"])
            prev_hash, expected_seq, last = rec["hash"], seq + 1, (path, line)
    except JournalError as exc:
        path, _, rest = str(exc).partition(":")
        line = int(rest.split(":")[0]) if rest.split(":")[0].isdigit() else 0
        return Problem(Path(path), line, None, str(exc))
    for anchor in anchors:
        if anchor.seq not in found:
            return Problem(last[0], last[1], expected_seq - 1,
                           f"the journal ends at seq {expected_seq - 1}, but {anchor.said_by} names seq "
                           f"{anchor.seq}: records were cut from the end")
        path, line, head = found[anchor.seq]
        if head != anchor.hash:
            return Problem(path, line, anchor.seq, f"the record at seq {anchor.seq} is not the one "
                                                   f"{anchor.said_by} names: the journal was changed")
    return None


class Journal:
    """Appends records for one runtime. `append` writes; `durable(record)` returns once that record is on
    disk. One fsync covers every record written before it (group commit), so a caller whose record an
    earlier fsync already covered does not pay for another."""

    def __init__(self, directory: Path, runtime_id: str, clock=time.time):
        self.dir = Path(directory) / runtime_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.runtime_id, self.clock = runtime_id, clock
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._checkpoint_lock = threading.Lock()
        self._closing = threading.Event()
        self._committer: threading.Thread | None = None
        self._file = None
        self._day: str | None = None
        self._written = self._synced = 0  # records written / made durable by this process
        self.fsyncs = 0
        self.recovered: list[str] = []
        self._base_seq = 0  # seq of the last record before this process wrote any
        self.seq, self.last_hash = 0, GENESIS
        self._key = journal_key()
        self._checkpoint_seq = 0
        self._resume()

    def _resume(self) -> None:
        files = journal_files(self.dir)
        if not files:
            return
        last = files[-1]
        data = last.read_bytes()
        cut = data.rfind(b"\n") + 1
        if cut < len(data):  # a torn last line: keep the intact prefix, move the torn bytes aside
            aside = last.with_name(f"{last.name}.torn-{int(self.clock() * 1000)}")
            aside.write_bytes(data[cut:])
            with last.open("r+b") as f:
                f.truncate(cut)
                os.fsync(f.fileno())
            self.recovered.append(f"{last}: {len(data) - cut} torn bytes moved to {aside.name}")
        problem = verify(files)
        if problem:
            raise JournalError(f"journal of {self.runtime_id} is broken, refusing to continue it: {problem}")
        last = last_record(files)
        if last is not None:
            self.seq, self.last_hash = last["seq"], last["hash"]
        self._base_seq = self._checkpoint_seq = self.seq
        for note in self.recovered:
            self.append("journal_recovered", {"detail": note})
        if self.recovered:
            self.sync()

    def _open_for(self, ts: float):
        day = datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d")
        if day != self._day:
            if self._file:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                self._checkpoint(self.seq, self.last_hash)  # every record so far is on disk: anchor the day's end
            self._file = (self.dir / f"{day}.jsonl").open("ab")
            self._day = day
        return self._file

    def append(self, kind: str, payload: dict, floats_to_decimal: bool = False) -> dict:
        """Write one record. A float in `payload` is refused, unless the caller says its floats are model figures
        to be written as the Decimal of their shortest repr (`floats_to_decimal`)."""
        if floats_to_decimal:
            payload = decimals(payload)
        else:
            _refuse_floats(payload)
        with self._lock:
            ts = self.clock()
            rec = {"seq": self.seq + 1, "ts": datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(),
                   "runtime_id": self.runtime_id, "kind": kind, "payload": payload, "prev_hash": self.last_hash}
            body = canonical(rec)
            rec["hash"] = hashlib.sha256(body).hexdigest()
            f = self._open_for(ts)
            # "hash" sorts before every other key: the canonical record is the body with it put first
            f.write(b'{"hash":"' + rec["hash"].encode() + b'",' + body[1:] + b"\n")
            self.seq, self.last_hash = rec["seq"], rec["hash"]
            self._written += 1
            return rec

    def sync(self) -> None:
        self._sync(None)

    def _sync(self, upto: int | None) -> None:
        """Make every record written so far durable, unless records up to `upto` already are. One fsync at a
        time; appends go on meanwhile (the fsync runs on a duplicate of the file's descriptor, outside the
        append lock), and a caller that waited for the running fsync often finds its record covered by it."""
        with self._sync_lock:
            with self._lock:
                if self._file is None or self._synced >= (self._written if upto is None else upto):
                    return
                target, head = self._written, (self.seq, self.last_hash)
                self._file.flush()
                fd = os.dup(self._file.fileno())  # the day's file may rotate (and close) during the fsync
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            with self._lock:
                self.fsyncs += 1
                self._synced = max(self._synced, target)
            if head[0] - self._checkpoint_seq >= CHECKPOINT_EVERY:
                self._checkpoint(*head)

    def start_group_commit(self, interval_s: float = 0.005) -> None:
        """Make what is written durable every `interval_s` from a thread of its own, so the fsync an order waits
        for finds little left to write."""
        def run() -> None:
            while not self._closing.wait(interval_s):
                try:
                    self._sync(None)
                except OSError as exc:  # the next durable() on the order path raises it where it matters
                    log.warning("journal %s: group commit failed: %s", self.runtime_id, exc)

        self._committer = threading.Thread(target=run, name=f"journal-commit-{self.runtime_id}", daemon=True)
        self._committer.start()

    @property
    def durable_seq(self) -> int:
        """The seq up to which every record of this journal is on disk."""
        return self._base_seq + self._synced

    def durable(self, record: dict) -> None:
        """Return once `record` (from this journal's `append`) is on disk."""
        self._sync(record["seq"] - self._base_seq)

    def append_durable(self, kind: str, payload: dict) -> dict:
        rec = self.append(kind, payload)
        self.durable(rec)
        return rec

    def _checkpoint(self, seq: int, head: str) -> None:
        """Anchor (seq, head), which must be durable already; never moves the anchor back."""
        with self._checkpoint_lock:
            if seq > self._checkpoint_seq:
                write_checkpoint(self.dir, self.runtime_id, seq, head, self._key)
                self._checkpoint_seq = seq

    def close(self) -> None:
        self._closing.set()
        if self._committer is not None:
            self._committer.join()
        self.sync()
        self._checkpoint(self.seq, self.last_hash)
        with self._lock:
            if self._file:
                self._file.close()
                self._file = None
