#!/usr/bin/env bash
# User vs kernel CPU per request of one proxy at 32 keep-alive mTLS connections (the harness's
# job and layout: proxy on CPU 0, oha on CPU 1, upstream nginx of the harness), from the proxy's
# utime/stime in /proc over 10 s of load. Explains a CPU-per-request difference: what a change
# saved in user space, and what the kernel costs everyone (BENCHMARKS.md, issue 13).
#
#   bench/cpu_split.sh pipeline|lean|haproxy [ROUNDS]
#
# Needs what ../shared/bench/run.sh leaves under WORK (/tmp/proxybench): the PKI, the rendered
# upstream and HAProxy configs (run bench/run.sh or the shared run.sh once). M2M_BIN as for
# project-proxy.sh (default target/release/m2m-auth-proxy). Everything on 127.0.0.1; every
# process started is stopped.
set -uo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=${WORK:-/tmp/proxybench}
PKI=$WORK/pki RUN=$WORK/run
who=${1:?pipeline, lean or haproxy}
rounds=${2:-2}
for f in "$PKI/ca.crt" "$RUN/upstream.conf" "$RUN/haproxy-mtls-san.cfg"; do
  [ -e "$f" ] || { echo "missing $f: run bench/run.sh (or ../shared/bench/run.sh) once" >&2; exit 1; }
done
UPORT=$(grep -o 'listen 127.0.0.1:[0-9]*' "$RUN/upstream.conf" | head -1 | cut -d: -f2)
PORT=$(grep -o 'bind 127.0.0.1:[0-9]*' "$RUN/haproxy-mtls-san.cfg" | head -1 | cut -d: -f2)
URL=https://localhost:$PORT/m2m/cse-bench/cnt-1/la
MTLS=(--cacert "$PKI/ca.crt" --cert "$PKI/client.crt" --key "$PKI/client.key")
HZ=$(getconf CLK_TCK)
OUT=$(mktemp -d /tmp/cpu-split.XXXXXX)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done; wait 2>/dev/null' EXIT INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_open "$PORT" && { echo "port $PORT busy" >&2; exit 1; }

nginx -c "$RUN/upstream.conf" > "$OUT/upstream.log" 2>&1 & PIDS+=($!)
for ((i = 0; i < 50; i++)); do port_open "$UPORT" && break; sleep 0.1; done

for ((r = 1; r <= rounds; r++)); do
  case $who in
    haproxy) taskset -c 0 haproxy -db -f "$RUN/haproxy-mtls-san.cfg" > "$OUT/proxy.log" 2>&1 & ;;
    pipeline | lean)
      env BENCH_MODE=mtls LISTEN_ADDR=127.0.0.1:$PORT LISTEN_PORT=$PORT UPSTREAM_ADDR=127.0.0.1:$UPORT \
        TLS_CERT="$PKI/server.crt" TLS_KEY="$PKI/server.key" CLIENT_CA="$PKI/ca.crt" WORKERS=1 \
        REQUEST_PATH=$who taskset -c 0 bash "$BENCH/project-proxy.sh" > "$OUT/proxy.log" 2>&1 & ;;
    *) echo "unknown: $who" >&2; exit 2 ;;
  esac
  pid=$!; PIDS+=("$pid")
  for ((i = 0; i < 100; i++)); do port_open "$PORT" && break; sleep 0.1; done
  sleep 0.5
  taskset -c 1 oha --no-tui -c 32 -z 3s "${MTLS[@]}" "$URL" > /dev/null 2>&1   # warm-up
  read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  taskset -c 1 oha --no-tui -c 32 -z 10s --output-format json "${MTLS[@]}" \
    -H 'X-M2M-Origin: spoofed-by-client' "$URL" > "$OUT/oha.json" 2>/dev/null
  read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  python3 - "$OUT/oha.json" "$who" "$r" "$HZ" "$u0" "$s0" "$u1" "$s1" <<'PY'
import json, sys
f, who, r, hz, u0, s0, u1, s1 = sys.argv[1:]
n = sum(json.load(open(f))["statusCodeDistribution"].values())
hz = int(hz)
u = (int(u1) - int(u0)) / hz * 1e6 / n
s = (int(s1) - int(s0)) / hz * 1e6 / n
print(f"{who} round {r}: {n} requests, user {u:.1f} µs + kernel {s:.1f} µs = {u + s:.1f} µs per request")
PY
  kill -TERM "$pid"; wait "$pid" 2>/dev/null
  for ((i = 0; i < 50; i++)); do port_open "$PORT" || break; sleep 0.1; done
done
