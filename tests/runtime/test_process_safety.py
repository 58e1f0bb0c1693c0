"""The runtime's process edges, as an operator meets them: a busy port, a run file left by a killed runtime whose
pid now belongs to another process."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys

from runtime_support import RuntimeData, stop, wait_for


def test_a_busy_port_is_named_with_what_to_pass(runtime_data: RuntimeData):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        refused = runtime_data.cli("run", "--strategy", "mm_lite", "--port", str(port), "--runtime-id", "busy")
    assert refused.returncode == 2, refused.stderr
    assert f"127.0.0.1:{port}" in refused.stderr and "--port 0" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_stop_never_signals_a_process_that_inherited_a_dead_runtimes_pid(runtime_data: RuntimeData):
    rid = "mm-killed"
    proc = runtime_data.start("--strategy", "mm_lite", "--speed", "1", "--runtime-id", rid)
    runtime_data.port(rid, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    run_file = runtime_data.run_file(rid)
    assert run_file.exists()  # left behind by the kill
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:  # the kernel gave the dead runtime's pid to another process: the run file now names it
        info = json.loads(run_file.read_text())
        run_file.write_text(json.dumps({**info, "pid": bystander.pid}))
        out = runtime_data.cli("stop", "--runtime-id", rid)
        assert "not running (its lock is free)" in out.stdout, out.stdout + out.stderr
        assert bystander.poll() is None  # not signalled
        assert not run_file.exists()
    finally:
        bystander.kill()
        bystander.wait()

    # a live runtime is stopped as before
    from sofia_runtime import liveness

    assert liveness.running_runtimes() == []
    proc = runtime_data.start("--strategy", "mm_lite", "--speed", "1", "--runtime-id", rid)
    runtime_data.port(rid, proc)
    assert liveness.running_runtimes() == [rid]
    stopped = runtime_data.cli("stop", "--runtime-id", rid)
    assert stopped.returncode == 0 and f"{rid}: stopped" in stopped.stdout, stopped.stdout
    wait_for(lambda: proc.poll() is not None, what="the runtime to exit")
    stop(proc)


def _post(port: int, path: str, token: str | None = None) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_the_handover_endpoint_needs_the_bearer_token_and_a_slot_needs_one(runtime_data: RuntimeData):
    from runtime_support import CONTROL_TOKEN, http_get

    no_token = runtime_data.cli("run", "--strategy", "mm_lite", "--slot", "blue", "--port", "0",
                                env=runtime_data.env(SOFIA_CONTROL_TOKEN=""))
    assert no_token.returncode == 2 and "set SOFIA_CONTROL_TOKEN" in no_token.stderr

    rid = "mm_lite-blue"
    proc = runtime_data.start("--strategy", "mm_lite", "--speed", "60", "--slot", "blue", "--runtime-id", rid)
    try:
        port = runtime_data.port(rid, proc)
        wait_for(lambda: http_get(port, "/api/health")[1].get("role") == "active", what="blue active")
        assert _post(port, "/api/dev/handover?to=green")[0] == 401
        assert _post(port, "/api/dev/handover?to=green", "not-the-token")[0] == 401
        assert http_get(port, "/api/dev/status")[0] == 200  # reading stays open
        assert not any(r["kind"] == "handover" for r in runtime_data.records(rid, in_progress=True))
        code, body = _post(port, "/api/dev/handover?to=green", CONTROL_TOKEN)
        assert code == 202 and body["handover_to"] == "green"
        wait_for(lambda: any(r["kind"] == "handover" for r in runtime_data.records(rid, in_progress=True)),
                 what="the handover")
    finally:
        stop(proc)


def test_health_answers_while_the_trading_loop_is_busy(tmp_path):
    """The HTTP surface has a thread and loop of its own: with the trading loop blocked (a long burst of work
    that never yields), /api/health and /api/dev/status still answer."""
    import asyncio
    import threading
    import time
    from datetime import datetime, timedelta, timezone
    from types import SimpleNamespace

    from runtime_support import http_get
    from sofia_runtime.health import ServerThread, make_app

    engine = SimpleNamespace(snapshot_error=None, venue_error=None, role=None, runtime_id="busy-loop",
                             snapshot=SimpleNamespace(snapshot_id="s1", created_at=datetime.now(timezone.utc)),
                             status=lambda: {"runtime_id": "busy-loop"})
    answers, blocked = [], threading.Event()

    async def trading_loop():
        server = ServerThread(make_app(engine, timedelta(hours=1), lambda: True), "127.0.0.1", 0)
        port = server.start()
        try:
            def ask():
                blocked.wait()
                answers.append(http_get(port, "/api/health"))
                answers.append(http_get(port, "/api/dev/status"))
            asker = threading.Thread(target=ask)
            asker.start()
            blocked.set()
            end = time.monotonic() + 60
            while asker.is_alive() and time.monotonic() < end:  # busy, never awaiting: the loop is blocked
                pass
            asker.join()
        finally:
            server.stop()

    asyncio.run(trading_loop())
    assert answers[0] == (200, {"status": "ok", "reasons": [], "runtime_id": "busy-loop", "snapshot_id": "s1"})
    assert answers[1] == (200, {"runtime_id": "busy-loop"})
