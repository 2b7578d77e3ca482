#!/usr/bin/env bash
# One command, from a clone: install what is missing (bench/setup.sh), build the release binary,
# and measure m2m-auth-proxy side by side with the HAProxy and nginx anchors in the same run:
# bench/harness.sh (keep-alive and new-connection mTLS, 2 threads, resumed, Basic, egress),
# bench/extras.sh (Bearer, 100 000-entry files, reload under load, 1 vs 100 CAs, resumption),
# bench/memory.sh (idle RSS, N idle connections, the slow-loris burst). Prints the machine and
# the tables; keeps small text results in bench/results/<stamp>/ (raw oha JSON and logs under
# $WORK/results/<stamp>/).
#
#   bench/run.sh              # full: 2 rounds of 10 s, N = 1000 and 5000; ~15 min on 2 quiet CPUs
#   QUICK=1 bench/run.sh      # every row once, briefly (1 round of 5 s); ~6-10 min
#   SYSSSL=1 bench/run.sh     # also a build against Debian's OpenSSL 3.0 (OPENSSL_NO_VENDOR=1, into
#                             # SYSSSL_TARGET) and its mTLS rows
# Knobs: SKIP_SETUP=1, SKIP_BUILD=1, WORK (/tmp/proxybench), CARGO_TARGET_DIR (honoured), and
# the scripts' own (DURATION, WARMUP, REPEATS, CONC, WAIT_IDLE, NS, ONLY, SKIP, ...).
# Everything runs on 127.0.0.1; every process started is stopped (each script traps).
set -uo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
export WORK=${WORK:-/tmp/proxybench}
QUICK=${QUICK:-0}
SYSSSL=${SYSSSL:-0}
SYSSSL_TARGET=${SYSSSL_TARGET:-$WORK/target-sysssl}
STAMP=$(date +%Y%m%d-%H%M%S)$([ "$QUICK" = 1 ] && echo -quick)
RESULTS=$BENCH/results/$STAMP
RAW=$WORK/results/$STAMP
mkdir -p "$RESULTS" "$RAW"
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
T0=$SECONDS

CHILD=
trap '[ -n "$CHILD" ] && kill -TERM "$CHILD" 2>/dev/null; wait 2>/dev/null; exit 130' INT TERM
# run a step in the background so that INT/TERM reach its own cleanup trap
step() { "$@" & CHILD=$!; wait "$CHILD"; local rc=$?; CHILD=; return $rc; }

# ---------------------------------------------------------------- tools
if [ "${SKIP_SETUP:-0}" != 1 ]; then
  bash "$BENCH/setup.sh" || { log "setup failed"; exit 1; }
  if [ "$SYSSSL" = 1 ] && ! dpkg -s libssl-dev > /dev/null 2>&1; then
    $([ "$(id -u)" = 0 ] || echo sudo) apt-get install -y -qq libssl-dev pkg-config >&2
  fi
fi
TOOLS=${TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/m2m-auth-proxy-bench}
OHA=${OHA:-$TOOLS/bin/oha}

# ---------------------------------------------------------------- build
TARGET_DIR=${CARGO_TARGET_DIR:-target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
BIN=$TARGET_DIR/release/m2m-auth-proxy
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "cargo build --release (target dir $TARGET_DIR)"
  (cd "$ROOT" && cargo build --release --quiet) || { log "build failed"; exit 1; }
  if [ "$SYSSSL" = 1 ]; then
    log "cargo build --release with Debian's OpenSSL (OPENSSL_NO_VENDOR=1, target $SYSSSL_TARGET)"
    (cd "$ROOT" && OPENSSL_NO_VENDOR=1 CARGO_TARGET_DIR=$SYSSSL_TARGET cargo build --release --quiet) ||
      { log "system-OpenSSL build failed"; exit 1; }
  fi
fi
[ -x "$BIN" ] || { log "no $BIN"; exit 1; }
SYSBIN=
[ "$SYSSSL" = 1 ] && SYSBIN=$SYSSSL_TARGET/release/m2m-auth-proxy
T_BUILD=$((SECONDS - T0))

# ---------------------------------------------------------------- machine description
openssl_of() { # binary -> OpenSSL version it runs with
  if ldd "$1" 2> /dev/null | grep -q 'libssl\.so'; then
    echo "system $(openssl version | cut -d' ' -f1-2) (dynamically linked)"
  else
    echo "vendored $(grep -aoE 'OpenSSL [0-9]+\.[0-9]+\.[0-9]+[a-z-]*' "$1" | head -1) (static, openssl-src)"
  fi
}
{
  echo "date: $(date -Is)"
  echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
  echo "kernel: $(uname -srm)"
  echo "os: $(. /etc/os-release; echo "$PRETTY_NAME")"
  echo "rustc: $(rustc --version)"
  echo "m2m-auth-proxy: $(cd "$ROOT" && git rev-parse --short HEAD 2> /dev/null)$(cd "$ROOT" && git diff --quiet HEAD 2> /dev/null || echo ' (+ uncommitted changes)'), pingora $(grep -A1 '^name = "pingora-core"' "$ROOT/Cargo.lock" | sed -n 's/version = "\(.*\)"/\1/p')"
  echo "binary: $BIN, built $(date -r "$BIN" -Is)"
  echo "OpenSSL of the build: $(openssl_of "$BIN")"
  [ -n "$SYSBIN" ] && echo "OpenSSL of the sysssl build: $(openssl_of "$SYSBIN")"
  echo "anchors: $(nginx -v 2>&1 | cut -d' ' -f3), njs $(dpkg-query -W -f='${Version}' libnginx-mod-http-js 2> /dev/null), $(haproxy -v | head -1 | cut -d' ' -f1-3), system $(openssl version | cut -d' ' -f1-2)"
  echo "load generator: $("$OHA" --version) ($OHA)"
  echo "layout: proxy + upstream on CPU ${PROXY_CPUS:-0} (2-thread rows: ${PROXY_CPUS_T2:-0,1}), oha on CPU ${LOADGEN_CPUS:-1}, ${CONC:-32} connections, 127.0.0.1"
  echo "mode: $([ "$QUICK" = 1 ] && echo QUICK || echo full); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$RESULTS/machine.txt"
cat "$RESULTS/machine.txt" >&2

# ---------------------------------------------------------------- the rows
if [ "$QUICK" = 1 ]; then
  export DURATION=${DURATION:-5} WARMUP=${WARMUP:-1} REPEATS=${REPEATS:-1} WAIT_IDLE=${WAIT_IDLE:-5}
  export RESUME_SECS=${RESUME_SECS:-2} NS=${NS:-1000 5000} NS_ANCHORS=${NS_ANCHORS:-1000}
else
  export DURATION=${DURATION:-10} WARMUP=${WARMUP:-2} REPEATS=${REPEATS:-2} WAIT_IDLE=${WAIT_IDLE:-30}
  export NS=${NS:-1000 5000} NS_ANCHORS=${NS_ANCHORS:-5000}
fi
export M2M_BIN=$BIN OHA TOOLS
fail=0
run_part() { # name script env... : one part, its log in RAW, its output dir RAW/name
  local name=$1 script=$2; shift 2
  log "$name ($script); log $RAW/$name.log"
  step env OUT="$RAW/$name" "$@" bash "$BENCH/$script" > /dev/null 2> "$RAW/$name.log" ||
    { log "$name failed:"; tail -15 "$RAW/$name.log" >&2; fail=1; }
}
run_part harness harness.sh PROJECTS="m2m=$BIN"
T_HARNESS=$((SECONDS - T0))
run_part extras extras.sh M2M_BIN_SYSSSL="$SYSBIN"
run_part memory memory.sh PROXIES="m2m=$BIN nginx haproxy" BURST=m2m
for f in harness/runs.tsv harness/table.md extras/runs.tsv extras/table.md extras/resumption.txt extras/reload.txt \
         memory/memory.tsv memory/burst.tsv memory/memory.md; do
  [ -e "$RAW/$f" ] && cp "$RAW/$f" "$RESULTS/${f/\//-}"
done

# ---------------------------------------------------------------- tables
{
  echo "## m2m-auth-proxy benchmark $STAMP$([ "$QUICK" = 1 ] && echo ' (QUICK: one short round, numbers indicative only)')"
  echo
  sed 's/^/    /' "$RESULTS/machine.txt"
  echo
  python3 "$BENCH/tables.py" summary "$RESULTS/harness-runs.tsv" "$RESULTS/extras-runs.tsv" \
    "$RESULTS/memory-memory.tsv" "$RESULTS/memory-burst.tsv" "$RESULTS/extras-resumption.txt"
  echo "### Harness rows (bench/harness.sh, this run)"
  echo
  grep '^|' "$RESULTS/harness-table.md" 2> /dev/null
  echo
  echo "### Extra rows (bench/extras.sh, this run)"
  echo
  grep '^|' "$RESULTS/extras-table.md" 2> /dev/null
  echo
  [ -s "$RESULTS/extras-reload.txt" ] && { echo '```'; cat "$RESULTS/extras-reload.txt"; echo '```'; echo; }
  echo "wall time: setup + build ${T_BUILD}s, harness $((T_HARNESS - T_BUILD))s, total $((SECONDS - T0))s"
} > "$RESULTS/report.md"
cat "$RESULTS/report.md"
log "results in $RESULTS (raw oha JSON and logs in $RAW)"
exit $fail
