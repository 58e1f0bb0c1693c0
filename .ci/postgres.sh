#!/usr/bin/env bash
# Makes PostgreSQL's server binaries available for tests/pipelines/deploy/test_postgres_instance.py, which
# starts its own throwaway server (initdb + pg_ctl on a free port). Installs Debian's `postgresql` package
# when they are missing. Never fails the build: without a server the test skips and says why.
set -u

if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    echo "postgres.sh: PostgreSQL server binaries present: $(ls -d /usr/lib/postgresql/*/bin | tr '\n' ' ')"
    exit 0
fi
if ! command -v apt-get >/dev/null || [ "$(id -u)" != 0 ]; then
    echo "postgres.sh: no PostgreSQL server binaries and no way to install them (needs apt-get as root);" \
         "the PostgreSQL instance test will skip"
    exit 0
fi

echo "postgres.sh: installing Debian's postgresql package"
export DEBIAN_FRONTEND=noninteractive
if apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql >/dev/null; then
    # The package creates and starts a `main` cluster; the test runs its own server, so stop it.
    if command -v pg_lsclusters >/dev/null; then
        pg_lsclusters --no-header 2>/dev/null | awk '$4 == "online" {print $1, $2}' | while read -r ver name; do
            pg_ctlcluster "$ver" "$name" stop || true
        done
    fi
    echo "postgres.sh: installed $(ls -d /usr/lib/postgresql/*/bin | tr '\n' ' ')"
else
    echo "postgres.sh: installing postgresql failed; the PostgreSQL instance test will skip"
fi
exit 0
