"""The audit journal's chain: intact when written, every tampering found with its position, torn tails kept
aside on restart, rotation across days continuing the chain."""

import json
import time
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from sofia_runtime.journal import Journal, JournalError, journal_files, read_records, verify


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        self.t += 0.001
        return self.t


def _journal(tmp_path, n=6, clock=None):
    j = Journal(tmp_path, "mm_lite-paper", clock=clock or Clock(datetime(2026, 10, 31, 12, tzinfo=timezone.utc).timestamp()))
    for i in range(n):
        j.append_durable("order", {"client_order_id": f"c{i}", "price": Decimal("68000.10"), "amount": Decimal("0.01")})
    j.close()
    return journal_files(tmp_path / "mm_lite-paper")


def test_written_chain_verifies_and_money_is_decimal_strings(tmp_path):
    files = _journal(tmp_path)
    assert verify(files) is None
    records = [r for _, _, r in read_records(files)]
    assert [r["seq"] for r in records] == list(range(1, 7))
    assert records[0]["payload"]["price"] == "68000.10"
    with pytest.raises(JournalError, match="payload.price is a float"):
        Journal(tmp_path, "x").append("order", {"price": 1.5})


@pytest.mark.parametrize("tamper, line", [("byte", 3), ("delete", 4), ("reorder", 2)])
def test_tampering_is_found_with_its_position(tmp_path, tamper, line):
    (path,) = _journal(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    if tamper == "byte":
        lines[2] = lines[2].replace(b"68000.10", b"68000.11")
    elif tamper == "delete":
        del lines[3]
    else:
        lines[1], lines[2] = lines[2], lines[1]
    path.write_bytes(b"".join(lines))
    problem = verify([path])
    assert problem is not None and problem.path == path and problem.line == line


def test_rotation_across_midnight_continues_the_chain(tmp_path):
    clock = Clock(datetime(2026, 10, 31, 23, 59, 59, 998000, tzinfo=timezone.utc).timestamp())
    files = _journal(tmp_path, n=4, clock=clock)
    assert [f.name for f in files] == ["2026-10-31.jsonl", "2026-11-01.jsonl"]
    assert verify(files) is None
    first_of_day = next(read_records([files[1]]))[2]
    last_of_prev = list(read_records([files[0]]))[-1][2]
    assert first_of_day["prev_hash"] == last_of_prev["hash"]
    files[0].unlink()
    assert verify(files[1:]) is not None  # the new day's first record points at a record that is gone


def test_torn_last_line_is_moved_aside_and_journaled_on_restart(tmp_path):
    (path,) = _journal(tmp_path)
    with path.open("ab") as f:
        f.write(b'{"seq": 7, "ts": "2026-10-31T12:00:01", "kin')
    with pytest.raises(JournalError, match="torn last line"):
        list(read_records([path]))
    j = Journal(tmp_path, "mm_lite-paper")
    j.append_durable("start", {})
    j.close()
    records = [r for _, _, r in read_records(journal_files(tmp_path / "mm_lite-paper"))]
    assert [r["kind"] for r in records[-2:]] == ["journal_recovered", "start"]
    assert records[-2]["seq"] == 7 and "torn bytes moved" in records[-2]["payload"]["detail"]
    aside = list((tmp_path / "mm_lite-paper").glob("*.torn-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b'{"seq": 7')
    assert verify(journal_files(tmp_path / "mm_lite-paper")) is None


def test_a_broken_journal_is_not_continued(tmp_path):
    (path,) = _journal(tmp_path)
    path.write_bytes(path.read_bytes().replace(b'"c2"', b'"c9"'))
    with pytest.raises(JournalError, match="refusing to continue"):
        Journal(tmp_path, "mm_lite-paper")


def test_one_fsync_covers_every_record_written_before_it(tmp_path):
    j = Journal(tmp_path, "r")
    recs = [j.append("decision", {"i": i}) for i in range(50)]
    j.durable(recs[-1])
    for r in recs:
        j.durable(r)
    assert j.fsyncs == 1
    j.close()


def test_group_commit_makes_records_durable_within_its_interval_across_a_rotation(tmp_path):
    """The committer thread syncs what the writer appends, while it appends, across midnight; every record is
    durable within the interval without anyone asking, and the chain stays intact."""
    clock = Clock(datetime(2026, 10, 31, 23, 59, 59, 500000, tzinfo=timezone.utc).timestamp())
    j = Journal(tmp_path, "r", clock=clock)
    j.start_group_commit(0.002)
    for i in range(2000):  # 1 ms of journal time each: the day changes half-way
        j.append("decision", {"i": i})
    deadline = time.monotonic() + 60  # catches a hang only
    while j.durable_seq < j.seq and time.monotonic() < deadline:
        time.sleep(0.002)
    assert j.durable_seq == j.seq == 2000 and j.fsyncs >= 1
    fsyncs = j.fsyncs
    time.sleep(0.02)
    assert j.fsyncs == fsyncs  # nothing new written: nothing synced
    j.close()
    files = journal_files(tmp_path / "r")
    assert [f.name for f in files] == ["2026-10-31.jsonl", "2026-11-01.jsonl"] and verify(files) is None
    assert [r["payload"]["i"] for _, _, r in read_records(files)] == list(range(2000))


@pytest.mark.parametrize("line, message", [
    (b"[]\n", "a JSON list, not an object"),
    (b"null\n", "a JSON NoneType, not an object"),
    (b"[" * 200_000 + b"\n", "nested too deeply"),
    (b'{"seq": 99999999999999999999999}\n', "not a journal record"),
])
def test_a_line_that_is_no_record_is_named_not_a_crash(tmp_path, line, message):
    (path,) = _journal(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = line
    path.write_bytes(b"".join(lines))
    problem = verify([path])
    assert problem is not None and problem.path == path and problem.line == 3 and message in problem.message


@pytest.mark.parametrize("reformat", ["space", "duplicate_key"])
def test_bytes_other_than_the_canonical_form_are_a_change(tmp_path, reformat):
    """The hash covers the parsed record: a line that parses to the same record but is not the bytes the runtime
    wrote (a space added, a key given twice with the first value overridden) is found all the same."""
    (path,) = _journal(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    if reformat == "space":
        lines[1] = lines[1].replace(b'","kind":', b'", "kind":')
    else:
        lines[1] = lines[1].replace(b'{"hash":', b'{"kind":"fill","hash":')
    path.write_bytes(b"".join(lines))
    problem = verify([path])
    assert problem is not None and problem.line == 2 and "canonical form" in problem.message


def _cut_tail(path, keep: int) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:keep]))


def test_records_cut_from_the_end_are_found_by_the_checkpoint(tmp_path):
    """Removing the last records at a record boundary leaves an intact chain; the checkpoint the journal wrote at
    close names the head, so the cut is found, and the runtime refuses to continue the shortened journal."""
    (path,) = _journal(tmp_path)
    assert json.loads((path.parent / "checkpoint.json").read_text())["seq"] == 6
    _cut_tail(path, 4)
    problem = verify([path])
    assert problem is not None and problem.line == 4 and "cut from the end" in problem.message
    assert "names seq 6" in problem.message
    with pytest.raises(JournalError, match="cut from the end"):
        Journal(tmp_path, "mm_lite-paper")


def test_a_signed_checkpoint_refuses_a_changed_or_unsigned_anchor(tmp_path, monkeypatch):
    monkeypatch.setenv("SOFIA_JOURNAL_KEY", "k-3b1f")
    (path,) = _journal(tmp_path)
    cp_path = path.parent / "checkpoint.json"
    assert verify([path]) is None and json.loads(cp_path.read_text())["mac"]
    # an attacker who cut the tail rewrites the anchor to the new end: without the key the signature fails
    _cut_tail(path, 4)
    cp = json.loads(cp_path.read_text())
    cp_path.write_text(json.dumps({**cp, "seq": 4, "hash": json.loads(path.read_bytes().splitlines()[-1])["hash"]}))
    problem = verify([path])
    assert problem is not None and "signature does not verify" in problem.message
    cp_path.write_text(json.dumps({**cp, "mac": None}))
    assert "unsigned" in verify([path]).message
    # the genuine anchor, read under another key, does not verify either
    cp_path.write_text(json.dumps(cp))
    monkeypatch.setenv("SOFIA_JOURNAL_KEY", "other")
    assert "signature does not verify" in verify([path]).message


def test_a_checkpoint_is_written_every_n_durable_records_and_at_rotation(tmp_path, monkeypatch):
    from sofia_runtime import checkpoint

    monkeypatch.setattr("sofia_runtime.journal.CHECKPOINT_EVERY", 10)
    clock = Clock(datetime(2026, 10, 31, 23, 59, 59, 980000, tzinfo=timezone.utc).timestamp())
    j = Journal(tmp_path, "r", clock=clock)
    for i in range(15):  # 1 ms each: the day changes at the 20th record; not yet
        j.append_durable("decision", {"i": i})
    assert checkpoint.read_checkpoint(tmp_path / "r", None).seq == 10
    for i in range(10):
        j.append("decision", {"i": i})  # the day changes on the way: the day's last record is anchored
    first_day, _ = journal_files(tmp_path / "r")
    day_end = json.loads(first_day.read_bytes().splitlines()[-1])["seq"]
    assert 15 < day_end < 25 and checkpoint.read_checkpoint(tmp_path / "r", None).seq == day_end
    j.close()
    assert checkpoint.read_checkpoint(tmp_path / "r", None).seq == 25
    assert verify(journal_files(tmp_path / "r")) is None
