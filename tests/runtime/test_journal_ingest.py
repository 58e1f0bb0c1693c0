"""The journal back into Dagster: the sensor notices a real runtime's journal, the ingest and reconciliation
assets run through Dagster, reconciliation reaches 100 % on the clean run and names the break on a doctored
venue record."""

from __future__ import annotations

import json
from datetime import datetime

import dagster as dg
import duckdb
import polars as pl
import pytest

from runtime_support import RuntimeData

pytestmark = pytest.mark.slow


@pytest.fixture
def traded(runtime_data: RuntimeData) -> RuntimeData:
    proc = runtime_data.cli("run", "--strategy", "mm_lite", "--speed", "0", "--duration", "5s", "--port", "0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert any(r["kind"] == "fill" for r in runtime_data.records("mm_lite-paper"))
    return runtime_data


def _resources():
    from sofia_pipelines.resources import market_source_resource, warehouse_resource

    return {"warehouse": warehouse_resource(), "market_source": market_source_resource()}


def _seed_fx(resources) -> None:
    """net_pnl states taxes in TRY: a USD/TRY rate as raw/fx would hold it."""
    from sofia_pipelines.warehouse import replace_rows
    from sofia_runtime.schemas import RAW_TABLES

    fx = pl.DataFrame({"pair": ["USD/TRY"], "ts": [datetime(2026, 11, 20)], "rate": [41.5]})
    with resources["warehouse"].get_connection() as conn:
        replace_rows(conn, "raw", RAW_TABLES["fx"], fx)


def _reconcile(resources):
    from sofia_pipelines.defs.audit.assets import net_pnl, reconciliation, reconciliation_complete

    return dg.materialize([reconciliation, net_pnl, reconciliation_complete], resources=resources,
                          raise_on_error=False)


def test_sensor_ingests_a_journal_and_reconciliation_is_complete_then_names_a_doctored_break(traded: RuntimeData):
    from sofia_pipelines.defs.audit.assets import audit_events, fills, journal_chain_intact, journal_sensor
    from sofia_pipelines.definitions import defs

    instance = dg.DagsterInstance.ephemeral()
    tick = journal_sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
    days = sorted({p.stem for p in (traded.dir / "audit" / "mm_lite-paper").glob("*.jsonl")})
    assert [r.partition_key for r in tick.run_requests] == days
    # nothing new: the next tick skips
    again = journal_sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=tick.cursor,
                                                                     definitions=defs))
    assert again.run_requests == [] and "no new journal records" in again.skip_message

    resources = _resources()
    _seed_fx(resources)
    for request in tick.run_requests:
        result = dg.materialize([audit_events, fills, journal_chain_intact], partition_key=request.partition_key,
                                resources=resources)
        assert all(c.passed for c in result.get_asset_check_evaluations())
    records = traded.records("mm_lite-paper")
    with duckdb.connect(str(traded.dir / "warehouse.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM audit.events").fetchall()[0][0] == len(records)
        assert conn.execute("SELECT count(*) FROM audit.fills").fetchall()[0][0] == \
            sum(r["kind"] == "fill" for r in records)

    clean = _reconcile(resources)
    (check,) = clean.get_asset_check_evaluations()
    assert check.passed
    meta = next(e for e in clean.get_asset_materialization_events()
                if e.asset_key.to_user_string() == "reconciliation").materialization.metadata
    assert meta["reconciliation_rate"].value == 1.0 and meta["breaks"].value == 0
    orders = sum(r["kind"] == "order" for r in records)
    fills_n = sum(r["kind"] == "fill" for r in records)
    assert meta["matched"].value == orders + fills_n

    # doctor the venue's own record: one trade at another price, another trade gone
    venue_file = next((traded.dir / "paper_venue" / "mm_lite-paper").glob("*.jsonl"))
    lines = venue_file.read_text().splitlines()
    trade_lines = [i for i, line in enumerate(lines) if json.loads(line)["t"] == "trade"]
    assert len(trade_lines) >= 2, "the run needs two trades on one venue to doctor"
    changed = json.loads(lines[trade_lines[0]])
    changed["trade"]["price"] = str(float(changed["trade"]["price"]) + 1)
    lines[trade_lines[0]] = json.dumps(changed)
    removed = json.loads(lines[trade_lines[1]])["trade"]["id"]
    del lines[trade_lines[1]]
    venue_file.write_text("\n".join(lines) + "\n")

    doctored = _reconcile(resources)
    (check,) = doctored.get_asset_check_evaluations()
    assert not check.passed
    with duckdb.connect(str(traded.dir / "warehouse.duckdb"), read_only=True) as conn:
        breaks = {(r[0], r[1]): r[2] for r in conn.execute(
            "SELECT id, status, detail FROM audit.reconciliation WHERE status <> 'matched'").fetchall()}
    assert breaks[(changed["trade"]["id"], "mismatched")].startswith("price: journal")
    assert (removed, "missing_at_venue") in breaks
    assert changed["trade"]["id"] in check.description or removed in check.description


def _ingest(resources, day: str):
    from sofia_pipelines.defs.audit.assets import audit_events, journal_chain_intact

    return dg.materialize([audit_events, journal_chain_intact], partition_key=day, resources=resources,
                          raise_on_error=False)


def _failure(result) -> str:
    event = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return event.event_specific_data.error.message


def _events(traded: RuntimeData) -> int:
    with duckdb.connect(str(traded.dir / "warehouse.duckdb"), read_only=True) as conn:
        return conn.execute("SELECT count(*) FROM audit.events").fetchall()[0][0]


def test_ingestion_verifies_first_and_remembers_the_head_it_ingested(traded: RuntimeData):
    """A tampered journal is refused before anything is written (the rows ingested before stay); a journal cut
    back at a record boundary after it was ingested, with its checkpoint removed too, is still found through the
    head Dagster remembers; a torn tail left by a runtime that is not running is reported with its position."""
    resources = _resources()
    (path,) = (traded.dir / "audit" / "mm_lite-paper").glob("*.jsonl")
    day = path.stem
    first = _ingest(resources, day)
    assert first.success, _failure(first)
    assert all(c.passed for c in first.get_asset_check_evaluations())
    ingested = _events(traded)
    original = path.read_bytes()

    # a changed byte: the partition is refused, the stored rows kept
    lines = original.splitlines(keepends=True)
    lines[4] = lines[4].replace(b'"kind":"', b'"kind":"x', 1)
    path.write_bytes(b"".join(lines))
    refused = _ingest(resources, day)
    assert not refused.success
    assert f"journal refused, nothing ingested for {day}: {path}:5" in _failure(refused)
    assert _events(traded) == ingested

    # the last records cut off and the checkpoint deleted: the chain that is left is intact, the head is not
    path.write_bytes(b"".join(original.splitlines(keepends=True)[:-3]))
    (path.parent / "checkpoint.json").unlink()
    cut = _ingest(resources, day)
    assert not cut.success and _events(traded) == ingested
    assert "records were cut from the end" in _failure(cut)

    # restored, plus a torn last line from a runtime that died mid-write (its lock is free)
    path.write_bytes(original + b'{"hash":"ab')
    torn = _ingest(resources, day)
    # the complete records are sound and ingested; the blocking check fails the run, naming the torn line
    assert torn.asset_materializations_for_node("audit_events") and _events(traded) == ingested
    (check,) = torn.get_asset_check_evaluations()
    torn_line = len(original.splitlines()) + 1
    assert not check.passed and f"{path}:{torn_line}: torn last line" in check.description
    assert "is not running" in check.description
