#!/usr/bin/env bash
# Instructions per operation of the memory store's update path and of moka's atomic update,
# counted by callgrind (bench/src/bin/memory_ops.rs says what each mode does); writes
# docs/bench/memory-ops.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p bench --bin memory_ops
n1=2000
n2=12000
out=docs/bench/memory-ops.txt
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
count() {
  valgrind --tool=callgrind --callgrind-out-file="$tmp/out" target/release/memory_ops "$1" "$2" >/dev/null 2>&1
  awk '/^(summary|totals):/ { print $2; exit }' "$tmp/out"
}
declare -A per
for mode in load load-update load-load load-load-update moka-get moka-get-compute; do
  a=$(count "$mode" "$n1")
  b=$(count "$mode" "$n2")
  per[$mode]=$(( (b - a) / (n2 - n1) ))
done
{
  echo "# Instructions per repetition (valgrind callgrind), bench/memory_ops.sh, $(date -u +%F)"
  for mode in load load-update load-load load-load-update moka-get moka-get-compute; do
    printf '%-18s %8d\n' "$mode" "${per[$mode]}"
  done
  echo "# The update alone:"
  printf 'update after a load of the same session     %6d\n' $(( per[load-update] - per[load] ))
  printf 'update after a load of another session      %6d\n' $(( per[load-load-update] - per[load-load] ))
  printf "update with moka's entry().and_compute_with %6d\n" $(( per[moka-get-compute] - per[moka-get] ))
} | tee "$out"
