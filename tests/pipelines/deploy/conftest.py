"""A throwaway PostgreSQL server for the production instance's test: Debian's binaries, a temporary data
folder, a free port on 127.0.0.1, password authentication. Skips, saying why, where it cannot start."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    db: str

    def env(self) -> dict[str, str]:
        """The variables deploy/dagster.yaml reads."""
        return {"DAGSTER_PG_HOST": self.host, "DAGSTER_PG_PORT": str(self.port), "DAGSTER_PG_USER": self.user,
                "DAGSTER_PG_PASSWORD": self.password, "DAGSTER_PG_DB": self.db}


def _bin_dir() -> Path | None:
    """The newest Debian PostgreSQL, else whatever initdb is on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_server():
    bindir = _bin_dir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: .ci/postgres.sh installs "
                    "Debian's postgresql package")
    pytest.importorskip("psycopg2", reason="psycopg2 (a dependency of dagster-postgres) is not installed")
    # PostgreSQL refuses to run as root: run it as the `postgres` user the Debian package creates.
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run the server as")
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root and runuser (util-linux) is missing to run the server as `postgres`")
        as_user = [runuser, "-u", "postgres", "--"]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=60)

    root = Path(tempfile.mkdtemp(prefix="sofia-pg-"))  # not under pytest's 0700 tmp, which postgres can't enter
    if owner:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    server = PostgresServer(host="127.0.0.1", port=_free_port(), user="sofia", password="sofia-test-pw", db="dagster")
    pwfile = root / "pw"
    pwfile.write_text(server.password)
    if owner:
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    data = root / "data"
    started = False
    try:
        init = run(str(bindir / "initdb"), "-D", str(data), "-U", server.user, f"--pwfile={pwfile}",
                   "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync")
        if init.returncode != 0:
            pytest.skip(f"initdb failed: {init.stderr.strip()[-500:]}")
        options = (f"-p {server.port} -k {root} -c listen_addresses={server.host} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        start = run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "30",
                    "-o", options, "start")
        if start.returncode != 0:
            log = (root / "log").read_text() if (root / "log").exists() else ""
            pytest.skip(f"PostgreSQL did not start: {start.stderr.strip()[-300:]} {log[-500:]}")
        started = True

        import psycopg2

        conn = psycopg2.connect(host=server.host, port=server.port, user=server.user, password=server.password,
                                dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {server.db}")
        conn.close()
        yield server
    finally:
        if started:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)
