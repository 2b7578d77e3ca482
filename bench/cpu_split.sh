#!/usr/bin/env bash
# User vs kernel CPU per request of one proxy at 32 keep-alive mTLS connections (the harness's
# job and layout: proxy on CPU 0, oha on CPU 1, the harness's upstream), from the proxy's
# utime/stime in /proc over 10 s of load. Explains a CPU-per-request difference: what a change
# saved in user space, and what the kernel costs everyone (BENCHMARKS.md, issue 13).
#
#   bench/cpu_split.sh m2m|haproxy [ROUNDS]
#
# M2M_BIN: the binary (default: this checkout's release build). Tools: bench/setup.sh.
# Everything on 127.0.0.1; every process started is stopped.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
who=${1:?m2m or haproxy}
rounds=${2:-2}
RES=$(mktemp -d "$WORK/cpu-split.XXXXXX")
render_anchors
start_upstream
for ((r = 1; r <= rounds; r++)); do
  case $who in
    haproxy) start_proxy "$who" "$PROXY_CPUS" "$HAPROXY" -db -f "$RUN/haproxy-mtls-san-t1.cfg" || die "no proxy" ;;
    m2m) start_proxy "$who" "$PROXY_CPUS" env BENCH_MODE=mtls bash "$BENCH/project-proxy.sh" || die "no proxy" ;;
    *) die "unknown: $who (m2m or haproxy)" ;;
  esac
  pid=$(tree_pids "$PPID_" | tail -1)   # the proxy itself (the wrappers exec; haproxy -db: one process)
  taskset -c "$LOADGEN_CPUS" "$OHA" --no-tui -c 32 -z 3s "${MTLS_OPTS[@]}" "$URL" > /dev/null 2>&1   # warm-up
  read -r u0 s0 < <(cut -d')' -f2- "/proc/$pid/stat" | awk '{print $12, $13}')
  taskset -c "$LOADGEN_CPUS" "$OHA" --no-tui -c 32 -z 10s --output-format json "${MTLS_OPTS[@]}" "${HDR[@]}" \
    "$URL" > "$RES/oha.json" 2> /dev/null
  read -r u1 s1 < <(cut -d')' -f2- "/proc/$pid/stat" | awk '{print $12, $13}')
  "$PYTHON" - "$RES/oha.json" "$who" "$r" "$HZ" "$u0" "$s0" "$u1" "$s1" <<'PY'
import json, sys
f, who, r, hz, u0, s0, u1, s1 = sys.argv[1:]
n = sum(json.load(open(f))["statusCodeDistribution"].values())
hz = int(hz)
u = (int(u1) - int(u0)) / hz * 1e6 / n
s = (int(s1) - int(s0)) / hz * 1e6 / n
print(f"{who} round {r}: {n} requests, user {u:.1f} µs + kernel {s:.1f} µs = {u + s:.1f} µs per request")
PY
  stop "$PPID_"
done
stop "$UPID"
