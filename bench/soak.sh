#!/usr/bin/env bash
# Soak: the proxy under mixed mTLS/Basic/Bearer load while its credential files are rewritten
# every second and its upstream is restarted every 30 s.
#
#   bench/soak.sh DURATION_SECONDS
#
# Everything runs on 127.0.0.1 in a temp dir (PKI made with the openssl CLI, bcrypt htpasswd from
# the proxy's own `passwd`, a tokens file): the release binary (built if missing; BIN=... to use
# another), a python3 echo upstream (bench/soak_upstream.py), one python3 keep-alive TLS client
# per authentication method and a revocation prober (bench/soak_client.py). Every 10 s it prints
# throughput, errors by kind, p99 (and max) latency and the proxy's RSS.
#
# Exit status 1 on: any valid request lost outside an upstream outage window (from stopping the
# upstream until it answers again, plus 1 s), any request reaching the upstream with another
# originator, any revoked credential accepted once its reload shows in /metrics
# (m2m_auth_proxy_reloads_total), any reload not seen within 5 s, or RSS growth above
# RSS_GROWTH_MB (default 50) over the RSS at the end of the first interval.
# Every process it starts is ended by a trap. Requires: python3, openssl, curl.
set -euo pipefail

DURATION=${1:?usage: bench/soak.sh DURATION_SECONDS}
[[ $DURATION =~ ^[0-9]+$ ]] && (( DURATION >= 20 )) || { echo "DURATION_SECONDS: an integer >= 20" >&2; exit 2; }
INTERVAL=${INTERVAL:-10}
RESTART_EVERY=${RESTART_EVERY:-30}
RSS_GROWTH_MB=${RSS_GROWTH_MB:-50}
# INTERVAL (report, s), RESTART_EVERY (upstream, s), HEADER_TIMEOUT (limits.header_timeout) and
# BIN can be overridden from the environment.
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BIN=${BIN:-$ROOT/target/release/m2m-auth-proxy}

if [[ ! -x $BIN ]]; then
  echo "building the release binary ..." >&2
  (cd "$ROOT" && cargo build --release --quiet)
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/m2m-soak.XXXXXX")
PIDS=()
UPSTREAM_PID=""
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}" $UPSTREAM_PID; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}" $UPSTREAM_PID; do
    wait "$pid" 2>/dev/null || true
  done
  if [[ $status -ne 0 && -d $WORK ]]; then
    echo "logs kept in $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port); ADMIN=$(free_port); UPORT=$(free_port)

# --- PKI (openssl CLI) ----------------------------------------------------------------------
cd "$WORK"
ossl() { openssl "$@" 2>/dev/null; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
  -days 2 -subj "/CN=soak-ca" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
leaf() { # name subject extensions
  ossl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" \
    -out "$1.csr" -subj "$2"
  printf '%b' "$3" > "$1.ext"
  ossl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile "$1.ext" -out "$1.pem"
}
leaf server "/CN=localhost" \
  "basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
leaf client "/O=soak" \
  "basicConstraints=critical,CA:FALSE\nsubjectAltName=critical,URI:Csoak-mtls\nextendedKeyUsage=clientAuth\n"

# --- credentials: the load's users stay, a temporary user and token come and go -------------
hash_pw() { printf '%s' "$2" | "$BIN" passwd "$1"; }
hash_pw Csoak-basic pw-basic > htpasswd.base
hash_pw Csoak-revoked pw-revoked > htpasswd.extra
sha() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
printf 'tokens:\n  - name: soak\n    sha256: "%s"\n    originator: Csoak-bearer\n' \
  "$(sha tok-valid-0123456789)" > tokens.base
printf '  - name: revoked\n    sha256: "%s"\n    originator: Csoak-revtok\n' \
  "$(sha tok-revoked-0123456789)" > tokens.extra
mkdir creds
cp htpasswd.base creds/htpasswd
cp tokens.base creds/tokens.yaml

cat > proxy.yaml <<EOF
listen: "127.0.0.1:$PORT"
threads: 2
admin: "127.0.0.1:$ADMIN"
tls:
  cert: $WORK/server.pem
  key: $WORK/server.key
  client_ca: $WORK/ca.pem
  client_cert: optional
upstream:
  url: "http://127.0.0.1:$UPORT"
  connect_timeout: 1s
  timeout: 5s
auth:
  methods: [mtls, bearer, basic]
  mtls:
    identity: [uri]
    originator: "^(?P<originator>.+)\$"
  basic:
    htpasswd: $WORK/creds/htpasswd
  bearer:
    tokens: $WORK/creds/tokens.yaml
  rate_limit:
    failures_per_minute: 1000000
    burst: 1000000
  anonymous: deny
originator:
  mode: overwrite
reload:
  poll_interval: 1s
  watch: true
log:
  access: false
limits:
  header_timeout: ${HEADER_TIMEOUT:-10s}
shutdown:
  grace_period: 1s
EOF
"$BIN" check --config proxy.yaml > check.out 2>&1 || { cat check.out >&2; exit 1; }

# --- processes --------------------------------------------------------------------------------
start_upstream() {
  python3 "$HERE/soak_upstream.py" "$UPORT" 2>> upstream.log &
  UPSTREAM_PID=$!
}
upstream_answers() { curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$UPORT/ready"; }
wait_until() { # seconds command...
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    (( SECONDS < deadline )) || return 1
    sleep 0.05
  done
}

start_upstream
wait_until 10 upstream_answers || { echo "upstream did not start" >&2; exit 1; }
"$BIN" --config proxy.yaml > proxy.out 2> proxy.err &
PROXY_PID=$!
PIDS+=("$PROXY_PID")
ready() { [[ $(curl -s --max-time 1 "http://127.0.0.1:$ADMIN/readyz" -o /dev/null -w '%{http_code}') == 200 ]]; }
wait_until 30 ready || { echo "proxy not ready" >&2; tail -20 proxy.err >&2; exit 1; }

START=$(date +%s.%N)
UNTIL=$(python3 -c "print($START + $DURATION)")
load() { # name expect args...
  local name=$1 expect=$2; shift 2
  python3 "$HERE/soak_client.py" load --addr "127.0.0.1:$PORT" --ca ca.pem --until "$UNTIL" \
    --log "load-$name.log" --name "$name" --expect "$expect" "$@" 2>> "load-$name.err" &
  PIDS+=($!)
}
load mtls Csoak-mtls --cert client.pem --key client.key
load basic Csoak-basic --auth "Basic $(printf '%s' Csoak-basic:pw-basic | base64 -w0)"
load bearer Csoak-bearer --auth "Bearer tok-valid-0123456789"
python3 "$HERE/soak_client.py" probe --addr "127.0.0.1:$PORT" --ca ca.pem \
  --admin "127.0.0.1:$ADMIN" --until "$UNTIL" --log probe.log \
  --htpasswd creds/htpasswd --tokens creds/tokens.yaml \
  --base-htpasswd htpasswd.base --base-tokens tokens.base \
  --extra-htpasswd htpasswd.extra --extra-tokens tokens.extra 2>> probe.err &
PIDS+=($!)
python3 "$HERE/soak_client.py" report --work "$WORK" --proxy-pid "$PROXY_PID" --start "$START" \
  --duration "$DURATION" --interval "$INTERVAL" --rss-growth-mb "$RSS_GROWTH_MB" &
REPORT_PID=$!
PIDS+=("$REPORT_PID")

echo "soak: ${DURATION}s, proxy pid $PROXY_PID on 127.0.0.1:$PORT, upstream restarted every ${RESTART_EVERY}s, work dir $WORK" >&2

# --- upstream restarts until the end ----------------------------------------------------------
elapsed() { python3 -c "import time; print(int(time.time() - $START))"; }
next_restart=$RESTART_EVERY
while (( $(elapsed) < DURATION )); do
  if (( $(elapsed) >= next_restart && next_restart + 5 < DURATION )); then
    date +%s.%N > outage.open
    kill "$UPSTREAM_PID" && wait "$UPSTREAM_PID" 2>/dev/null || true
    sleep 1 # a real outage: clients see 502s meanwhile
    start_upstream
    wait_until 10 upstream_answers || { echo "upstream did not restart" >&2; exit 1; }
    echo "$(cat outage.open) $(date +%s.%N)" >> outages
    rm -f outage.open
    next_restart=$((next_restart + RESTART_EVERY))
  fi
  if ! kill -0 "$PROXY_PID" 2>/dev/null; then
    echo "the proxy exited" >&2
    tail -20 proxy.err >&2
    exit 1
  fi
  sleep 0.2
done

set +e
wait "$REPORT_PID"
verdict=$?
set -e
if grep -q . load-*.err probe.err 2>/dev/null; then
  echo "client stderr:" >&2
  tail -n 5 load-*.err probe.err >&2
fi
exit "$verdict"
