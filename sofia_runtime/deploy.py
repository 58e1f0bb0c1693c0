"""Blue-green deploys of a runtime (feature L): `sofia-runtime deploy --to green`, `rollback`, `status`.

A deploy starts the target slot as a standby on the code and snapshot as they are now, waits for its
/api/health, then asks the active slot to hand over (POST /api/dev/handover): the active slot stops new
orders, lets in-flight orders land, cancels resting ones, journals the handover and releases the lease; the
standby takes the lease with the next fencing token and trades. If the standby never becomes healthy the
deploy is aborted and the active slot keeps trading, untouched.

The journals are the measurement: the handover gap is the time between the last decision of the old slot and
the first of the new one, and the trading intervals ([lease_acquired, handover]) of the slots never overlap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sofia_runtime import paths
from sofia_runtime.auth import bearer_header
from sofia_runtime.journal import journal_files, read_records
from sofia_runtime.lease import read_lease

SLOTS = ("blue", "green")


class DeployError(RuntimeError):
    pass


def other(slot: str) -> str:
    return "green" if slot == "blue" else "blue"


def runtime_id(deployment: str, slot: str) -> str:
    return f"{deployment}-{slot}"


def lease_path(deployment: str) -> Path:
    return paths.control_dir() / f"{deployment}.lease.json"


def run_info(deployment: str, slot: str) -> dict | None:
    path = paths.data_dir() / "run" / f"{runtime_id(deployment, slot)}.json"
    try:
        info = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    try:
        os.kill(info["pid"], 0)
    except ProcessLookupError:
        return None
    return info


def _http(port: int, path: str, method: str = "GET", timeout: float = 10.0) -> tuple[int, dict]:
    headers = bearer_header() if method != "GET" else {}
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def active_slot(deployment: str) -> str | None:
    record = read_lease(lease_path(deployment))
    if record is None or record.released_at is not None:
        return None
    return record.slot if run_info(deployment, record.slot) else None


@dataclass
class Handover:
    deployment: str
    from_slot: str | None
    to_slot: str
    token: int
    gap_s: float | None  # last decision of the old slot -> first decision of the new one
    overlap: bool  # did the two slots' trading intervals overlap (must never)


def start_slot(deployment: str, slot: str, run_args: list[str], env: dict | None = None) -> subprocess.Popen:
    """`sofia-runtime run --slot SLOT` in the background, its output in <data>/run/<runtime_id>.log."""
    log = paths.data_dir() / "run" / f"{runtime_id(deployment, slot)}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "sofia_runtime.cli", "run", "--slot", slot,
                                 "--deployment", deployment, *run_args],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_healthy(deployment: str, slot: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no run file yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = paths.data_dir() / "run" / f"{runtime_id(deployment, slot)}.log"
            tail = log.read_text()[-600:] if log.exists() else ""
            raise DeployError(f"{slot} exited with {proc.returncode} before it was healthy: {tail.strip()}")
        info = run_info(deployment, slot)
        if info:
            try:
                code, body = _http(info["port"], "/api/health")
                if code == 200:
                    return
                last = "; ".join(body.get("reasons", [])) or f"HTTP {code}"
            except OSError as exc:
                last = str(exc)
        time.sleep(0.05)
    raise DeployError(f"{slot} not healthy after {timeout:g} s: {last}")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def deploy(deployment: str, to_slot: str, run_args: list[str], health_timeout: float = 30.0,
           takeover_timeout: float = 30.0, confirm_s: float = 10.0, env: dict | None = None) -> Handover:
    """Start `to_slot` as standby, wait for its health, hand over from the active slot, then confirm: the deploy
    is done only once the new slot has held the lease and stayed alive and healthy for `confirm_s`. Before the
    handover, a new slot that is not healthy is stopped and the active slot trades on. After it (the old slot has
    handed over and exited), a new slot that dies, loses the lease or turns unhealthy is stopped and the old slot
    is started again to take the lease back (automatic rollback). Either way: DeployError saying who trades."""
    if to_slot not in SLOTS:
        raise DeployError(f"slot must be blue or green, not {to_slot!r}")
    current = active_slot(deployment)
    if current == to_slot:
        raise DeployError(f"{to_slot} is already the active slot of {deployment}")
    if run_info(deployment, to_slot):
        raise DeployError(f"{to_slot} is already running (as a standby?): stop it first")
    before = read_lease(lease_path(deployment))
    proc = start_slot(deployment, to_slot, run_args, env)
    try:
        wait_healthy(deployment, to_slot, proc, health_timeout)
    except DeployError as exc:
        _stop(proc)
        raise DeployError(f"deploy of {deployment} to {to_slot} aborted, "
                          f"{current or 'no slot'} still trading: {exc}") from None
    if current:
        info = run_info(deployment, current)
        code, body = _http(info["port"], f"/api/dev/handover?to={to_slot}", method="POST")
        if code != 202:
            _stop(proc)
            raise DeployError(f"deploy of {deployment} to {to_slot} aborted, {current} refused the handover "
                              f"(HTTP {code} {body}) and still trades")
    try:
        record = _wait_takeover(deployment, to_slot, proc, before, takeover_timeout)
        _confirm(deployment, to_slot, proc, record.token, confirm_s)
    except DeployError as exc:
        _stop(proc)
        if not current:
            raise DeployError(f"deploy of {deployment} to {to_slot} failed: {exc}; no slot is trading") from None
        back = _take_back(deployment, current, run_args, health_timeout, env)
        raise DeployError(f"deploy of {deployment} to {to_slot} failed: {exc}; rolled back automatically: "
                          f"{back}") from None
    gap = measure(deployment, current, to_slot, wait_s=10.0) if current else (None, False)
    return Handover(deployment, current, to_slot, record.token, gap[0], gap[1])


def _wait_takeover(deployment: str, slot: str, proc: subprocess.Popen, before, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = read_lease(lease_path(deployment))
        if record and record.slot == slot and record.released_at is None and \
                (before is None or record.token > before.token):
            return record
        if proc.poll() is not None:
            raise DeployError(f"{slot} exited ({proc.returncode}) before taking the lease")
        time.sleep(0.02)
    raise DeployError(f"{slot} did not take the lease within {timeout:g} s")


def _confirm(deployment: str, slot: str, proc: subprocess.Popen, token: int, confirm_s: float) -> None:
    """`slot` holds lease `token`, runs and answers healthy throughout `confirm_s` (HTTP errors are retried;
    a health that stays unanswered or unhealthy for half the period fails it)."""
    deadline = time.monotonic() + confirm_s
    last_ok = time.monotonic()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DeployError(f"{slot} exited ({proc.returncode}) within {confirm_s:g} s of taking the lease")
        record = read_lease(lease_path(deployment))
        if record is None or record.token != token or record.released_at is not None:
            raise DeployError(f"{slot} no longer holds the lease it took (token {token})")
        info = run_info(deployment, slot)
        try:
            code, body = _http(info["port"], "/api/health", timeout=5.0) if info else (None, {})
        except OSError:
            code, body = None, {}
        if code == 200:
            last_ok = time.monotonic()
        elif time.monotonic() - last_ok > max(confirm_s / 2, 1.0):
            raise DeployError(f"{slot} not healthy while confirming: {'; '.join(body.get('reasons', [])) or code}")
        time.sleep(0.1)


def _take_back(deployment: str, slot: str, run_args: list[str], health_timeout: float, env: dict | None) -> str:
    """Start `slot` again; it takes the free lease. Says who trades now."""
    proc = start_slot(deployment, slot, run_args, env)
    try:
        wait_healthy(deployment, slot, proc, health_timeout)
        record = _wait_takeover(deployment, slot, proc, None, health_timeout)
    except DeployError as exc:
        _stop(proc)
        return f"{slot} could not take the lease back ({exc}): NO SLOT IS TRADING"
    return f"{slot} trading again (fencing token {record.token})"


def rollback_target(deployment: str) -> str:
    """The slot a rollback goes to, from any state the lease can be in: the other one than the active slot; with
    none active (the holder died, or handed over and its successor died), the other one than the lease's last
    holder."""
    current = active_slot(deployment)
    if current:
        return other(current)
    record = read_lease(lease_path(deployment))
    if record is None:
        raise DeployError(f"{deployment} was never deployed: nothing to roll back to (use deploy --to blue|green)")
    return other(record.slot)


def _records(deployment: str, slot: str) -> list[dict]:
    return [rec for _, _, rec in read_records(journal_files(paths.audit_dir() / runtime_id(deployment, slot)),
                                              in_progress=True)]


def trading_intervals(records: list[dict]) -> list[tuple[datetime, datetime | None]]:
    """[lease_acquired, handover or lease_released) per tenure of a slot; None = still trading."""
    out, opened = [], None
    for rec in records:
        ts = datetime.fromisoformat(rec["ts"])
        if rec["kind"] == "lease_acquired":
            opened = ts
        elif rec["kind"] in ("handover", "lease_released") and opened is not None:
            out.append((opened, ts))
            opened = None
    if opened is not None:
        out.append((opened, None))
    return out


def orders_outside_lease(records: list[dict]) -> list[int]:
    """Seqs of `order` records journaled while the slot did not hold the lease (must be none)."""
    held, bad = False, []
    for rec in records:
        if rec["kind"] == "lease_acquired":
            held = True
        elif rec["kind"] in ("handover", "lease_released", "standby"):
            held = False
        elif rec["kind"] == "order" and not held:
            bad.append(rec["seq"])
    return bad


def measure(deployment: str, old: str, new: str, wait_s: float = 0.0) -> tuple[float | None, bool]:
    """(handover gap in seconds, whether the slots' trading intervals overlapped), from their journals."""
    deadline = time.monotonic() + wait_s
    while True:
        old_recs, new_recs = _records(deployment, old), _records(deployment, new)
        handovers = [r for r in old_recs if r["kind"] == "handover"]
        last_old = [r for r in old_recs if r["kind"] == "decision" and handovers and r["seq"] < handovers[-1]["seq"]]
        took = [r for r in new_recs if r["kind"] == "lease_acquired"]
        first_new = [r for r in new_recs if r["kind"] == "decision" and took and r["seq"] > took[-1]["seq"]]
        if (last_old and first_new) or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    gap = None
    if last_old and first_new:
        gap = (datetime.fromisoformat(first_new[0]["ts"]) - datetime.fromisoformat(last_old[-1]["ts"])).total_seconds()
    return gap, intervals_overlap(trading_intervals(old_recs) + trading_intervals(new_recs))


def intervals_overlap(intervals: list[tuple[datetime, datetime | None]]) -> bool:
    ordered = sorted(intervals, key=lambda iv: iv[0])
    for (s1, e1), (s2, _) in zip(ordered, ordered[1:]):
        if e1 is None or s2 < e1:
            return True
    return False


def status(deployment: str) -> dict:
    record = read_lease(lease_path(deployment))
    out = {"deployment": deployment, "lease": record.__dict__ if record else None, "slots": {}}
    for slot in SLOTS:
        info = run_info(deployment, slot)
        if info is None:
            out["slots"][slot] = {"running": False}
            continue
        try:
            code, health = _http(info["port"], "/api/health")
        except OSError as exc:
            code, health = None, {"reasons": [str(exc)]}
        out["slots"][slot] = {"running": True, "pid": info["pid"], "port": info["port"], "health": code,
                              "role": health.get("role"), "reasons": health.get("reasons", [])}
    return out
