#!/usr/bin/env bash
# Instructions per oneM2M WebSocket message through the gate (Gate::on_client_data: unmask,
# strict decode, policy, canonical re-encode, re-mask), counted by callgrind, which is immune to
# the load of a shared machine. Needs valgrind. GATE_EGRESS=127.0.0.1:8081 gives the gate an
# egress listener to look for (issue 27.1); http_* cases count the ingress's request-body work.
#   cargo bench --bench gate_callgrind --no-run
#   bench/gate_cost.sh [DRIVER-BINARY] [MESSAGES]   # default: newest gate_callgrind driver, 2000
set -euo pipefail
target=${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target}
bin=${1:-$(ls -t "$target"/release/deps/gate_callgrind-* | grep -v '\.d$' | head -1)}
n=${2:-2000}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "driver: $bin, $n messages per case"
"$bin" | while read -r case size; do
  # http_* cases: the ingress's work on a request body (issue 27.1)
  case $case in http_*) collect='*http_body*' ;; *) collect='*Gate*on_client_data*' ;; esac
  valgrind --tool=callgrind --callgrind-out-file="$out/$case" \
    --toggle-collect="$collect" "$bin" "$case" "$n" >/dev/null 2>&1
  ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$out/$case")
  printf '%-20s %-14s %8d instructions per message\n' "$case" "$size" "$((ir / n))"
done
