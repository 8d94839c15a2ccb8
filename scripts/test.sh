#!/usr/bin/env bash
# Runs the whole test suite as CI does: installs the servers the tests start (redis-server,
# redis-cli, memcached), headless Chromium and chromedriver (examples/tests/browser/) when
# they are missing and the Python venv of the Sanic round trip (tests/sanic/.venv, which
# examples/tests/sanic.rs runs), then formatting, lints, docs and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v memcached >/dev/null 2>&1 || need+=(memcached)
# redis-cli creates the test cluster; Sentinels are `redis-server --sentinel`, the same binary.
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
# Debian ships `venv` with Python but `ensurepip`, which `python3 -m venv` needs, apart.
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
# Headless Chromium and its WebDriver server, for examples/tests/browser/.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Sanic on sanic-sessions, for the round trip with the examples in examples/tests/sanic.rs.
# Made once (about 15 s); installed again only when requirements.txt changes.
venv=tests/sanic/.venv
if [ ! -x "$venv/bin/python" ]; then
  echo "==> creating $venv"
  python3 -m venv "$venv"
fi
if [ ! "$venv/.installed" -nt tests/sanic/requirements.txt ]; then
  echo "==> installing tests/sanic/requirements.txt into $venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/sanic/requirements.txt
  touch "$venv/.installed"
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy (-D warnings)"
cargo clippy --workspace --all-targets --all-features -- -D warnings
echo "==> each backend alone (-D warnings)"
for feature in memory redis memcached; do
  cargo clippy -q -p actix-kv-session --no-default-features --features "$feature" -- -D warnings
done
echo "==> cargo doc (-D warnings)"
RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps --all-features
echo "==> cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --all-features 2>&1 | tee "$log" || status=$?
# One closing line for the whole run, over every test binary and the doc tests.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "summary: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
