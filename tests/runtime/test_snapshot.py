"""The serving-snapshot contract: written whole, switched atomically, refused when bad."""

import json
import sys
import subprocess
from datetime import date, timedelta

import polars as pl
import pytest

from sofia_runtime.schemas import REPLAY_TABLES, SERVING_TABLES
from sofia_runtime.snapshot import SnapshotError, SnapshotWatcher, current_id, load_current, write_snapshot


def _tables() -> dict[str, pl.DataFrame]:
    tables = {name: schema.empty() for name, schema in {**SERVING_TABLES, **REPLAY_TABLES}.items()}
    tables["fee_table"] = pl.DataFrame({
        "venue": ["binance"], "symbol": ["BTC/USDT"], "market": ["spot"], "tier": ["VIP0"], "min_volume_30d_usd": [0.0],
        "maker": [0.001], "taker": [0.001], "funding_interval_hours": [None], "valid_from": [date(2024, 1, 1)],
        "valid_to": [None], "source": ["test"], "selected": [True]})
    tables["markets"] = pl.DataFrame({
        "venue": ["binance"], "symbol": ["BTC/USDT"], "market": ["spot"], "base": ["BTC"], "quote": ["USDT"],
        "price_tick": [0.01], "amount_step": [1e-5], "min_amount": [1e-5], "min_notional": [5.0]})
    tables["risk_limits"] = pl.DataFrame({
        "venue": ["binance"], "symbol": ["BTC/USDT"], "max_position": [1.0], "max_notional_usd": [10_000.0],
        "max_open_orders": [4], "daily_loss_limit_usd": [100.0]})
    return tables


def test_round_trip_and_current_switch(tmp_path):
    first = write_snapshot(_tables(), "2026-10-30", tmp_path)
    second = write_snapshot(_tables(), "2026-10-31", tmp_path)
    assert current_id(tmp_path) == second != first
    snap = load_current(tmp_path)
    assert snap.manifest["partition"] == "2026-10-31"
    assert snap.tables["fee_table"].equals(SERVING_TABLES["fee_table"].conform(_tables()["fee_table"], "t"))
    assert snap.manifest["tables"]["fee_table"]["rows"] == 1 and len(snap.manifest["tables"]["fee_table"]["sha256"]) == 64


def test_missing_table_is_refused_before_anything_is_written(tmp_path):
    tables = _tables()
    del tables["route_table"]
    with pytest.raises(SnapshotError, match="lacks table"):
        write_snapshot(tables, "2026-10-31", tmp_path)
    assert not (tmp_path / "CURRENT").exists()


def test_truncated_file_wrong_hash_and_stale_are_refused(tmp_path):
    sid = write_snapshot(_tables(), "2026-10-31", tmp_path)
    fee = tmp_path / sid / "fee_table.parquet"
    original = fee.read_bytes()
    fee.write_bytes(original[: len(original) // 2])
    with pytest.raises(SnapshotError, match="fee_table.parquet does not match its sha256"):
        load_current(tmp_path)
    fee.write_bytes(original)
    manifest_path = tmp_path / sid / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["tables"]["markets"]["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(SnapshotError, match="markets.parquet does not match"):
        load_current(tmp_path)
    sid = write_snapshot(_tables(), "2026-10-31", tmp_path)
    with pytest.raises(SnapshotError, match="is stale"):
        load_current(tmp_path, max_age=timedelta(seconds=-1))
    assert load_current(tmp_path, max_age=timedelta(hours=1)).snapshot_id == sid


def test_watcher_keeps_the_last_good_snapshot(tmp_path):
    good = write_snapshot(_tables(), "2026-10-30", tmp_path)
    watcher = SnapshotWatcher(tmp_path)
    assert watcher.poll().snapshot_id == good
    bad = write_snapshot(_tables(), "2026-10-31", tmp_path)
    (tmp_path / bad / "route_table.parquet").write_bytes(b"not parquet")
    assert watcher.poll().snapshot_id == good
    assert "route_table" in watcher.last_error


def test_pruning_keeps_the_last_n(tmp_path):
    ids = [write_snapshot(_tables(), f"2026-10-{d}", tmp_path, keep=2) for d in range(25, 30)]
    kept = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert kept == sorted(ids[-2:])


def test_runtime_modules_do_not_import_the_orchestration_stack():
    code = ("import sys, sofia_runtime.snapshot, sofia_runtime.tax, sofia_runtime.fees, sofia_runtime.fill_model;"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('dagster', 'dbt', 'great_expectations')];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_snapshot_with_nothing_to_trade_stays_on_disk_and_current_is_unchanged(tmp_path):
    good = write_snapshot(_tables(), "2026-10-30", tmp_path)
    tables = _tables()
    tables["fee_table"] = tables["fee_table"].with_columns(symbol=pl.lit("ETH/USDT"))  # no instrument has all three
    with pytest.raises(SnapshotError, match="refused, CURRENT left as it was: no instrument has a market, a selected "
                                            "fee row and risk limits"):
        write_snapshot(tables, "2026-10-31", tmp_path)
    assert current_id(tmp_path) == good
    refused = [p for p in tmp_path.iterdir() if p.is_dir() and "2026-10-31" in p.name]
    assert len(refused) == 1 and (refused[0] / "manifest.json").exists()  # kept for inspection
    tables["markets"] = tables["markets"].clear()
    with pytest.raises(SnapshotError, match="markets is empty"):
        write_snapshot(tables, "2026-11-01", tmp_path)
    assert current_id(tmp_path) == good


def test_empty_optional_tables_are_warnings_with_their_reason(tmp_path):
    from sofia_runtime.snapshot import validate_snapshot, write_snapshot_folder

    sid = write_snapshot_folder(_tables(), "2026-10-31", tmp_path)
    assert not (tmp_path / "CURRENT").exists()  # written, not published
    snapshot, readiness = validate_snapshot(tmp_path, sid, {"fill_model": "candle-only data: no trades to fit on"})
    assert readiness.ok and readiness.tradable == [("binance", "BTC/USDT")]
    assert any(w.startswith("fill_model is empty (candle-only data: no trades to fit on)") for w in readiness.warnings)
    assert any(w.startswith("route_table is empty") for w in readiness.warnings)
    assert any(w.startswith("replay_books is empty") for w in readiness.warnings)


def test_watcher_refuses_a_current_with_nothing_to_trade(tmp_path):
    from sofia_runtime.snapshot import switch_current, write_snapshot_folder

    good = write_snapshot(_tables(), "2026-10-30", tmp_path)
    watcher = SnapshotWatcher(tmp_path)
    assert watcher.poll().snapshot_id == good
    tables = _tables()
    tables["risk_limits"] = tables["risk_limits"].clear()
    switch_current(tmp_path, write_snapshot_folder(tables, "2026-10-31", tmp_path))  # as if published by hand
    assert watcher.poll().snapshot_id == good
    assert "risk_limits is empty" in watcher.last_error


@pytest.mark.parametrize("change, message", [
    (lambda m: {**m, "created_at": "2099-01-01T00:00:00+00:00"}, "is in the future"),
    (lambda m: {**m, "created_at": "2026-11-20T00:00:00"}, "created_at: Input should have timezone info"),
    (lambda m: {k: v for k, v in m.items() if k != "created_at"}, "created_at: Field required"),
    (lambda m: [], "manifest: Input should be a valid dictionary"),
    (lambda m: {**m, "tables": {**m["tables"], "fee_table": {**m["tables"]["fee_table"], "rows": -1}}},
     "tables.fee_table.rows: Input should be greater than or equal to 0"),
    (lambda m: {**m, "snapshot_id": "another"}, "is not its folder's name"),
    (lambda m: {**m, "created_at": 5}, "created_at"),
])
def test_a_manifest_that_does_not_fit_its_schema_is_refused_with_a_reason(tmp_path, change, message):
    sid = write_snapshot(_tables(), "2026-10-31", tmp_path)
    path = tmp_path / sid / "manifest.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    with pytest.raises(SnapshotError, match="snapshot refused") as err:
        load_current(tmp_path)
    assert message in str(err.value) and str(path) in str(err.value)
    watcher = SnapshotWatcher(tmp_path)
    assert watcher.poll() is None and message in watcher.last_error


def test_a_manifest_nested_too_deeply_is_refused(tmp_path):
    sid = write_snapshot(_tables(), "2026-10-31", tmp_path)
    (tmp_path / sid / "manifest.json").write_text("[" * 200_000)
    with pytest.raises(SnapshotError, match="nested too deeply"):
        load_current(tmp_path)
