#!/usr/bin/env bash
# One command: install what is missing, build the release binary, and measure m2m-auth-proxy
# side by side with the HAProxy and nginx anchors (../shared/bench), plus Bearer, scaling,
# resumption and memory rows. Prints the machine description and the tables; keeps small text
# results in bench/results/<stamp>/ (raw oha JSON stays under $WORK).
#
#   bench/run.sh              # full: ~13-15 min on the 2-core machine
#   QUICK=1 bench/run.sh      # ~3-4 min subset: 1 round of 5 s, HAProxy anchor only, N=1000
#   SYSSSL=1 bench/run.sh     # also build against Debian's OpenSSL 3.0 (OPENSSL_NO_VENDOR=1, into
#                             # /tmp/m2m-sysssl) and add its mTLS rows (+~6 min build, +1 min run)
# Knobs: SKIP_SETUP=1, SKIP_BUILD=1, MEM_ANCHORS=0/1, WORK (/tmp/proxybench), WAIT_IDLE, plus the
# shared harness's (DURATION, WARMUP, REPEATS, CONC, ...).
# Everything runs on 127.0.0.1; every process started is stopped (the harness scripts trap).
set -uo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
SHARED=${SHARED:-$(cd "$ROOT/../shared/bench" && pwd)}
export WORK=${WORK:-/tmp/proxybench}
QUICK=${QUICK:-0}
SYSSSL=${SYSSSL:-0}
SYSSSL_TARGET=${SYSSSL_TARGET:-/tmp/m2m-sysssl}
STAMP=$(date +%Y%m%d-%H%M%S)
RESULTS=$BENCH/results/$STAMP$([ "$QUICK" = 1 ] && echo -quick)
mkdir -p "$RESULTS"
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
T0=$SECONDS

CHILD=
trap '[ -n "$CHILD" ] && kill -TERM "$CHILD" 2>/dev/null; wait 2>/dev/null; exit 130' INT TERM
# run a step in the background so that INT/TERM reach its own cleanup trap
step() { "$@" & CHILD=$!; wait "$CHILD"; local rc=$?; CHILD=; return $rc; }

# ---------------------------------------------------------------- (a) tools
if [ "${SKIP_SETUP:-0}" != 1 ]; then
  need=0
  for t in oha nginx haproxy htpasswd curl openssl python3 taskset setsid ss; do command -v "$t" >/dev/null || need=1; done
  dpkg -s libnginx-mod-http-js >/dev/null 2>&1 || need=1
  command -v cmake >/dev/null || need=1            # libz-ng-sys (pingora) builds with cmake
  if [ "$need" = 1 ]; then
    log "installing tools (../shared/bench/setup.sh, cmake)"
    command -v cmake >/dev/null || { apt-get update -qq && apt-get install -y -qq cmake; }
    bash "$SHARED/setup.sh" >&2 || { log "setup failed"; exit 1; }
  fi
  if [ "$SYSSSL" = 1 ] && ! dpkg -s libssl-dev >/dev/null 2>&1; then
    apt-get install -y -qq libssl-dev pkg-config >&2
  fi
fi

# ---------------------------------------------------------------- (b) build
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release --quiet) || { log "build failed"; exit 1; }
  if [ "$SYSSSL" = 1 ]; then
    log "cargo build --release with Debian's OpenSSL (OPENSSL_NO_VENDOR=1, target $SYSSSL_TARGET)"
    (cd "$ROOT" && OPENSSL_NO_VENDOR=1 CARGO_TARGET_DIR=$SYSSSL_TARGET cargo build --release --quiet) ||
      { log "system-OpenSSL build failed"; exit 1; }
  fi
fi
BIN=$ROOT/target/release/m2m-auth-proxy
[ -x "$BIN" ] || { log "no $BIN"; exit 1; }
SYSBIN=
[ "$SYSSSL" = 1 ] && SYSBIN=$SYSSSL_TARGET/release/m2m-auth-proxy
T_BUILD=$((SECONDS - T0))

# ---------------------------------------------------------------- machine description
openssl_of() { # binary -> OpenSSL version it runs with
  if ldd "$1" 2>/dev/null | grep -q 'libssl\.so'; then
    echo "system $(openssl version | cut -d' ' -f1-2) (dynamically linked: $(ldd "$1" | grep -o 'libssl\.so[^ ]*' | head -1))"
  else
    echo "vendored $(strings -a "$1" | grep -oE '^OpenSSL [0-9]+\.[0-9]+\.[0-9]+[a-z-]*' | head -1) (static, openssl-src)"
  fi
}
{
  echo "date: $(date -Is)"
  echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
  echo "kernel: $(uname -srm)"
  echo "os: $(. /etc/os-release; echo "$PRETTY_NAME")"
  echo "rustc: $(rustc --version)"
  echo "m2m-auth-proxy: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)'), pingora $(grep -A1 '^name = "pingora-core"' "$ROOT/Cargo.lock" | sed -n 's/version = "\(.*\)"/\1/p')"
  echo "binary: $BIN, built $(date -r "$BIN" -Is)"
  echo "OpenSSL of the build: $(openssl_of "$BIN")"
  [ -n "$SYSBIN" ] && echo "OpenSSL of the sysssl build: $(openssl_of "$SYSBIN")"
  echo "anchors: $(nginx -v 2>&1 | cut -d' ' -f3), njs $(dpkg-query -W -f='${Version}' libnginx-mod-http-js 2>/dev/null), $(haproxy -v | head -1 | cut -d' ' -f1-3), system $(openssl version | cut -d' ' -f1-2)"
  echo "load generator: $(oha --version)"
  echo "mode: $([ "$QUICK" = 1 ] && echo QUICK || echo full); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$RESULTS/machine.txt"
cat "$RESULTS/machine.txt" >&2

# ---------------------------------------------------------------- (c) harness: anchors + us
if [ "$QUICK" = 1 ]; then
  export DURATION=${DURATION:-5} WARMUP=${WARMUP:-1} REPEATS=${REPEATS:-1} WAIT_IDLE=${WAIT_IDLE:-20}
  ONLY_H='^(haproxy-mtls-san|haproxy-mtls-san-newconn|m2m-.*)$'
  MODES='mtls basic-bcrypt10'
  NS_MEM='1000'
  MEM_ANCHORS=${MEM_ANCHORS:-0}
  ONLY_X='^(m2m-bearer|m2m-bearer-100k|m2m-basic-bcrypt10-100k|m2m-mtls-newconn-ca1|m2m-mtls-newconn-ca100|m2m-mtls-newconn-resumed|m2msys-.*|resumption|memory)$'
else
  export DURATION=${DURATION:-10} WARMUP=${WARMUP:-2} REPEATS=${REPEATS:-2} WAIT_IDLE=${WAIT_IDLE:-30}
  # the anchors' rows that match this job (URI SAN identity, bcrypt 10), and the ceiling
  ONLY_H='^(direct|nginx-mtls-san|nginx-mtls-san-newconn|haproxy-mtls-san|haproxy-mtls-san-newconn|nginx-basic-bcrypt10|haproxy-basic-bcrypt10|m2m-.*)$'
  MODES='mtls basic-bcrypt10'
  NS_MEM='1000 5000'
  MEM_ANCHORS=${MEM_ANCHORS:-1}
  ONLY_X=
fi

log "harness: anchors + m2m ($MODES), $REPEATS round(s) of ${DURATION}s"
before=$(ls -1d "$WORK"/results/2* 2>/dev/null | tail -1)
step env ONLY="$ONLY_H" PROXY_NAME=m2m PROXY_MODES="$MODES" M2M_BIN="$BIN" \
  PROXY_CMD="exec $BENCH/project-proxy.sh" bash "$SHARED/run.sh" > "$RESULTS/harness-table.md" 2> "$RESULTS/harness.log"
HRES=$(ls -1d "$WORK"/results/2* 2>/dev/null | tail -1)
[ -n "$HRES" ] && [ "$HRES" != "$before" ] || { log "harness produced no results; see $RESULTS/harness.log"; tail -20 "$RESULTS/harness.log" >&2; exit 1; }
cp "$HRES/runs.tsv" "$RESULTS/harness-runs.tsv"; cp "$HRES/env.txt" "$RESULTS/harness-env.txt"
T_HARNESS=$((SECONDS - T0))

# ---------------------------------------------------------------- extras: Bearer, scaling, resumption, memory
log "extras: Bearer, scaling, resumption, memory"
EXTRAS_DURATION=${EXTRAS_DURATION:-$([ "$QUICK" = 1 ] && echo "$DURATION" || echo 8)}
step env OUT="$RESULTS/extras" ONLY="$ONLY_X" DURATION="$EXTRAS_DURATION" NS="$NS_MEM" M2M_BIN="$BIN" M2M_BIN_SYSSSL="$SYSBIN" \
  bash "$BENCH/extras.sh" > /dev/null 2> "$RESULTS/extras.log"
rm -f "$RESULTS"/extras/*.json "$RESULTS"/extras/*.err
ANCHOR_MEM=
if [ "$MEM_ANCHORS" = 1 ]; then
  log "anchors' memory (nginx, haproxy; N=5000)"
  before=$(ls -1d "$WORK"/results/memory-* 2>/dev/null | tail -1)
  step env NS=5000 PROXIES='nginx haproxy' bash "$SHARED/memory.sh" > /dev/null 2> "$RESULTS/memory-anchors.log"
  MRES=$(ls -1d "$WORK"/results/memory-* 2>/dev/null | tail -1)
  if [ -n "$MRES" ] && [ "$MRES" != "$before" ]; then cp "$MRES/memory.tsv" "$RESULTS/memory-anchors.tsv"; ANCHOR_MEM=$RESULTS/memory-anchors.tsv; fi
fi

# ---------------------------------------------------------------- tables
{
  echo "## m2m-auth-proxy benchmark $STAMP$([ "$QUICK" = 1 ] && echo ' (QUICK)')"
  echo
  sed 's/^/    /' "$RESULTS/machine.txt"
  echo
  python3 "$BENCH/tables.py" summary "$RESULTS/harness-runs.tsv" "$RESULTS/extras/extras.tsv" \
    "$RESULTS/extras/memory.tsv" "$ANCHOR_MEM" "$RESULTS/extras/resumption.txt"
  echo
  echo "### Harness rows (../shared/bench/run.sh, this run)"
  echo
  grep '^|' "$RESULTS/harness-table.md"
  echo
  echo "### Extra rows (bench/extras.sh, this run)"
  echo
  grep '^|' "$RESULTS/extras/extras.md"
  echo
  [ -s "$RESULTS/extras/resumption.txt" ] && { echo '```'; cat "$RESULTS/extras/resumption.txt"; echo '```'; }
  [ -s "$RESULTS/extras/reload.txt" ] && { echo '```'; cat "$RESULTS/extras/reload.txt"; echo '```'; }
  echo
  echo "wall time: build ${T_BUILD}s, harness $((T_HARNESS - T_BUILD))s, total $((SECONDS - T0))s"
} > "$RESULTS/report.md"
cat "$RESULTS/report.md"
log "results in $RESULTS (raw oha JSON in $HRES)"
