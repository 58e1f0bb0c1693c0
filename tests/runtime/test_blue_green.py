"""Blue-green deploys with real processes: the lease and its fencing token, handover and rollback, an aborted
deploy leaving the active slot trading, no order without the lease, no overlap, the handover gap measured."""

from __future__ import annotations

import json
import os
import re
import signal

import pytest
import yaml

from runtime_support import RuntimeData, wait_for
from sofia_runtime.deploy import intervals_overlap, orders_outside_lease, trading_intervals
from sofia_runtime.lease import TradingLease, read_lease


def test_the_lease_is_exclusive_and_its_token_grows(tmp_path):
    blue = TradingLease(tmp_path, "demo", "blue", "demo-blue")
    green = TradingLease(tmp_path, "demo", "green", "demo-green")
    assert blue.try_acquire() and blue.token == 1 and blue.check() is None
    assert not green.try_acquire() and "does not hold" in green.check()
    blue.release()
    assert read_lease(tmp_path / "demo.lease.json").released_at is not None
    assert green.try_acquire() and green.token == 2
    # a process that still believes it holds token 1 is fenced off by the record
    blue.fd, blue.token = os.open(tmp_path / "demo.lease.lock", os.O_RDONLY), 1
    assert "stale fencing token 1" in blue.check()
    os.close(blue.fd)


@pytest.fixture
def deployed(runtime_data: RuntimeData):
    procs_before = set()
    yield runtime_data
    for slot in ("blue", "green"):  # stop whatever slot still runs
        run = runtime_data.dir / "run" / f"mm_lite-{slot}.json"
        if run.exists():
            try:
                os.kill(json.loads(run.read_text())["pid"], signal.SIGTERM)
            except ProcessLookupError:
                pass
    del procs_before


def _deploy(rd: RuntimeData, *args: str):
    return rd.cli(*args, "--strategy", "mm_lite", "--speed", "60", "--confirm", "3", timeout=180)


def _decisions(rd: RuntimeData, slot: str) -> int:
    return sum(r["kind"] == "decision" for r in rd.records(f"mm_lite-{slot}", in_progress=True))


def _orders(rd: RuntimeData, slot: str) -> int:
    return sum(r["kind"] == "order" for r in rd.records(f"mm_lite-{slot}", in_progress=True))


def _token(rd: RuntimeData) -> int:
    return read_lease(rd.dir / "control" / "mm_lite.lease.json").token


@pytest.mark.slow
def test_deploy_rollback_and_an_aborted_deploy(deployed: RuntimeData):
    rd = deployed
    first = _deploy(rd, "deploy", "--to", "blue")
    assert first.returncode == 0, first.stderr
    wait_for(lambda: _orders(rd, "blue"), what="blue trading")

    to_green = _deploy(rd, "deploy", "--to", "green")
    assert to_green.returncode == 0, to_green.stderr
    gap = re.search(r"first of green: (\d+) ms; trading intervals overlap: no", to_green.stdout)
    assert gap, to_green.stdout
    print(f"handover gap blue -> green: {gap.group(1)} ms")
    assert _token(rd) == 2
    wait_for(lambda: not (rd.dir / "run" / "mm_lite-blue.json").exists(), what="blue to exit")
    wait_for(lambda: _orders(rd, "green"), what="green trading")

    # a deploy whose new slot is never healthy is aborted; green trades on
    bad = rd.dir / "stale.yaml"
    bad.write_text(yaml.safe_dump({"snapshot_max_age_h": 1e-9}))
    before = _decisions(rd, "green")
    aborted = rd.cli("rollback", "--strategy", "mm_lite", "--speed", "60", "--config", str(bad),
                     "--health-timeout", "15", timeout=90)
    assert aborted.returncode == 1
    assert "aborted, green still trading" in aborted.stderr and "stale" in aborted.stderr
    assert _token(rd) == 2
    wait_for(lambda: _decisions(rd, "green") > before + 5, what="green still deciding")

    blue_orders = _orders(rd, "blue")
    back = _deploy(rd, "rollback")
    assert back.returncode == 0, back.stderr
    assert "green -> blue" in back.stdout and _token(rd) == 3
    wait_for(lambda: not (rd.dir / "run" / "mm_lite-green.json").exists(), what="green to exit")
    wait_for(lambda: _orders(rd, "blue") > blue_orders, what="blue trading again after the rollback")

    # blue trades on: the venue's record is read before the journals, as every order is journaled before it is sent
    lines = [json.loads(line) for f in (rd.dir / "paper_venue" / "mm_lite-slots").glob("*.jsonl")
             for line in f.read_text().splitlines() if line.endswith("}")]
    blue, green = rd.records("mm_lite-blue", in_progress=True), rd.records("mm_lite-green")
    assert orders_outside_lease(blue) == [] and orders_outside_lease(green) == []
    assert not intervals_overlap(trading_intervals(blue) + trading_intervals(green))
    # one venue account for both slots: every client order id reached the paper venue once
    created = {}
    for line in lines:
        if line["t"] == "order":
            created.setdefault(line["order"]["clientOrderId"], set()).add(line["order"]["id"])
    assert created and all(len(ids) == 1 for ids in created.values())
    journaled = {r["payload"]["client_order_id"] for r in blue + green if r["kind"] == "order"}
    assert set(created) <= journaled
    assert rd.cli("verify-journal").returncode == 0


@pytest.mark.slow
def test_a_stale_fencing_token_is_refused_by_the_order_path(deployed: RuntimeData):
    rd = deployed
    assert _deploy(rd, "deploy", "--to", "blue").returncode == 0
    wait_for(lambda: _orders(rd, "blue"), what="blue trading")
    record_path = rd.dir / "control" / "mm_lite.lease.json"
    record = json.loads(record_path.read_text())
    record.update(token=record["token"] + 1, slot="green", runtime_id="mm_lite-green")  # a newer holder exists
    record_path.write_text(json.dumps(record))
    refused = wait_for(lambda: [r for r in rd.records("mm_lite-blue", in_progress=True) if r["kind"] == "order_rejected"
                                and "stale fencing token" in r["payload"]["error"]], what="a refused order")
    after = [r for r in rd.records("mm_lite-blue", in_progress=True) if r["seq"] > refused[0]["seq"]]
    assert not [r for r in after if r["kind"] == "order_ack"], "no order may reach the venue with a stale token"


def _pid(rd: RuntimeData, slot: str) -> int | None:
    try:
        return json.loads((rd.dir / "run" / f"mm_lite-{slot}.json").read_text())["pid"]
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@pytest.mark.slow
def test_a_new_slot_killed_during_the_handover_is_rolled_back_and_rollback_works_from_any_state(deployed):
    """kill -9 green as soon as it takes the lease: blue has handed over and exited, so the deploy is not done;
    it fails, saying so, and blue is started again and takes the lease back. Then blue dies too (nothing
    trading): rollback still works, from the lease's last holder."""
    import subprocess

    from runtime_support import CLI

    rd = deployed
    assert _deploy(rd, "deploy", "--to", "blue").returncode == 0
    wait_for(lambda: _orders(rd, "blue"), what="blue trading")
    proc = subprocess.Popen([*CLI, "deploy", "--to", "green", "--strategy", "mm_lite", "--speed", "60",
                             "--confirm", "20"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=rd.env(), cwd=rd.dir)
    wait_for(lambda: any(r["kind"] == "lease_acquired" for r in rd.records("mm_lite-green", in_progress=True)),
             what="green's lease")
    os.kill(_pid(rd, "green"), signal.SIGKILL)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 1, out + err
    assert "green exited (-9)" in err and "rolled back automatically: blue trading again" in err, err
    assert _token(rd) == 3  # blue 1, green 2, blue again 3
    blue_orders = _orders(rd, "blue")
    wait_for(lambda: _orders(rd, "blue") > blue_orders, what="blue trading after the rollback")

    os.kill(_pid(rd, "blue"), signal.SIGKILL)  # nothing trades now; the lease still names blue
    wait_for(lambda: _pid(rd, "blue") is None or not os.path.exists(f"/proc/{_pid(rd, 'blue')}"), what="blue gone")
    back = _deploy(rd, "rollback")
    assert back.returncode == 0, back.stderr
    assert "nobody -> green" in back.stdout and _token(rd) == 4
    wait_for(lambda: _orders(rd, "green"), what="green trading")
