"""The serving snapshot: the tables the runtime trades on, handed over as files.

    <serving>/<snapshot_id>/<table>.parquet   one per runtime-facing table
    <serving>/<snapshot_id>/manifest.json     snapshot_id, created_at, partition, per table rows/sha256/columns
    <serving>/CURRENT                         the live snapshot id, switched by atomic rename

A reader validates the manifest, every table's hash, row count and schema, and the snapshot's age before
trading on it; `SnapshotWatcher` keeps the last good snapshot when a new CURRENT is bad. The replay's books and
trades (most of the bytes, read once to build the replay) are validated like the rest but stay in their files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from sofia_runtime.schemas import REPLAY_TABLES, SERVING_TABLES
from sofia_runtime.tradable import Readiness, snapshot_readiness

ALL_TABLES = {**SERVING_TABLES, **REPLAY_TABLES}
ON_DISK = ("replay_books", "replay_trades")  # read when asked for, not held by a loaded snapshot


class SnapshotError(RuntimeError):
    """A snapshot that must not be traded on; the message says which table and what is wrong."""


CLOCK_TOLERANCE = timedelta(minutes=5)  # a manifest created later than now + this was not made by this clock


class TableEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: int = Field(ge=0, strict=True)  # not `true`, not "3"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    columns: list[str]


class Manifest(BaseModel):
    """manifest.json as the pipelines write it."""
    model_config = ConfigDict(extra="forbid")
    snapshot_id: str = Field(min_length=1, pattern=r"^[^/\\]+$")
    created_at: AwareDatetime
    partition: str = Field(min_length=1)
    tables: dict[str, TableEntry]

    @field_validator("created_at", mode="before")
    @classmethod
    def _iso_text(cls, value):
        if not isinstance(value, str):
            raise ValueError("must be an ISO 8601 time with its zone, as text")
        # parsed as the snapshot's readers parse it (Snapshot.created_at): pydantic alone would also take
        # "1700000000" (epoch seconds) that fromisoformat then refuses
        return datetime.fromisoformat(value)


def read_manifest(path: Path, now: datetime | None = None) -> dict:
    """The snapshot folder's manifest, validated: every field present with its type, a time zone on created_at
    and no creation time in the future, the id naming its folder. Raises SnapshotError ("snapshot refused: …")."""
    manifest_path = path / "manifest.json"
    try:
        raw = json.loads(manifest_path.read_bytes())
    except RecursionError:
        raise SnapshotError(f"snapshot refused: {manifest_path}: JSON nested too deeply") from None
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"snapshot refused: {manifest_path}: unreadable manifest: {exc}") from exc
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'manifest'}: {e['msg']}" for e in exc.errors())
        raise SnapshotError(f"snapshot refused: {manifest_path}: {problems}") from None
    now = now or datetime.now(timezone.utc)
    if manifest.created_at > now + CLOCK_TOLERANCE:
        raise SnapshotError(f"snapshot refused: {manifest_path}: created_at {manifest.created_at.isoformat()} is in "
                            f"the future (now {now.isoformat(timespec='seconds')})")
    if manifest.snapshot_id != path.name:
        raise SnapshotError(f"snapshot refused: {manifest_path}: snapshot_id {manifest.snapshot_id!r} is not its "
                            f"folder's name {path.name!r}")
    return raw


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_snapshot_folder(tables: dict[str, pl.DataFrame], partition: str, serving_dir: Path) -> str:
    """Write every runtime-facing table and the manifest into `<serving>/<snapshot_id>/` (staged, then renamed
    whole); CURRENT is not touched. Returns the snapshot id."""
    missing = sorted(set(ALL_TABLES) - set(tables))
    if missing:
        raise SnapshotError(f"snapshot for {partition} lacks table(s) {missing}")
    created = datetime.now(timezone.utc)
    snapshot_id = f"{created:%Y%m%dT%H%M%S}-{partition}-{uuid.uuid4().hex[:6]}"
    staging = serving_dir / f".{snapshot_id}.tmp"
    staging.mkdir(parents=True)
    manifest = {"snapshot_id": snapshot_id, "created_at": created.isoformat(), "partition": partition, "tables": {}}
    for name, schema in ALL_TABLES.items():
        df = schema.conform(tables[name], f"snapshot table {name}")
        path = staging / f"{name}.parquet"
        df.write_parquet(path)
        manifest["tables"][name] = {"rows": df.height, "sha256": _sha256(path), "columns": list(df.columns)}
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
    for path in staging.iterdir():
        with path.open("rb") as f:
            os.fsync(f.fileno())
    staging.rename(serving_dir / snapshot_id)
    _fsync_dir(serving_dir)
    return snapshot_id


def validate_snapshot(serving_dir: Path, snapshot_id: str, reasons: dict[str, str] | None = None
                      ) -> tuple[Snapshot, Readiness]:
    """Read a written snapshot back as the runtime will (manifest, hashes, rows, schema) and judge whether it can
    be traded on (sofia_runtime.tradable); SnapshotError when it cannot be read."""
    snapshot = load_snapshot(serving_dir / snapshot_id)
    return snapshot, snapshot_readiness(snapshot.tables, reasons)


def switch_current(serving_dir: Path, snapshot_id: str, keep: int = 5) -> None:
    """CURRENT names `snapshot_id` from now on (atomic rename); prune to the last `keep` snapshots."""
    pointer = serving_dir / f".CURRENT.{snapshot_id}"
    pointer.write_text(snapshot_id + "\n")
    os.replace(pointer, serving_dir / "CURRENT")
    _fsync_dir(serving_dir)
    _prune(serving_dir, keep, snapshot_id)


def write_snapshot(tables: dict[str, pl.DataFrame], partition: str, serving_dir: Path, keep: int = 5) -> str:
    """Write the snapshot, validate it, and only then switch CURRENT to it. A snapshot that fails validation or
    has nothing the runtime could trade stays on disk for inspection, CURRENT unchanged, and SnapshotError says
    why."""
    snapshot_id = write_snapshot_folder(tables, partition, serving_dir)
    _, readiness = validate_snapshot(serving_dir, snapshot_id)
    if not readiness.ok:
        raise SnapshotError(f"snapshot {snapshot_id} refused, CURRENT left as it was: " + "; ".join(readiness.refusals))
    switch_current(serving_dir, snapshot_id, keep)
    return snapshot_id


def _prune(serving_dir: Path, keep: int, current: str) -> None:
    snapshots = sorted(p for p in serving_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    for old in snapshots[:-keep] if keep > 0 else []:
        if old.name != current:
            shutil.rmtree(old, ignore_errors=True)


class SnapshotTables(Mapping[str, pl.DataFrame]):
    """A loaded snapshot's tables: most in memory; those in `files` read from their (validated) file on each
    access, so nothing holds them once the caller lets go. Read them while the snapshot is recent: pruning
    removes a snapshot's folder once `keep` newer ones are published."""

    def __init__(self, frames: dict[str, pl.DataFrame], files: dict[str, Path]):
        self.frames, self.files = frames, files

    def __getitem__(self, name: str) -> pl.DataFrame:
        if name in self.files:
            return pl.read_parquet(self.files[name])
        return self.frames[name]

    def __contains__(self, name: object) -> bool:  # without reading the file, as Mapping's would
        return name in self.frames or name in self.files

    def __iter__(self) -> Iterator[str]:
        return (name for name in ALL_TABLES if name in self)

    def __len__(self) -> int:
        return len(self.frames) + len(self.files)

    def scan(self, name: str) -> pl.LazyFrame:
        return pl.scan_parquet(self.files[name]) if name in self.files else self.frames[name].lazy()


@dataclass(frozen=True)
class Snapshot:
    snapshot_id: str
    path: Path
    manifest: dict
    tables: Mapping[str, pl.DataFrame]

    @property
    def created_at(self) -> datetime:
        return datetime.fromisoformat(self.manifest["created_at"])

    def scan(self, name: str) -> pl.LazyFrame:
        """A table as a lazy frame: from its file when the snapshot left it there (only what the query needs is
        read), else from memory."""
        if isinstance(self.tables, SnapshotTables):
            return self.tables.scan(name)
        return self.tables[name].lazy()


def current_id(serving_dir: Path) -> str:
    pointer = serving_dir / "CURRENT"
    if not pointer.exists():
        raise SnapshotError(f"no snapshot published: {pointer} does not exist (materialize serving_snapshot)")
    try:
        snapshot_id = pointer.read_bytes().decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"snapshot refused: {pointer}: unreadable: {exc}") from None
    # a folder of the serving directory, nothing else: "/etc" or "../x" would point the runtime anywhere
    if not snapshot_id or snapshot_id.startswith(".") or any(c in snapshot_id for c in "/\\\0\n"):
        raise SnapshotError(f"snapshot refused: {pointer} names {snapshot_id[:80]!r}, not a snapshot folder")
    return snapshot_id


def load_snapshot(path: Path, max_age: timedelta | None = None, now: datetime | None = None) -> Snapshot:
    manifest = read_manifest(path, now)
    if max_age is not None:
        age = (now or datetime.now(timezone.utc)) - datetime.fromisoformat(manifest["created_at"])
        if age > max_age:
            raise SnapshotError(f"snapshot {manifest['snapshot_id']} is stale: created {age} ago, limit {max_age}")
    frames, files = {}, {}
    for name, schema in ALL_TABLES.items():
        entry = manifest["tables"].get(name)
        if entry is None:
            raise SnapshotError(f"snapshot {manifest['snapshot_id']}: table {name} missing from the manifest")
        file = path / f"{name}.parquet"
        if not file.exists():
            raise SnapshotError(f"snapshot {manifest['snapshot_id']}: {file} is missing")
        if _sha256(file) != entry["sha256"]:
            raise SnapshotError(f"snapshot {manifest['snapshot_id']}: {name}.parquet does not match its sha256 "
                                f"in the manifest (truncated or changed)")
        try:
            if name in ON_DISK:  # rows and schema from the file's footer
                scan = pl.scan_parquet(file)
                df_schema, height = scan.collect_schema(), scan.select(pl.len()).collect().item()
            else:
                df = pl.read_parquet(file)
                df_schema, height = df.schema, df.height
        except Exception as exc:
            raise SnapshotError(f"snapshot {manifest['snapshot_id']}: {name}.parquet unreadable: {exc}") from exc
        if height != entry["rows"]:
            raise SnapshotError(f"snapshot {manifest['snapshot_id']}: {name} has {height} rows, "
                                f"manifest says {entry['rows']}")
        if df_schema != schema.polars_schema:
            raise SnapshotError(f"snapshot {manifest['snapshot_id']}: {name} schema {dict(df_schema)} is not "
                                f"{dict(schema.polars_schema)}")
        if entry["columns"] != list(df_schema):  # a manifest that misdescribes its file is not the one written
            raise SnapshotError(f"snapshot {manifest['snapshot_id']}: {name} has columns {list(df_schema)}, "
                                f"manifest says {entry['columns']}")
        if name in ON_DISK:
            files[name] = file
        else:
            frames[name] = df
    return Snapshot(manifest["snapshot_id"], path, manifest, SnapshotTables(frames, files))


def load_current(serving_dir: Path, max_age: timedelta | None = None) -> Snapshot:
    return load_snapshot(serving_dir / current_id(serving_dir), max_age)


class SnapshotWatcher:
    """Follows CURRENT; a new snapshot replaces the held one only when it validates."""

    def __init__(self, serving_dir: Path, max_age: timedelta | None = None):
        self.serving_dir, self.max_age = serving_dir, max_age
        self.snapshot: Snapshot | None = None
        self.last_error: str | None = None

    def poll(self) -> Snapshot | None:
        try:
            sid = current_id(self.serving_dir)
            if self.snapshot is None or sid != self.snapshot.snapshot_id:
                snapshot = load_snapshot(self.serving_dir / sid, self.max_age)
                readiness = snapshot_readiness(snapshot.tables)
                if not readiness.ok:
                    raise SnapshotError(f"snapshot {sid} has nothing to trade: " + "; ".join(readiness.refusals))
                self.snapshot = snapshot
            self.last_error = None
        except SnapshotError as exc:
            self.last_error = str(exc)
        return self.snapshot
