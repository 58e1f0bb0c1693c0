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
    proc = runtime_data.start("--strategy", "mm_lite", "--speed", "1", "--runtime-id", rid)
    runtime_data.port(rid, proc)
    stopped = runtime_data.cli("stop", "--runtime-id", rid)
    assert stopped.returncode == 0 and f"{rid}: stopped" in stopped.stdout, stopped.stdout
    wait_for(lambda: proc.poll() is not None, what="the runtime to exit")
    stop(proc)
