#!/usr/bin/env bash
# Old vs new binary in the same run, with the HAProxy anchor: keep-alive and new-connection mTLS
# rows of the shared harness (32 connections), interleaved per round (anchor, old, new, anchor,
# old, new, ...) so a slow spell of the machine does not hit one binary only; then, unless
# MEMORY=0, RSS with N idle keep-alive mTLS connections for both (bench/extras.sh `memory`).
#
#   OLD=/tmp/bins/old NEW=target/release/m2m-auth-proxy bench/compare.sh
#
# The same binary on two request paths: OLD=NEW=bin PATHS="pipeline lean" NAMES="pipe lean".
# Knobs: PATHS (`request_path` of old and new; unset: the binary's default), ROUNDS (2), DURATION (10 s), NS ("1000 5000"), MEMORY (1), NAMES ("old new"; row
# names, [a-z0-9] only), WORK (/tmp/proxybench). Tools: bench/run.sh's (run it once first, or
# ../shared/bench/setup.sh). Copy the binaries somewhere stable first if a build may replace
# them during the run. Prints one markdown table; raw results stay in $OUT.
set -uo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
SHARED=${SHARED:-$(cd "$ROOT/../shared/bench" && pwd)}
: "${OLD:?OLD=path of the old binary}" "${NEW:?NEW=path of the new binary}"
read -r NAME_OLD NAME_NEW <<< "${NAMES:-old new}"
read -r PATH_OLD PATH_NEW <<< "${PATHS:-}"
export WORK=${WORK:-/tmp/proxybench} DURATION=${DURATION:-10} WARMUP=${WARMUP:-2} REPEATS=1 WAIT_IDLE=${WAIT_IDLE:-30}
OUT=${OUT:-$WORK/results/compare-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
for b in "$OLD" "$NEW"; do [ -x "$b" ] || { log "not executable: $b"; exit 1; }; done

harness() { # tag, then env for the shared run.sh
  local tag=$1; shift
  env "$@" bash "$SHARED/run.sh" > "$OUT/$tag.md" 2> "$OUT/$tag.log" || { log "harness failed: $OUT/$tag.log"; return 1; }
  cp "$(ls -1d "$WORK"/results/2* | tail -1)/runs.tsv" "$OUT/$tag.tsv"
}

for ((r = 1; r <= ${ROUNDS:-2}; r++)); do
  log "round $r: haproxy"
  harness "haproxy-$r" ONLY='^(haproxy-mtls-san|haproxy-mtls-san-newconn)$' || exit 1
  for side in "$NAME_OLD:$OLD:${PATH_OLD:-}" "$NAME_NEW:$NEW:${PATH_NEW:-}"; do
    IFS=: read -r name bin path <<< "$side"
    log "round $r: $name"
    harness "$name-$r" ONLY="^($name-mtls|$name-mtls-newconn)\$" PROXY_NAME="$name" PROXY_MODES=mtls \
      M2M_BIN="$bin" REQUEST_PATH="$path" PROXY_CMD="exec $BENCH/project-proxy.sh" || exit 1
  done
done

if [ "${MEMORY:-1}" = 1 ]; then
  for side in "$NAME_OLD:$OLD:${PATH_OLD:-}" "$NAME_NEW:$NEW:${PATH_NEW:-}"; do
    IFS=: read -r name bin path <<< "$side"
    log "memory: $name"
    ONLY='^memory$' NS="${NS:-1000 5000}" M2M_BIN="$bin" REQUEST_PATH="$path" OUT="$OUT/mem-$name" \
      bash "$BENCH/extras.sh" > /dev/null 2> "$OUT/mem-$name.log"
  done
fi

{
  echo "| row | round | req/s | p50 ms | p99 ms | proxy CPU µs/req | CPU% proxy/upstream/oha/other |"
  echo "|---|---|---|---|---|---|---|"
  # runs.tsv (../shared/bench/table.py): id label round req/s p50 p99 ok total check cpu%
  # proxy/upstream/oha/other note; proxy CPU per request = proxy% of one core / req/s
  for f in "$OUT"/*-[0-9]*.tsv; do
    tag=$(basename "$f" .tsv)
    awk -F'\t' -v tag="$tag" '{ printf "| %s | %s | %.0f | %s | %s | %.1f | %s/%s/%s/%s |\n",
      $1, tag, $4, $5, $6, ($4 > 0 ? $10 * 10000 / $4 : 0), $10, $11, $12, $13 }' "$f"
  done | sort
  if [ "${MEMORY:-1}" = 1 ]; then
    echo
    echo "| binary | N idle mTLS connections | idle RSS after 1 request kB | RSS held kB | per connection KiB |"
    echo "|---|---|---|---|---|"
    for name in "$NAME_OLD" "$NAME_NEW"; do
      # memory.tsv: name N opened bad errors estab r0 r1 held closed still
      awk -F'\t' -v n="$name" '$2 ~ /^[0-9]+$/ { printf "| %s | %s | %s | %s | %.1f |\n", n, $2, $8, $9, ($9 - $8) / $2 }' \
        "$OUT/mem-$name/memory.tsv" 2>/dev/null
    done
  fi
} | tee "$OUT/table.md"
log "results in $OUT"
