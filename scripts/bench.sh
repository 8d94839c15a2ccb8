#!/usr/bin/env bash
# The side-by-side benchmark: bare actix-web, the same session features by hand, hand-written
# Redis, this crate's three stores (both conflict policies), actix-session (cookie, Redis) and
# Python's sanic_session (in-memory, Redis), each on /noop, /counter and /read. Prints the
# table, the ratios, lost updates and the memory store's bytes per session, and writes them to
# docs/bench/ with a chart. A full run is 16 kinds x 3 routes x 3 rounds x 5 s of wrk (12
# minutes), plus start-up and the memory probe.
#
#   scripts/bench.sh                       # full run (about 15 minutes)
#   scripts/bench.sh --seconds 2 --rounds 1 --memory-sessions 100000   # quick look
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v memcached >/dev/null 2>&1 || need+=(memcached)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
python3 -c 'import venv' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --release -q -p bench --bins

if [ ! -x bench/.venv/bin/python ]; then
  python3 -m venv bench/.venv
  bench/.venv/bin/pip install -q "sanic==25.12.1" "sanic-sessions==0.9.0" ujson "redis>=5" matplotlib
fi

exec bench/.venv/bin/python bench/run.py "$@"
