"""Fuzzing every file the runtime parses: the pause control file, journal lines (and `sofia-runtime
verify-journal`), snapshot manifests and the runtime's YAML configuration.

Each parser gets random bytes, valid files cut at every length, single bytes changed, deep nesting, huge and
non-finite numbers, values of the wrong type, keys given twice, empty files and BOMs. It must answer with its
documented error (naming the file) or a safe state, never a traceback of another type."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from fuzzing import FEW, FUZZ, NASTY_JSON, TRIED, json_values, mutations, nasty
from sofia_runtime.config import ConfigFileError, RuntimeConfig, load_config
from sofia_runtime.control import PauseState, read_pause, write_pause
from sofia_runtime.journal import Journal, JournalError, Problem, read_records, verify
from sofia_runtime.snapshot import (ALL_TABLES, SnapshotError, SnapshotWatcher, current_id, load_snapshot,
                                    read_manifest, write_snapshot_folder)

KEY = b"fuzz-journal-key"


# --- the pause control file: whatever is there, trading is paused -----------------------------------------
@pytest.fixture(scope="module")
def pause_file(tmp_path_factory) -> tuple[Path, bytes]:
    path = tmp_path_factory.mktemp("control") / "pause.json"
    write_pause(path, "anomaly", "latency p99 on binance")
    return path, path.read_bytes()


def _assert_paused(path: Path, raw: bytes, valid: bytes) -> PauseState:
    path.write_bytes(raw)
    TRIED["control.read_pause"] += 1
    state = read_pause(path)  # documented never to raise
    assert state.paused, f"{raw[:80]!r} read as not paused"
    if raw != valid and state.paused_by == "unknown":
        assert str(path) in state.reason
    return state


@FUZZ
@given(data=st.data())
def test_pause_file_of_any_content_reads_paused(pause_file, data):
    path, valid = pause_file
    raw = data.draw(nasty(valid, json.loads(valid)))
    _assert_paused(path, raw, valid)


def test_pause_file_cut_at_every_length_reads_paused_by_unknown(pause_file):
    path, valid = pause_file
    for n in range(len(valid)):
        state = _assert_paused(path, valid[:n], valid)
        assert state.paused_by == "unknown", valid[:n]
    assert _assert_paused(path, valid, valid).paused_by == "anomaly"


def test_pause_file_that_is_a_folder_or_huge_reads_paused(tmp_path):
    folder = tmp_path / "pause.json"
    folder.mkdir()
    TRIED["control.read_pause"] += 2
    assert read_pause(folder).paused and read_pause(folder).paused_by == "unknown"
    huge = tmp_path / "huge.json"
    huge.write_bytes(b'{"paused_by": "x", "reason": "' + b"y" * 200_000 + b'", "ts": ""}')
    assert read_pause(huge).paused and "larger than" in read_pause(huge).reason


# --- the audit journal: a changed byte anywhere is a Problem naming file and line ---------------------------
@pytest.fixture(scope="module")
def journal(tmp_path_factory) -> tuple[Path, bytes, bytes]:
    """A real journal of one runtime, closed (so signed-checkpointed): its file, its bytes and the checkpoint's."""
    audit = tmp_path_factory.mktemp("audit")
    old = os.environ.get("SOFIA_JOURNAL_KEY")
    os.environ["SOFIA_JOURNAL_KEY"] = KEY.decode()
    try:
        j = Journal(audit, "mm_lite-paper", clock=lambda: 1_764_806_400.0)
        j.append("start", {"strategy": "mm_lite"})
        j.append("order", {"client_order_id": "c1", "price": "97000.5", "amount": "0.01", "side": "buy"})
        j.append("fill", {"trade_id": "t1", "price": "97000.5", "amount": "0.01", "fee": "0.0097"})
        j.close()
    finally:
        os.environ.pop("SOFIA_JOURNAL_KEY") if old is None else os.environ.__setitem__("SOFIA_JOURNAL_KEY", old)
    [path] = sorted((audit / "mm_lite-paper").glob("*.jsonl"))
    return path, path.read_bytes(), (path.parent / "checkpoint.json").read_bytes()


def _verify(path: Path, raw: bytes) -> Problem | None:
    path.write_bytes(raw)
    TRIED["journal.verify"] += 1
    problem = verify([path], key=KEY)
    if problem is not None:
        assert isinstance(problem, Problem)
        assert problem.path in (path, path.parent / "checkpoint.json"), problem
        assert problem.line >= 0 and str(problem.path) in str(problem)
    TRIED["journal.read_records"] += 1
    try:
        records = list(read_records([path]))
    except JournalError as exc:
        assert str(exc).startswith(f"{path}:"), exc  # names the file and the line
        assert problem is not None, "read_records refused what verify passed"
    else:
        assert all(isinstance(r, dict) for _, _, r in records)
    # a runtime may be writing the file: a last line without its newline is left for later, nothing else changes
    TRIED["journal.verify (in progress)"] += 1
    in_progress = verify([path], in_progress=True, key=KEY)
    assert in_progress is None or isinstance(in_progress, Problem)
    try:
        list(read_records([path], in_progress=True))
    except JournalError as exc:
        assert str(exc).startswith(f"{path}:"), exc
    return problem


@FUZZ
@given(data=st.data())
def test_any_change_to_a_journal_file_is_a_problem(journal, data):
    path, valid, _ = journal
    lines = valid.splitlines(keepends=True)
    line = data.draw(st.sampled_from(lines))
    raw = data.draw(st.one_of(
        nasty(valid),
        nasty(line.rstrip(b"\n"), json.loads(line)).map(lambda bad: valid.replace(line, bad + b"\n")),
        st.sampled_from(NASTY_JSON).map(lambda bad: valid + bad + b"\n"),
    ))
    try:
        problem = _verify(path, raw)
        assert (problem is None) == (raw == valid), f"{raw[-120:]!r}: {problem}"
    finally:
        path.write_bytes(valid)


def test_a_journal_cut_at_every_length_is_a_problem(journal):
    path, valid, _ = journal
    try:
        for n in range(len(valid)):
            problem = _verify(path, valid[:n])
            assert problem is not None, f"cut at {n} of {len(valid)} bytes passed"
        assert _verify(path, valid) is None
    finally:
        path.write_bytes(valid)


@FEW
@given(data=st.data())
def test_a_bad_checkpoint_is_a_problem_never_a_crash(journal, data):
    path, valid, checkpoint = journal
    anchor = path.parent / "checkpoint.json"
    raw = data.draw(nasty(checkpoint, json.loads(checkpoint)))
    anchor.write_bytes(raw)
    try:
        TRIED["checkpoint.read_checkpoint (via verify)"] += 1
        problem = verify([path], key=KEY)
        if problem is None:  # only a checkpoint saying the same, signed, passes
            fields = ("runtime_id", "seq", "hash", "ts", "mac")
            assert [json.loads(raw)[k] for k in fields] == [json.loads(checkpoint)[k] for k in fields], raw
        else:
            assert problem.path in (path, anchor)
    finally:
        anchor.write_bytes(checkpoint)


@pytest.mark.parametrize("mac", ["\u00e9" * 64, "\ud800"])
def test_a_checkpoint_mac_of_any_text_is_a_problem(journal, mac):
    """hmac.compare_digest raised TypeError on a str with non-ASCII characters."""
    path, _, checkpoint = journal
    anchor = path.parent / "checkpoint.json"
    anchor.write_text(json.dumps({**json.loads(checkpoint), "mac": mac}))
    try:
        problem = verify([path], key=KEY)
        assert problem.path == anchor and "signature does not verify" in problem.message
    finally:
        anchor.write_bytes(checkpoint)


def test_a_journal_line_of_invalid_utf8_is_a_problem_naming_file_and_line(journal):
    """json.loads of bytes guesses UTF-16 from a line starting 0xff 0xfe and raised UnicodeDecodeError."""
    path, valid, _ = journal
    try:
        for bad in (b"\xff\xfe{}\n", b'{"hash":"\xff"}\n'):
            problem = _verify(path, valid + bad)
            assert problem.line == 4 and "not UTF-8 text" in problem.message
            with pytest.raises(JournalError, match=rf"^{path}:4: not UTF-8 text"):
                list(read_records([path]))
    finally:
        path.write_bytes(valid)


def test_verify_journal_cli_names_the_bad_line_of_a_fuzzed_file(journal, tmp_path):
    path, valid, checkpoint = journal
    runtime = tmp_path / "audit" / path.parent.name
    runtime.mkdir(parents=True)
    bad = runtime / path.name
    lines = valid.splitlines(keepends=True)
    bad.write_bytes(lines[0] + b"[" * 100_000 + b"\n" + b"".join(lines[2:]))
    (runtime / "checkpoint.json").write_bytes(checkpoint)
    TRIED["sofia-runtime verify-journal (subprocess)"] += 1
    out = subprocess.run([str(Path(sys.executable).with_name("sofia-runtime")), "verify-journal", str(bad)],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "SOFIA_JOURNAL_KEY": KEY.decode(), "SOFIA_DATA_DIR": str(tmp_path)})
    assert out.returncode == 1, out
    assert out.stdout.startswith(f"BROKEN: {bad}:2 ") and "nested too deeply" in out.stdout, out.stdout
    assert "Traceback" not in out.stderr, out.stderr


# --- snapshot manifests: "snapshot refused", naming the file ----------------------------------------------
@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> tuple[Path, bytes]:
    """A real snapshot folder as the pipelines write it (every table, empty)."""
    serving = tmp_path_factory.mktemp("serving")
    sid = write_snapshot_folder({name: schema.empty() for name, schema in ALL_TABLES.items()}, "2026-12-01", serving)
    return serving / sid, (serving / sid / "manifest.json").read_bytes()


@FUZZ
@given(data=st.data())
def test_the_snapshot_watcher_survives_any_current_pointer(snapshot, data):
    """The runtime follows CURRENT with SnapshotWatcher.poll: whatever CURRENT holds, it keeps what it had (here
    nothing) and says why, never raises."""
    folder, _ = snapshot
    sid = folder.name.encode()
    odd = [b"", b"\n", b"..", b"/etc", b"../" + sid, sid + b"/..", b"\x00", b"\xff\xfe" + sid, b"a\nb", b"a" * 300]
    raw = data.draw(st.one_of(mutations(sid + b"\n"), st.binary(max_size=64), st.sampled_from(odd)))
    (folder.parent / "CURRENT").write_bytes(raw)
    TRIED["snapshot.SnapshotWatcher.poll (CURRENT)"] += 1
    watcher = SnapshotWatcher(folder.parent)
    assert watcher.poll() is None  # an empty snapshot has nothing to trade, and nothing else is there
    assert watcher.last_error


@pytest.mark.parametrize("pointer, message", [(b"\xff\xfe", "unreadable"), (b"/etc", "not a snapshot folder"),
                                              (b"../serving", "not a snapshot folder"), (b"", "not a snapshot folder")])
def test_a_current_pointer_that_is_not_a_folder_name_is_refused(tmp_path, pointer, message):
    """CURRENT not UTF-8 raised UnicodeDecodeError out of SnapshotWatcher.poll; "/etc" pointed it at /etc."""
    (tmp_path / "CURRENT").write_bytes(pointer)
    with pytest.raises(SnapshotError, match=f"^snapshot refused: {tmp_path / 'CURRENT'}.*{message}"):
        current_id(tmp_path)
    watcher = SnapshotWatcher(tmp_path)
    assert watcher.poll() is None and message in watcher.last_error


@FUZZ
@given(data=st.data())
def test_a_bad_manifest_is_refused_naming_the_file(snapshot, data):
    folder, valid = snapshot
    manifest = json.loads(valid)
    entry = manifest["tables"]["fee_table"]
    raw = data.draw(st.one_of(
        nasty(valid, manifest),
        st.tuples(st.sampled_from(sorted(entry)), json_values).map(lambda t: json.dumps(
            {**manifest, "tables": {**manifest["tables"], "fee_table": {**entry, t[0]: t[1]}}}).encode()),
    ))
    (folder / "manifest.json").write_bytes(raw)
    try:
        TRIED["snapshot.read_manifest"] += 1
        try:
            read_manifest(folder)
        except SnapshotError as exc:
            assert str(exc).startswith(f"snapshot refused: {folder / 'manifest.json'}: "), exc
        TRIED["snapshot.load_snapshot"] += 1
        try:
            snap = load_snapshot(folder, max_age=timedelta(days=3650))
        except SnapshotError:
            pass
        else:
            assert snap.created_at.tzinfo is not None
            assert snap.manifest["tables"] == manifest["tables"] or raw == valid
    finally:
        (folder / "manifest.json").write_bytes(valid)


def test_a_manifest_cut_at_every_length_is_refused(snapshot):
    folder, full = snapshot
    manifest = json.loads(full)
    # one table is enough for read_manifest (load_snapshot asks for the others), and 15x fewer lengths to cut at
    valid = json.dumps({**manifest, "tables": {"fee_table": manifest["tables"]["fee_table"]}}, indent=1).encode()
    (folder / "manifest.json").write_bytes(valid)
    read_manifest(folder)
    try:
        for n in range(len(valid.rstrip())):
            (folder / "manifest.json").write_bytes(valid[:n])
            TRIED["snapshot.read_manifest"] += 1
            with pytest.raises(SnapshotError, match="^snapshot refused: "):
                read_manifest(folder)
    finally:
        (folder / "manifest.json").write_bytes(full)


@pytest.mark.parametrize("created_at", ["1700000000", "1700000000.5", "2026-12-01"])
def test_a_created_at_the_readers_cannot_parse_is_refused(snapshot, created_at):
    """pydantic takes epoch seconds as text for a datetime; Snapshot.created_at (fromisoformat) then raised
    ValueError, and load_snapshot's age check with it."""
    folder, valid = snapshot
    (folder / "manifest.json").write_text(json.dumps({**json.loads(valid), "created_at": created_at}))
    try:
        with pytest.raises(SnapshotError, match=r"^snapshot refused: .*created_at"):
            load_snapshot(folder, max_age=timedelta(hours=1))
    finally:
        (folder / "manifest.json").write_bytes(valid)


@pytest.mark.parametrize("columns", [[], ["venue"], list(reversed(ALL_TABLES["fee_table"].columns))])
def test_a_manifest_whose_columns_are_not_the_files_is_refused(snapshot, columns):
    """The manifest's columns were never compared with the file's: `"columns": []` loaded."""
    folder, valid = snapshot
    manifest = json.loads(valid)
    manifest["tables"]["fee_table"]["columns"] = columns
    (folder / "manifest.json").write_text(json.dumps(manifest))
    try:
        with pytest.raises(SnapshotError, match=r"fee_table has columns \['venue', .*manifest says"):
            load_snapshot(folder)
    finally:
        (folder / "manifest.json").write_bytes(valid)


def test_row_counts_must_be_integers_not_true(snapshot):
    folder, valid = snapshot
    manifest = json.loads(valid)
    manifest["tables"]["fee_table"]["rows"] = True
    (folder / "manifest.json").write_text(json.dumps(manifest))
    try:
        with pytest.raises(SnapshotError, match=r"^snapshot refused: .*tables\.fee_table\.rows"):
            read_manifest(folder)
    finally:
        (folder / "manifest.json").write_bytes(valid)


# --- the runtime configuration: ValidationError or ConfigFileError, naming the file -------------------------
VALID_CONFIG = yaml.safe_dump({"strategy": "router", "mode": "paper", "port": 8011, "speed": 0,
                               "gate": {"threshold_usd": 0.5, "horizon_s": 20},
                               "starting_balances": {"USDT": 10000, "BTC": 0.1},
                               "router": {"order": "buy 0.5 BTC/USDT", "max_cost_bps": 12}}).encode()
yaml_values = json_values | st.sampled_from([".nan", ".inf", "-.inf", "1e400", "0x1F", "~", "yes", "2026-12-01"])


def _config_documents() -> st.SearchStrategy[bytes]:
    valid = yaml.safe_load(VALID_CONFIG)
    fields = [*RuntimeConfig.model_fields, "gate.threshold_usd", "gate.vol_window", "limits.stale_after_s",
              "starting_balances.BTC", "router.child_usd", "chaos.timeout_rate"]

    def set_field(t):
        name, value = t
        doc = json.loads(json.dumps(valid))
        head, _, tail = name.partition(".")
        if tail:
            doc.setdefault(head, {})[tail] = value
        else:
            doc[head] = value
        return yaml.safe_dump(doc, allow_unicode=True).encode("utf-8", "surrogatepass")

    scalars = st.sampled_from(["strategy", "port", "mode", "speed"])
    return st.one_of(
        st.tuples(st.sampled_from(fields), yaml_values).map(set_field),
        st.tuples(st.sampled_from(fields), st.sampled_from([".nan", ".inf", "-.inf", "1e400", str(2**70)])).map(
            lambda t: VALID_CONFIG + f"{t[0].split('.')[0]}: {t[1]}\n".encode()),
        scalars.map(lambda k: VALID_CONFIG + f"{k}: live\n".encode()),  # a setting given twice
        nasty(VALID_CONFIG),
        st.sampled_from([b"- 1\n- 2\n", b"42\n", b"&a [*a]\n", b"a: &a [*a, *a]\n", b"!!python/object:os.system\n",
                         b"? [1, 2]\n: 3\n", b"[" * 100_000, b"{" * 100_000, b"\t", b"strategy: 'x\n"]),
    )


@FUZZ
@given(raw=_config_documents())
def test_a_bad_runtime_config_is_refused_naming_the_file(tmp_path_factory, raw):
    path = tmp_path_factory.getbasetemp() / "runtime.yaml"
    path.write_bytes(raw)
    TRIED["config.load_config"] += 1
    try:
        cfg = load_config(path)
    except ValidationError as exc:
        assert f"RuntimeConfig from {path}" in str(exc)
    except ConfigFileError as exc:
        assert str(exc).startswith(f"{path}: "), exc
    else:  # whatever was accepted has finite figures
        for value in (cfg.speed, cfg.gate.threshold_usd, *cfg.starting_balances.values()):
            assert value == value and abs(value) != float("inf")


def test_a_setting_given_twice_is_refused(tmp_path):
    path = tmp_path / "runtime.yaml"
    path.write_text("strategy: router\nport: 8001\nstrategy: mm_lite\n")
    with pytest.raises(ConfigFileError, match=rf"^{path}: not valid YAML: setting 'strategy' given twice"):
        load_config(path)


@pytest.mark.parametrize("text, message", [
    ("- strategy\n- router\n", "a YAML list, not a mapping of settings"),
    ("[" * 100_000, "nested too deeply"),
    (b"\xff\xfestrategy", "not UTF-8 text"),
])
def test_a_config_file_that_is_not_a_mapping_is_refused_naming_it(tmp_path, text, message):
    """A YAML list raised TypeError, deep nesting RecursionError and bad bytes UnicodeDecodeError, none naming
    the file."""
    path = tmp_path / "runtime.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigFileError, match=f"^{path}: .*{message}"):
        load_config(path)


@pytest.mark.parametrize("setting", ["gate:\n  threshold_usd: -.inf\n", "starting_balances: {BTC: .inf}\n",
                                     "mm_lite:\n  quote_usd: .inf\n"])
def test_infinite_settings_are_refused(tmp_path, setting):
    """A gate threshold of -inf would pass every order; an infinite paper balance or quote size is never meant."""
    path = tmp_path / "runtime.yaml"
    path.write_text(setting)
    with pytest.raises(ValidationError, match=f"RuntimeConfig from {path}(.|\n)*finite number"):
        load_config(path)
