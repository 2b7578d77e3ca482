#!/usr/bin/env bash
# CPU profile of the proxy under the harness's load (same layout: proxy + upstream on CPU 0,
# oha on CPU 1): keep-alive mTLS and new connection per request, and optionally Basic.
#   bench/profile.sh                    # perf (software cpu-clock event; this VM has no PMU)
#   PROFILER=callgrind bench/profile.sh # valgrind --tool=callgrind on a short run instead
# Writes text reports (flat + caller/callee) to OUT (default bench/results/profile-<stamp>);
# perf.data / callgrind.out stay under $WORK/profile.
# Knobs: MODES ("mtls mtls-newconn"), SECS (8), FREQ (999), M2M_BIN, OUT
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
MYDIR=$BENCH
PROFILER=${PROFILER:-perf}
MODES=${MODES:-mtls mtls-newconn}
SECS=${SECS:-8}
FREQ=${FREQ:-999}
OUT=${OUT:-$MYDIR/results/profile-$(date +%Y%m%d-%H%M%S)}
PDIR=$WORK/profile
mkdir -p "$OUT" "$PDIR"
MTLS_OPTS+=("${HDR[@]}")

# the PID that actually runs the proxy (setsid -> taskset -> env -> bash exec -> binary)
proxy_pid() { local p; for p in $(tree_pids "$1"); do
  [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$(readlink -f "$M2M_BIN")" ] && { echo "$p"; return; }; done; }

start_upstream
for mode in $MODES; do
  case $mode in
    mtls)          env=(BENCH_MODE=mtls); load=("${MTLS_OPTS[@]}") ;;
    mtls-newconn)  env=(BENCH_MODE=mtls); load=("${MTLS_OPTS[@]}" --disable-keepalive) ;;
    basic-bcrypt10) env=(BENCH_MODE=basic-bcrypt10 "HTPASSWD=$PKI/htpasswd.bcrypt10")
                   load=(--cacert "$PKI/ca.crt" -a "$BASIC_CRED" -H 'X-M2M-Origin: spoofed-by-client') ;;
    *) die "unknown mode $mode" ;;
  esac
  wait_idle
  if [ "$PROFILER" = callgrind ]; then
    # project-proxy.sh execs M2M_BIN: give it a wrapper that execs valgrind on the binary
    wrap=$PDIR/valgrind-wrap.sh
    printf '#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file=%s/callgrind.out.%s %s "$@"\n' \
      "$PDIR" "$mode" "$M2M_BIN" > "$wrap"; chmod +x "$wrap"
    start "prof-$mode" "$PROXY_CPUS" env "${env[@]}" M2M_BIN="$wrap" bash "$MYDIR/project-proxy.sh"; pid=$STARTED_PID
    wait_port "$PORT" 120 "$pid" || die "proxy under valgrind did not start"
    taskset -c "$LOADGEN_CPUS" "$OHA" --no-tui -w -c 8 -z "${SECS}s" "${load[@]}" "$URL" > "$OUT/oha-$mode.txt" 2>&1
    stop "$pid"; sleep 1
    callgrind_annotate --inclusive=no "$PDIR/callgrind.out.$mode" 2>/dev/null | head -60 > "$OUT/callgrind-$mode-self.txt"
    callgrind_annotate --inclusive=yes "$PDIR/callgrind.out.$mode" 2>/dev/null | head -80 > "$OUT/callgrind-$mode-inclusive.txt"
    continue
  fi
  start "prof-$mode" "$PROXY_CPUS" env "${env[@]}" bash "$MYDIR/project-proxy.sh"; pid=$STARTED_PID
  wait_port "$PORT" 30 "$pid" || die "proxy did not start"
  bin_pid=$(proxy_pid "$pid")
  taskset -c "$LOADGEN_CPUS" "$OHA" --no-tui -w -c 32 -z "$((SECS + 3))s" "${load[@]}" "$URL" > "$OUT/oha-$mode.txt" 2>&1 &
  ohapid=$!
  sleep 2
  perf record -e cpu-clock -F "$FREQ" --call-graph dwarf,16384 -p "$bin_pid" -o "$PDIR/perf-$mode.data" \
    -- sleep "$SECS" > /dev/null 2>&1
  wait "$ohapid"
  stop "$pid"; sleep 0.5
  perf report -i "$PDIR/perf-$mode.data" --no-children --sort dso,symbol --stdio --percent-limit 0.7 \
    -g none 2>/dev/null | grep -v '^$' | head -70 > "$OUT/perf-$mode-self.txt"
  perf report -i "$PDIR/perf-$mode.data" --children --sort symbol --stdio --percent-limit 2 \
    -g none 2>/dev/null | grep -E '^ +[0-9]' | awk '{ $3=""; print }' | cut -c1-200 | head -120 > "$OUT/perf-$mode-children.txt"
  perf report -i "$PDIR/perf-$mode.data" --no-children --sort dso,symbol --stdio --percent-limit 0 \
    -g none 2>/dev/null | python3 "$MYDIR/perf_categories.py" > "$OUT/perf-$mode-categories.txt"
  perf report -i "$PDIR/perf-$mode.data" --no-children --sort dso --stdio -g none 2>/dev/null \
    | grep -v '^$' | head -25 > "$OUT/perf-$mode-dso.txt"
  log "$mode: $(grep -m1 'Requests/sec' "$OUT/oha-$mode.txt"); reports in $OUT"
done
stop "$UPID"
