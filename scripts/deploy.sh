#!/usr/bin/env bash
# Blue-green deploys of a runtime: status | deploy [blue|green] | rollback, then any `sofia-runtime deploy`
# options (--strategy, --deployment, --speed, --config, --mode, --venue, --order).
#   scripts/deploy.sh status --strategy mm_lite
#   scripts/deploy.sh deploy green --strategy mm_lite --speed 60
#   scripts/deploy.sh rollback --strategy mm_lite --speed 60
set -euo pipefail
cd "$(dirname "$0")/.."
RUNTIME="${SOFIA_RUNTIME_BIN:-.venv/bin/sofia-runtime}"
action="${1:-status}"; shift || true
case "$action" in
  status)   exec "$RUNTIME" deploy --status "$@" ;;
  deploy)   slot="${1:?deploy needs a slot: blue or green}"; shift; exec "$RUNTIME" deploy --to "$slot" "$@" ;;
  rollback) exec "$RUNTIME" rollback "$@" ;;
  *) echo "usage: $0 status|deploy blue|green|rollback [options]" >&2; exit 2 ;;
esac
