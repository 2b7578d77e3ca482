#!/usr/bin/env bash
# Old vs new binary in the same run, with the HAProxy anchor: the keep-alive mTLS rows at
# `threads: 1` and 2, new connections (full and resumed) and the egress row of bench/harness.sh,
# rounds interleaved (anchor, old, new, anchor, old, new, ...) so that a slow spell of the
# machine does not hit one binary only; then, unless MEMORY=0, bench/memory.sh for both (RSS
# with N idle keep-alive mTLS connections, idle RSS, the slow-loris burst). One table.
#
#   OLD_REF=main bench/compare.sh                   # builds main's and the checkout's binaries
#   OLD=/tmp/bins/old NEW=/tmp/bins/new bench/compare.sh
#
# OLD_REF / NEW_REF: a git ref of this repository, exported (git archive) under WORK and built
# in REF_TARGET_DIR (WORK/target-refs: the first build compiles the dependencies, later ones
# only the project's crate; never the checkout's target dir, whose binary cargo would then take
# for up to date); NEW defaults to the checkout, built as usual. Binaries are copied to WORK/bins
# so that a later build cannot replace them during the run. Installs what is missing (bench/setup.sh) unless
# SKIP_SETUP=1. Knobs: ROUNDS (2), DURATION (10), NS ("1000 5000"), MEMORY (1), MODES (harness
# rows of ours: "mtls mtls-t2 mtls-resumed egress"), NAMES ("old new"; [a-z0-9] only), WORK.
set -uo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
export WORK=${WORK:-/tmp/proxybench}
read -r NAME_OLD NAME_NEW <<< "${NAMES:-old new}"
OUT=${OUT:-$WORK/results/compare-$(date +%Y%m%d-%H%M%S)}
BINS=$WORK/bins
mkdir -p "$OUT" "$BINS"
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
CHILD=
trap '[ -n "$CHILD" ] && kill -TERM "$CHILD" 2>/dev/null; wait 2>/dev/null; exit 130' INT TERM
step() { "$@" & CHILD=$!; wait "$CHILD"; local rc=$?; CHILD=; return $rc; }

[ "${SKIP_SETUP:-0}" = 1 ] || bash "$BENCH/setup.sh" || { log "setup failed"; exit 1; }
TARGET_DIR=${CARGO_TARGET_DIR:-target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
REF_TARGET_DIR=${REF_TARGET_DIR:-$WORK/target-refs}

build_ref() { # ref -> path of a copy of its release binary
  local sha src
  sha=$(git -C "$ROOT" rev-parse --short "$1^{commit}") || { log "unknown ref $1"; return 1; }
  src=$WORK/src-$sha
  if [ ! -d "$src" ]; then   # an export of the commit (no worktree registered in the repository)
    mkdir -p "$src.tmp" && git -C "$ROOT" archive "$sha" | tar -x -C "$src.tmp" && mv "$src.tmp" "$src" || return 1
  fi
  # cargo decides by modification times: make the sources newer than the other ref's build
  find "$src" -type f -exec touch {} +
  log "building $1 ($sha) in $src, target dir $REF_TARGET_DIR"
  (cd "$src" && CARGO_TARGET_DIR=$REF_TARGET_DIR cargo build --release --quiet) >&2 || return 1
  cp "$REF_TARGET_DIR/release/m2m-auth-proxy" "$BINS/m2m-auth-proxy-$sha"
  echo "$BINS/m2m-auth-proxy-$sha"
}
if [ -z "${OLD:-}" ]; then
  [ -n "${OLD_REF:-}" ] || { log "set OLD=<binary> or OLD_REF=<git ref>"; exit 2; }
  OLD=$(build_ref "$OLD_REF") || { log "build of $OLD_REF failed"; exit 1; }
fi
if [ -z "${NEW:-}" ]; then
  if [ -n "${NEW_REF:-}" ]; then
    NEW=$(build_ref "$NEW_REF") || { log "build of $NEW_REF failed"; exit 1; }
  else
    log "cargo build --release (the checkout)"
    (cd "$ROOT" && cargo build --release --quiet) || { log "build failed"; exit 1; }
    NEW=$BINS/m2m-auth-proxy-checkout
    cp "$TARGET_DIR/release/m2m-auth-proxy" "$NEW"
  fi
fi
for b in "$OLD" "$NEW"; do [ -x "$b" ] || { log "not executable: $b"; exit 1; }; done
log "$NAME_OLD = $OLD, $NAME_NEW = $NEW"

export DURATION=${DURATION:-10} WARMUP=${WARMUP:-2} WAIT_IDLE=${WAIT_IDLE:-30} NS=${NS:-1000 5000}
MODES=${MODES:-mtls mtls-t2 mtls-resumed egress}
ids="haproxy-mtls-san|haproxy-mtls-san-newconn|haproxy-mtls-san-t2"
for n in "$NAME_OLD" "$NAME_NEW"; do ids+="|$n-mtls|$n-mtls-newconn|$n-mtls-t2|$n-mtls-newconn-resumed|$n-egress"; done
log "harness: $MODES, ${ROUNDS:-2} rounds of ${DURATION}s; log $OUT/harness.log"
step env OUT="$OUT/harness" ONLY="^($ids)\$" PROJECTS="$NAME_OLD=$OLD $NAME_NEW=$NEW" MODES="$MODES" \
  REPEATS="${ROUNDS:-2}" bash "$BENCH/harness.sh" > /dev/null 2> "$OUT/harness.log" ||
  { log "harness failed"; tail -15 "$OUT/harness.log" >&2; exit 1; }
if [ "${MEMORY:-1}" = 1 ]; then
  log "memory: N $NS and the burst; log $OUT/memory.log"
  step env OUT="$OUT/memory" PROXIES="$NAME_OLD=$OLD $NAME_NEW=$NEW" bash "$BENCH/memory.sh" > /dev/null 2> "$OUT/memory.log" ||
    { log "memory failed"; tail -15 "$OUT/memory.log" >&2; }
fi
{
  echo "old ($NAME_OLD): $OLD"
  echo "new ($NAME_NEW): $NEW"
  echo
  python3 "$BENCH/tables.py" compare "$OUT/harness/runs.tsv" "$OUT/memory/memory.tsv" "$OUT/memory/burst.tsv" \
    "$NAME_OLD" "$NAME_NEW"
  echo "### Every row"
  echo
  grep '^|' "$OUT/harness/table.md"
} | tee "$OUT/table.md"
log "results in $OUT"
