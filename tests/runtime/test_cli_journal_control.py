"""`sofia-runtime` as a real process: verify-journal's exit codes and messages, pause and resume."""

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import pytest

from sofia_runtime.control import pause_unless_paused, read_pause, write_pause
from sofia_runtime.journal import Journal

CLI = [str(Path(sys.executable).with_name("sofia-runtime"))]


def _run(*args, data_dir):
    import os

    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SOFIA_DATA_DIR": str(data_dir)})


def test_verify_journal_exit_codes(data_dir):
    j = Journal(data_dir / "audit", "router-paper")
    for i in range(3):
        j.append_durable("fill", {"amount": Decimal("0.5"), "i": i})
    j.close()
    ok = _run("verify-journal", data_dir=data_dir)
    assert ok.returncode == 0 and "intact: 1 file" in ok.stdout
    (path,) = (data_dir / "audit" / "router-paper").glob("*.jsonl")
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace('"0.5"', '"5.0"')
    path.write_text("".join(lines))
    broken = _run("verify-journal", str(path), data_dir=data_dir)
    assert broken.returncode == 1 and f"{path}:2 (seq 2)" in broken.stdout


def test_pause_and_resume(data_dir):
    paused = _run("pause", "--reason", "latency spike on okx", "--by", "ops", data_dir=data_dir)
    assert paused.returncode == 0
    state = read_pause(data_dir / "control" / "pause.json")
    assert state.paused and state.paused_by == "ops" and state.reason == "latency spike on okx"
    assert json.loads((data_dir / "control" / "pause.json").read_text())["reason"] == "latency spike on okx"
    assert _run("resume", data_dir=data_dir).stdout.strip() == "resumed"
    assert not read_pause(data_dir / "control" / "pause.json").paused


def test_unreadable_control_file_counts_as_paused(tmp_path):
    path = tmp_path / "pause.json"
    path.write_text("{not json")
    state = read_pause(path)
    assert state.paused and "unreadable control file" in state.reason


def test_automatic_pauses_never_overwrite_a_pause_even_when_racing(tmp_path):
    path = tmp_path / "control" / "pause.json"
    write_pause(path, "ops", "maintenance")
    assert pause_unless_paused(path, "anomaly-detector", "spread z 9") is None
    assert read_pause(path).paused_by == "ops" and read_pause(path).reason == "maintenance"
    path.write_text("{not json")  # unreadable counts as paused: left as it is
    assert pause_unless_paused(path, "anomaly-detector", "spread z 9") is None and path.read_text() == "{not json"
    path.unlink()
    # many writers at once (the breaker, the anomaly sensor, operators): exactly one pause lands, nothing torn
    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda i: pause_unless_paused(path, f"writer-{i}", f"reason {i}"), range(32)))
    (winner,) = [w for w in won if w is not None]
    assert read_pause(path) == winner and list(path.parent.iterdir()) == [path]


@pytest.mark.parametrize("content", [b"[" * 200_000, b"[]", b"null", b'{"paused_by": 1, "reason": "x", "ts": ""}',
                                     b'"paused"', b" " * (70 * 1024) + b"{}", b"\xff\xfe"])
def test_any_control_file_that_is_not_a_pause_record_counts_as_paused(tmp_path, content):
    path = tmp_path / "pause.json"
    path.write_bytes(content)
    state = read_pause(path)
    assert state.paused and state.paused_by == "unknown" and "unreadable control file" in state.reason


def test_verify_journal_names_the_line_that_is_not_a_record(data_dir):
    j = Journal(data_dir / "audit", "router-paper")
    for i in range(3):
        j.append_durable("fill", {"amount": Decimal("0.5"), "i": i})
    j.close()
    (path,) = (data_dir / "audit" / "router-paper").glob("*.jsonl")
    for bad in (b"[]\n", b"[" * 200_000 + b"\n"):
        lines = path.read_bytes().splitlines(keepends=True)
        lines[1] = bad
        path.write_bytes(b"".join(lines))
        out = _run("verify-journal", str(path), data_dir=data_dir)
        assert out.returncode == 1 and f"{path}:2" in out.stdout and "Traceback" not in out.stderr, out.stderr
