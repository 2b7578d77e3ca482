#!/usr/bin/env bash
# Soak with both directions: two sidecars, each with an egress route to the other's ingress
# (CSE to CSE, as in the README's "CSE to CSE (Mcc)"), under mTLS, Basic, Bearer, JWT and
# oneM2M WebSocket clients, with authorization rules that refuse part of the traffic, while
# every credential and certificate file is rewritten on a schedule, the rule set is changed and
# reverted, and one upstream is restarted twice.
#
#   bench/soak.sh DURATION_SECONDS        # 3600 for the one-hour soak, 120 in .ci/run
#
#                 mTLS/Basic/Bearer/JWT/WS clients               mTLS/Basic/Bearer/JWT/WS clients
#                              │                                             │
#  upstream a ◀─http── A ingress (cse /id-in, cse-in)    B ingress (cse /id-mn, cse-mn) ──http──▶ upstream b
#  (echo CSE /id-in)   A egress "mn"  ══TLS, cert /id-in══▶ B ingress                   (echo CSE /id-mn,
#        └──http──▶    A egress listener                    B egress listener ◀──http──  restarted twice)
#                      B egress "registrar" ══TLS, cert /id-mn══▶ A ingress
#
# Everything runs on 127.0.0.1 in a temp dir: a PKI made with the openssl CLI (two CAs), bcrypt
# htpasswd files from the proxy's own `passwd`, tokens files, JWKS files and RS256 JWTs signed
# with the openssl CLI (no PyPI package needed), two proxies (the release binary, built if
# missing; BIN=... for another), two python3 echo CSEs (bench/soak_upstream.py: HTTP, the
# oneM2M WebSocket binding, and each one's own requests through its sidecar's egress route),
# per proxy one client per method (bench/soak_client.py load: mtls, basic, bearer, jwt) and two
# WebSocket clients (ws-mtls, ws-jwt), the rotations and their probes (bench/soak_rotate.py) and
# the report (bench/soak_report.py). Every process it starts is ended by a trap.
#
# Exit status 1 when a target is missed (bench/soak_report.py): a failure outside the planned
# outages, a refusal that should have been an allow or the reverse, a request reaching the CSE
# with another originator, a rotation not in force after its reload, a reload failure, a panic
# in a proxy's error log, or RSS / descriptor growth beyond RSS_GROWTH_MB / FD_GROWTH from the
# first sample after warm-up to the end of the load; and when it could pass for want of
# traffic: a client without requests, forwarded or refused, or stopped early, an outage that
# failed nothing, a file not rotated and probed both ways on both proxies.
#
# Environment (defaults): BIN (target/release/m2m-auth-proxy, honours CARGO_TARGET_DIR),
# RATE (20 requests/s per client), RECONNECT (200: a new connection every N requests),
# ROTATE_EVERY (2 s between two rotation steps), INTERVAL (progress line, 60 s; 10 s for runs
# under 10 min), RES_EVERY (resource samples, 600 s; a quarter of runs under 40 min),
# RSS_GROWTH_MB (16), FD_GROWTH (32), SOAK_REPORT (markdown report; default
# ${TMPDIR:-/tmp}/m2m-soak-<UTC stamp>.md), KEEP_WORK=1 (keep the work dir after a pass),
# ACCESS_LOG=1 (the proxies' access logs in the work dir, A.out and B.out).
# Requires: python3 (>= 3.8), openssl, curl.
set -euo pipefail

DURATION=${1:?usage: bench/soak.sh DURATION_SECONDS}
# 120 s at least: time for every rotation to go both ways on both proxies (16 pairs, 2 s apart)
[[ $DURATION =~ ^[0-9]+$ ]] && (( DURATION >= 120 )) || { echo "DURATION_SECONDS: an integer >= 120" >&2; exit 2; }
COMMAND="bench/soak.sh $*"
RATE=${RATE:-20}
RECONNECT=${RECONNECT:-200}
ROTATE_EVERY=${ROTATE_EVERY:-2}
if (( DURATION >= 600 )); then INTERVAL=${INTERVAL:-60}; else INTERVAL=${INTERVAL:-10}; fi
if (( DURATION >= 2400 )); then RES_EVERY=${RES_EVERY:-600}; else RES_EVERY=${RES_EVERY:-$((DURATION / 4))}; fi
RSS_GROWTH_MB=${RSS_GROWTH_MB:-16}
FD_GROWTH=${FD_GROWTH:-32}
ACCESS_LOG=$([[ ${ACCESS_LOG:-0} == 1 ]] && echo true || echo false)
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${BIN:-$TARGET/release/m2m-auth-proxy}
SOAK_REPORT=${SOAK_REPORT:-${TMPDIR:-/tmp}/m2m-soak-$(date -u +%Y%m%d-%H%M%S).md}
case $SOAK_REPORT in /*) ;; *) SOAK_REPORT=$PWD/$SOAK_REPORT ;; esac

if [[ ! -x $BIN ]]; then
  echo "building the release binary ..." >&2
  (cd "$ROOT" && cargo build --release --quiet)
fi
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/m2m-soak.XXXXXX")
PIDS=()
UP_A="" UP_B=""
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}" $UP_A $UP_B; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}" $UP_A $UP_B; do
    wait "$pid" 2>/dev/null || true
  done
  if [[ $status -ne 0 || ${KEEP_WORK:-0} == 1 ]]; then
    echo "logs kept in $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# A: the IN side, B: the MN side. P* public (ingress), M* admin, E* egress listener, U* upstream.
PA=$(free_port) PB=$(free_port) MA=$(free_port) MB=$(free_port)
EA=$(free_port) EB=$(free_port) UA=$(free_port) UB=$(free_port)

# --- PKI (openssl CLI) ----------------------------------------------------------------------
cd "$WORK"
ossl() { openssl "$@" 2>>openssl.log; }
mkca() { # name CN
  ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" \
    -out "$1.pem" -days 3 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}
leaf() { # out-prefix CA days subject extensions
  ossl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" \
    -out "$1.csr" -subj "$4"
  printf '%b' "$5" > "$1.ext"
  ossl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days "$3" \
    -extfile "$1.ext" -out "$1.pem"
  rm -f "$1.csr" "$1.ext"
}
server_ext="basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
client_ext() { printf 'basicConstraints=critical,CA:FALSE\nsubjectAltName=critical,URI:%s\nextendedKeyUsage=clientAuth\n' "$1"; }
mkca ca soak-ca
mkca ca2 soak-ca-2
leaf client-mtls ca 3 "/O=soak" "$(client_ext Csoak-mtls)"
leaf client-ws ca 3 "/O=soak" "$(client_ext Csoak-ws)"
leaf probe ca 3 "/O=soak" "$(client_ext Csoak-probe)"
leaf ca2-client ca2 3 "/O=soak" "$(client_ext Csoak-ca2)"
for rsa in k1 kx; do
  ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "jwt-$rsa.key"
done

# --- credentials: what the load uses stays, a second user/token/key/CA comes and goes ---------
hash_pw() { printf '%s' "$2" | "$BIN" passwd "$1"; }
sha() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
hash_pw Csoak-basic pw-basic > htpasswd.base
hash_pw Csoak-revoked pw-revoked > htpasswd.more
printf 'tokens:\n  - name: soak\n    sha256: "%s"\n    originator: Csoak-bearer\n' \
  "$(sha tok-valid-0123456789)" > tokens.base
printf '  - name: revoked\n    sha256: "%s"\n    originator: Csoak-revtok\n' \
  "$(sha tok-revoked-0123456789)" > tokens.more
echo tok-revoked-0123456789 > token.extra
EXP=$(( $(date +%s) + DURATION + 3600 ))
python3 "$HERE/soak_client.py" jwt --key jwt-k1.key --kid k1 --sub Csoak-jwt --roles reader \
  --exp "$EXP" > jwt.main
python3 "$HERE/soak_client.py" jwt --key jwt-kx.key --kid kx --sub Csoak-jwtx --exp "$EXP" \
  > jwt.extra
python3 "$HERE/soak_client.py" jwks jwt-k1.key:k1 > jwks.base
python3 "$HERE/soak_client.py" jwks jwt-k1.key:k1 jwt-kx.key:kx > jwks.extra

# proxy_dir NAME PUBLIC ADMIN EGRESS UPSTREAM CSE_ID CSE_NAME ROUTE PEER_PORT PEER_ID PEER_PREFIX
proxy_dir() {
  local d=$WORK/$1
  mkdir -p "$d/creds" "$d/variants" "$d/egress/id" "$d/tls"
  # two server certificates (and keys) and two egress client certificates, served through a
  # `..data` symlink that soak_rotate.py swaps, as the kubelet does with Secret volumes;
  # different lifetimes, so that /metrics tells them apart
  for v in 1 2; do
    mkdir -p "$d/tls/..v$v" "$d/egress/id/..v$v"
    leaf "$d/tls/..v$v/server" ca $((v + 1)) "/CN=soak-$1-server-v$v" "$server_ext"
    leaf "$d/egress/id/..v$v/client" ca $((v + 1)) "/CN=soak-$1-egress-v$v" "$(client_ext "$6")"
  done
  ln -s ..v1 "$d/tls/..data"
  ln -s ..v1 "$d/egress/id/..data"
  for f in server.pem server.key; do ln -s "..data/$f" "$d/tls/$f"; done
  for f in client.pem client.key; do ln -s "..data/$f" "$d/egress/id/$f"; done
  cp htpasswd.base "$d/variants/htpasswd.base"
  cat htpasswd.base htpasswd.more > "$d/variants/htpasswd.extra"
  cp tokens.base "$d/variants/tokens.base"
  cat tokens.base tokens.more > "$d/variants/tokens.extra"
  cp jwks.base "$d/variants/jwks.base"
  cp jwks.extra "$d/variants/jwks.extra"
  for k in client_ca egress_ca; do
    cp ca.pem "$d/variants/$k.base"
    cat ca.pem ca2.pem > "$d/variants/$k.extra"
  done
  config "$@" > "$d/variants/config.base"
  { config "$@"; toggle_rule "$7"; } > "$d/variants/config.extra"
  cp "$d/variants/htpasswd.base" "$d/creds/htpasswd"
  cp "$d/variants/tokens.base" "$d/creds/tokens.yaml"
  cp "$d/variants/jwks.base" "$d/creds/jwks.json"
  cp "$d/variants/client_ca.base" "$d/creds/client_ca.pem"
  cp "$d/variants/egress_ca.base" "$d/egress/ca.pem"
  cp "$d/variants/config.base" "$d/proxy.yaml"
}
toggle_rule() { printf '    - {name: soak-toggle, targets: ["/%s/toggle/**"], effect: deny}\n' "$1"; }
config() { # the arguments of proxy_dir; file names relative to the config's directory
  cat <<EOF
listen: "127.0.0.1:$2"
threads: 2
admin: "127.0.0.1:$3"
tls:
  cert: tls/server.pem
  key: tls/server.key
  client_ca: creds/client_ca.pem
  client_cert: optional
upstream:
  url: "http://127.0.0.1:$5"
  connect_timeout: 1s
  timeout: 5s
cse:
  id: "$6"
  name: "$7"
  sp_id: "//soak.example"
auth:
  methods: [mtls, jwt, bearer, basic]
  mtls:
    identity: [uri]
  basic:
    htpasswd: creds/htpasswd
  bearer:
    tokens: creds/tokens.yaml
  jwt:
    issuers:
      - issuer: soak-idp
        audiences: [m2m-soak]
        algorithms: [RS256]
        jwks_file: creds/jwks.json
        roles_claim: roles
  roles:
    cse: {methods: [mtls], names: ["${10}"]}
  rate_limit:
    failures_per_minute: 1000000
    burst: 1000000
  anonymous: deny
originator:
  mode: overwrite
  by_role:
    - {role: cse, mode: verify, cse_namespace: true}
  cse_ae_ids:
    "${10}": "^${11}"
reload:
  poll_interval: 1s
  watch: true
log:
  access: $ACCESS_LOG
limits:
  header_timeout: 10s
shutdown:
  grace_period: 1s
egress:
  - name: $8
    listen: "127.0.0.1:$4"
    peer: "https://127.0.0.1:$9"
    # the peer CSE (role cse, by its certificate) gets this route's poa rewriting (issue 27.1)
    peer_roles: [cse]
    tls:
      ca: egress/ca.pem
      cert: egress/id/client.pem
      key: egress/id/client.key
    originators: ["^$6(/.*)?\$"]
authorization:
  default: allow
  rules:
    - {name: no-deletes-locked, operations: [delete], targets: ["/$7/locked/**"], effect: deny}
    - {name: secret-needs-reader, targets: ["/$7/secret/**"], unless_roles: [reader], effect: deny}
    - {name: basic-no-containers, methods: [basic], operations: [create], resource_types: [container], effect: deny}
    - {name: peer-no-private, roles: [cse], targets: ["/$7/private/**"], effect: deny}
EOF
}
proxy_dir A "$PA" "$MA" "$EA" "$UA" /id-in cse-in mn "$PB" /id-mn Cmn-
proxy_dir B "$PB" "$MB" "$EB" "$UB" /id-mn cse-mn registrar "$PA" /id-in Cin-
for p in A B; do
  for v in base extra; do
    cp "$p/variants/config.$v" "$p/check.yaml"
    "$BIN" check --config "$p/check.yaml" > "$p/check-$v.out" 2>&1 \
      || { cat "$p/check-$v.out" >&2; exit 1; }
  done
  rm -f "$p/check.yaml"
done

# --- processes --------------------------------------------------------------------------------
wait_until() { # seconds command...
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    (( SECONDS < deadline )) || return 1
    sleep 0.05
  done
}
answers() { curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$1/ready"; }
ready() { [[ $(curl -s --max-time 1 "http://127.0.0.1:$1/readyz" -o /dev/null -w '%{http_code}') == 200 ]]; }

"$BIN" --config A/proxy.yaml > A.out 2> A.err &
PROXY_A=$!
PIDS+=("$PROXY_A")
"$BIN" --config B/proxy.yaml > B.out 2> B.err &
PROXY_B=$!
PIDS+=("$PROXY_B")
wait_until 30 ready "$MA" && wait_until 30 ready "$MB" \
  || { echo "proxies not ready" >&2; tail -20 A.err B.err >&2; exit 1; }

# the upstreams' own requests start at START (schedule file), also after a restart
start_upstream() { # a|b
  if [[ $1 == a ]]; then
    python3 "$HERE/soak_upstream.py" "$UA" --cse-id /id-in --egress "127.0.0.1:$EA" \
      --peer-id /id-mn --peer-name cse-mn --ae-prefix Cin- --public "https://127.0.0.1:$PA" \
      --expect-poa "http://127.0.0.1:$EB" --egress-log load.egress.AtoB.b.log \
      --schedule schedule --rate "$RATE" 2>> upstream-a.err &
    UP_A=$!
  else
    python3 "$HERE/soak_upstream.py" "$UB" --cse-id /id-mn --egress "127.0.0.1:$EB" \
      --peer-id /id-in --peer-name cse-in --ae-prefix Cmn- --public "https://127.0.0.1:$PB" \
      --expect-poa "http://127.0.0.1:$EA" --egress-log load.egress.BtoA.a.log \
      --schedule schedule --rate "$RATE" 2>> upstream-b.err &
    UP_B=$!
  fi
}
start_upstream a
start_upstream b
wait_until 10 answers "$UA" && wait_until 10 answers "$UB" \
  || { echo "upstreams did not start" >&2; exit 1; }

START=$(python3 -c 'import time; print(f"{time.time() + 0.5:.3f}")')
UNTIL=$(python3 -c "print($START + $DURATION)")
client() { # load|ws kind proxy upstream(a|b) args...
  local mode=$1 kind=$2 p=$3 up=$4; shift 4
  local addr cse_id cse_name
  if [[ $p == A ]]; then addr=127.0.0.1:$PA cse_id=/id-in cse_name=cse-in
  else addr=127.0.0.1:$PB cse_id=/id-mn cse_name=cse-mn; fi
  python3 "$HERE/soak_client.py" "$mode" --addr "$addr" --ca ca.pem --until "$UNTIL" \
    --log "load.$kind.$p.$up.log" --name "$kind-$p" --kind "${kind#ws-}" --cse-id "$cse_id" \
    --cse-name "$cse_name" --rate "$RATE" --reconnect "$RECONNECT" "$@" \
    2>> "client.$kind.$p.err" &
  PIDS+=($!)
}
echo "$START $UNTIL" > schedule
# the report first: its first sample is the proxies before the load
python3 "$HERE/soak_report.py" --work "$WORK" --start "$START" --duration "$DURATION" \
  --proxy "A:$PROXY_A:127.0.0.1:$MA" --proxy "B:$PROXY_B:127.0.0.1:$MB" \
  --interval "$INTERVAL" --res-every "$RES_EVERY" --rss-growth-mb "$RSS_GROWTH_MB" \
  --fd-growth "$FD_GROWTH" --report "$SOAK_REPORT" --command "$COMMAND" \
  --binary "$BIN ($("$BIN" --version 2>&1 | head -1))" \
  --settings "$RATE requests/s per client (12 clients, 2 egress streams), a new connection every $RECONNECT requests, a rotation step every ${ROTATE_EVERY} s, upstream b restarted at $((DURATION / 3)) s and $((2 * DURATION / 3)) s" \
  --error-log "A:$WORK/A.err" --error-log "B:$WORK/B.err" --outages 2 \
  --streams "$(for k in mtls basic bearer jwt ws-mtls ws-jwt; do printf '%s.A %s.B ' $k $k; done)egress.AtoB egress.BtoA" &
REPORT_PID=$!
PIDS+=("$REPORT_PID")
JWT="Bearer $(cat jwt.main)"
for p in A B; do
  up=$(tr AB ab <<< "$p")
  client load mtls "$p" "$up" --expect Csoak-mtls --cert client-mtls.pem --key client-mtls.key
  client load basic "$p" "$up" --expect Csoak-basic --auth "Basic $(printf '%s' Csoak-basic:pw-basic | base64 -w0)"
  client load bearer "$p" "$up" --expect Csoak-bearer --auth "Bearer tok-valid-0123456789"
  client load jwt "$p" "$up" --expect Csoak-jwt --auth "$JWT"
  client ws ws-mtls "$p" "$up" --expect Csoak-ws --cert client-ws.pem --key client-ws.key
  client ws ws-jwt "$p" "$up" --expect Csoak-jwt --auth "$JWT"
done
python3 "$HERE/soak_rotate.py" --work "$WORK" --until "$UNTIL" --every "$ROTATE_EVERY" \
  --proxy "A:127.0.0.1:$PA:127.0.0.1:$MA:cse-in:mn" \
  --proxy "B:127.0.0.1:$PB:127.0.0.1:$MB:cse-mn:registrar" 2>> rotate.err &
PIDS+=($!)
echo "soak: ${DURATION}s, proxies A (pid $PROXY_A, 127.0.0.1:$PA) and B (pid $PROXY_B, 127.0.0.1:$PB), work dir $WORK" >&2

# --- upstream b restarted twice ---------------------------------------------------------------
elapsed() { python3 -c "import time; print(int(time.time() - $START))"; }
restarts=($((DURATION / 3)) $((2 * DURATION / 3)))
while (( $(elapsed) < DURATION )); do
  if (( ${#restarts[@]} > 0 )) && (( $(elapsed) >= restarts[0] )); then
    restarts=("${restarts[@]:1}")
    echo "b $(date +%s.%N)" > outage.open
    kill "$UP_B" && wait "$UP_B" 2>/dev/null || true
    sleep 1 # a real outage: clients of B and A's egress see 502s meanwhile
    start_upstream b
    wait_until 10 answers "$UB" || { echo "upstream b did not restart" >&2; exit 1; }
    echo "$(cat outage.open) $(date +%s.%N)" >> outages
    rm -f outage.open
  fi
  for pid in "$PROXY_A" "$PROXY_B"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "a proxy exited" >&2
      tail -20 A.err B.err >&2
      exit 1
    fi
  done
  sleep 0.2
done

set +e
wait "$REPORT_PID"
verdict=$?
set -e
if grep -q . client.*.err rotate.err upstream-*.err 2>/dev/null; then
  echo "client stderr (last lines):" >&2
  tail -n 3 client.*.err rotate.err upstream-*.err 2>/dev/null | grep -v '^$' >&2 || true
fi
exit "$verdict"
