#!/usr/bin/env bash
# End-to-end: one canonical target and one canonical originator in front of a real, UNMODIFIED
# ACME CSE (issues 19, 26.3/26.4, 29.1). One IN-CSE (/id-in, cse-in, SP-ID //acme.example.com)
# with its HTTP binding behind sidecar H and its WebSocket binding behind sidecar W, both with
#   - {name: no-deletes-under-cse-in, operations: [delete], targets: ["/cse-in/**"], effect: deny}
# A container created through the proxy must survive DELETE in every form ACME accepts (the
# three TS-0009 forms, `-`, unstructured ID, WebSocket `to`), while ACME itself, asked directly,
# deletes on the SP-relative form (the control at the end). See tests/e2e/README.md.
#
#   tests/e2e/acme-canonical.sh
#
# Environment: M2M_AUTH_PROXY_BIN, ACME_VENV, ACME_SPEC, E2E_WORK as for acme-mcc.sh.
# Only loopback addresses are used. Every process started here is stopped on exit.
# Requires: bash, curl, openssl, jq, python3 (>= 3.11, with venv).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
  *) echo "usage: $0" >&2; exit 2 ;;
esac
BIN=${M2M_AUTH_PROXY_BIN:-target/debug/m2m-auth-proxy}
case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac
ACME_VENV=${ACME_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/m2m-auth-proxy-e2e/acme-venv}
ACME_SPEC=${ACME_SPEC:-acmecse==2026.5.*}

H=127.0.0.1
IN_HTTP=28280   # ACME HTTP binding (verification reads and the control only)
IN_WS=28180     # ACME WebSocket binding
P_HTTP=28543    # sidecar H: TLS -> ACME HTTP
P_WS=28544      # sidecar W: TLS -> ACME WebSocket
H_ADMIN=28591
W_ADMIN=28592
SP=acme.example.com

for tool in curl openssl jq python3; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done
WORK=${E2E_WORK:-$(mktemp -d /tmp/m2m-e2e-canon.XXXXXX)}
mkdir -p "$WORK/req"
WORK=$(cd "$WORK" && pwd)

PASSES=0; FAILS=0; PIDS=(); RUN_ID=$(date +%s)-$$
say() { printf '%s\n' "$*"; }
section() { printf '\n== %s\n' "$*"; }
evidence() { sed 's/^/      /' <<<"$1"; }
pass() { PASSES=$((PASSES + 1)); printf 'PASS %s\n' "$1"; [ -z "${2:-}" ] || evidence "$2"; }
fail() { FAILS=$((FAILS + 1)); printf 'FAIL %s\n' "$1"; [ -z "${2:-}" ] || evidence "$2"; }
info() { printf 'INFO %s\n' "$1"; [ -z "${2:-}" ] || evidence "$2"; }
check() { local name=$1 ev=$2; shift 2; if "$@"; then pass "$name" "$ev"; else fail "$name" "$ev"; fi; }
die() { fail "$1" "${2:-}"; exit 1; }

start() { local name=$1 log=$2; shift 2; "$@" >"$log.stdout" 2>"$log.stderr" </dev/null & PIDS+=("$name:$!"); }
pid_of() { local e; for e in "${PIDS[@]}"; do [ "${e%%:*}" = "$1" ] && echo "${e#*:}"; done; }
stop_one() {
  local name=$1 pid sig=TERM n
  pid=$(pid_of "$name")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  [ "$name" = in ] && sig=INT
  kill "-$sig" "$pid" 2>/dev/null || true
  for ((n = 0; n < 60; n++)); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.25
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
on_exit() {
  local rc=$? i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_one "${PIDS[$i]%%:*}" || true; done
  printf '\n%d passed, %d failed\n' "$PASSES" "$FAILS"
  say "logs and configs: $WORK"
  if [ "$rc" -eq 0 ] && [ "$FAILS" -gt 0 ]; then rc=1; fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM
wait_for() {
  local name=$1 secs=$2 n pid; shift 2
  pid=$(pid_of "$name")
  for ((n = 0; n < secs * 2; n++)); do
    if "$@"; then return 0; fi
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    sleep 0.5
  done
  return 1
}
port_free() { ! (exec 3<>"/dev/tcp/$H/$1") 2>/dev/null; }

# req NAME METHOD URL ORIGINATOR CERT|- [BODY [CONTENT-TYPE]]: sets STATUS and RSC.
# URLs are sent as written (--path-as-is), so dot-free aliases reach the proxy unchanged.
req() {
  local name=$1 method=$2 url=$3 orig=$4 cert=$5 body=${6:-} ctype=${7:-application/json}
  local out="$WORK/req/$name" args=()
  args=(-sS -m 30 --path-as-is -X "$method" -o "$out.body" -D "$out.hdr" -w '%{http_code}'
        -H "X-M2M-RI: $name-$RUN_ID" -H 'X-M2M-RVI: 3' -H 'Accept: application/json')
  [ -z "$orig" ] || args+=(-H "X-M2M-Origin: $orig")
  [ -z "$body" ] || args+=(-H "Content-Type: $ctype" --data-binary "$body")
  if [[ $url == https://* ]]; then
    args+=(--cacert "$PKI/ca.pem")
    [ "$cert" = - ] || args+=(--cert "$PKI/$cert.pem" --key "$PKI/$cert.key")
  fi
  : >"$out.hdr"; : >"$out.body"
  set +e
  STATUS=$(curl "${args[@]}" "$url" 2>"$out.err")
  set -e
  [ -n "$STATUS" ] || STATUS=000
  RSC=$(tr -d '\r' <"$out.hdr" | awk -F': *' 'tolower($1)=="x-m2m-rsc"{print $2}' | tail -1)
  printf '%s %s -> HTTP %s RSC %s' "$method" "$url" "$STATUS" "${RSC:--}" >"$out.summary"
}
summary() { cat "$WORK/req/$1.summary"; }
body() { head -c 300 "$WORK/req/$1.body"; }
jqb() { jq -c "$2" "$WORK/req/$1.body" 2>/dev/null; }
alog() { grep -h '^{' "$WORK/$1.stdout" 2>/dev/null || true; }
by_rid() { alog "$1" | jq -c "select(.request_id==\"$2-$RUN_ID\")" 2>/dev/null || true; }
direct() { req "$1" GET "http://$H:$IN_HTTP$2" CAdmin -; }
del_refused() { # del_refused NAME: the last request was refused by the rule, keepme survives
  [ "$STATUS/$RSC" = 403/4103 ] && grep -q no-deletes-under-cse-in "$WORK/req/$1.body" && survives "$1"
}
survives() { # survives NAME: the container is still there, read directly from ACME
  direct "$1-alive" "/~/id-in/cse-in/keepme"
  [ "$STATUS" = 200 ] && [ "$(jqb "$1-alive" '.["m2m:cnt"].ri')" = "\"$KEEP_RI\"" ]
}

section "setup in $WORK"
for p in "$IN_HTTP" "$IN_WS" "$P_HTTP" "$P_WS" "$H_ADMIN" "$W_ADMIN"; do
  port_free "$p" || die "setup: port $p free on $H"
done
[ -x "$BIN" ] || die "setup: proxy binary" "not executable: $BIN (set M2M_AUTH_PROXY_BIN)"
say "proxy binary: $BIN ($("$BIN" --version 2>&1 | head -1))"
if "$ACME_VENV/bin/python" -c 'import acmecse' 2>/dev/null; then
  say "ACME venv: reusing $ACME_VENV"
else
  say "ACME venv: creating $ACME_VENV and installing $ACME_SPEC"
  python3 -m venv "$ACME_VENV"
  "$ACME_VENV/bin/python" -m pip install -q "$ACME_SPEC" >"$WORK/pip.log" 2>&1 \
    || die "setup: pip install $ACME_SPEC" "$(tail -20 "$WORK/pip.log")"
fi
say "ACME: acmecse $("$ACME_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("acmecse"))')"

PKI="$WORK/pki"; mkdir -p "$PKI"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=m2m-auth-proxy e2e CA" -keyout "$PKI/ca.key" -out "$PKI/ca.pem" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  >"$PKI/openssl.log" 2>&1
leaf() { # leaf NAME EKU SAN
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=%s\n' \
    "$2" "$3" >"$PKI/$1.ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
    -keyout "$PKI/$1.key" -out "$PKI/$1.csr" >>"$PKI/openssl.log" 2>&1
  openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 2 -extfile "$PKI/$1.ext" -out "$PKI/$1.pem" >>"$PKI/openssl.log" 2>&1
}
leaf server serverAuth "IP:127.0.0.1,DNS:localhost"
leaf cadmin clientAuth "URI:CAdmin"
leaf ctool clientAuth "URI:Ctool"
chmod 600 "$PKI"/*.key

# sidecar_config NAME LISTEN UPSTREAM ADMIN
sidecar_config() {
  cat >"$WORK/$1.yaml" <<EOF
# sidecar $1 (generated by tests/e2e/acme-canonical.sh)
listen: "$2"
threads: 2
tls:
  cert: $PKI/server.pem
  key: $PKI/server.key
  client_ca: $PKI/ca.pem
  client_cert: required
upstream: "$3"
admin: "$4"
auth:
  methods: [mtls]
  mtls:
    identity: [uri]
  roles:
    sysop: {methods: [mtls], names: [CAdmin]}
originator:
  mode: verify
  allow:
    Ctool: ["C*"]
cse:
  id: "/id-in"
  name: "cse-in"
  sp_id: "//$SP"
authorization:
  default: allow
  rules:
    - {name: no-deletes-under-cse-in, operations: [delete], targets: ["/cse-in/**"], effect: deny}
    - {name: no-secret-reads, operations: [retrieve], targets: ["/cse-in/secret/**"], effect: deny}
    - {name: admin-for-sysop, originators: ["^CAdmin\$"], unless_roles: [sysop], effect: deny}
log:
  access: true
shutdown:
  grace_period: 1s
EOF
}
sidecar_config h "$H:$P_HTTP" "http://$H:$IN_HTTP" "$H:$H_ADMIN"
sidecar_config w "$H:$P_WS" "http://$H:$IN_WS" "$H:$W_ADMIN"
if "$BIN" check --config "$WORK/h.yaml" >"$WORK/h.check.log" 2>&1; then
  pass "0.1 m2m-auth-proxy check --config h.yaml" "$(grep -E 'cse:|rules|no-deletes' "$WORK/h.check.log")"
else
  die "0.1 m2m-auth-proxy check --config h.yaml" "$(cat "$WORK/h.check.log")"
fi
grep -v '^cse:\|^  id: "/id-in"\|^  name: "cse-in"\|^  sp_id:' "$WORK/h.yaml" >"$WORK/nocse.yaml"
if "$BIN" check --config "$WORK/nocse.yaml" >"$WORK/nocse.check.log" 2>&1; then
  fail "0.2 without cse, check refuses the rules with targets" "$(cat "$WORK/nocse.check.log")"
else
  check "0.2 without cse, check refuses the rules with targets, naming the key" \
    "$(cat "$WORK/nocse.check.log")" grep -q 'key `cse`' "$WORK/nocse.check.log"
fi

mkdir -p "$WORK/in/logs"
cat >"$WORK/in/acme.ini" <<EOF
; generated by tests/e2e/acme-canonical.sh
[basic.config]
cseType=IN
cseID=id-in
cseName=cse-in
serviceProviderID=//$SP
adminID=CAdmin
networkInterface=$H
cseHost=$H
httpPort=$IN_HTTP
databaseType=memory
logLevel=debug
consoleType=simple
registrarCseHost=$H
registrarCsePort=0
registrarCseID=
registrarCseName=

[websocket]
enable=true
port=$IN_WS
listenIF=$H

[logging]
enableFileLogging=true
enableScreenLogging=false
path=$WORK/in/logs
level=debug

[textui]
startWithTUI=false

[cse.statistics]
enable=false
EOF
ACME_LAUNCHER='import runpy, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.argv[0] = "acmecse"
runpy.run_module("acmecse", run_name="__main__", alter_sys=True)'
admin_ready() { curl -sf -o /dev/null -m 3 "http://$H:$1/readyz"; }
acme_started() { grep -q "CSE started" "$WORK/in.stdout" 2>/dev/null; }
cse_up() { curl -s -o /dev/null -m 3 -H 'X-M2M-Origin: CAdmin' -H "X-M2M-RI: up-$RUN_ID" -H 'X-M2M-RVI: 3' "http://$H:$IN_HTTP/~/id-in/cse-in"; }
start h "$WORK/h" "$BIN" --config "$WORK/h.yaml"
start w "$WORK/w" "$BIN" --config "$WORK/w.yaml"
wait_for h 30 admin_ready "$H_ADMIN" || die "setup: sidecar H ready" "$(tail -20 "$WORK/h.stderr")"
wait_for w 30 admin_ready "$W_ADMIN" || die "setup: sidecar W ready" "$(tail -20 "$WORK/w.stderr")"
start in "$WORK/in" "$ACME_VENV/bin/python" -c "$ACME_LAUNCHER" --config acme.ini --base-directory "$WORK/in" --headless
{ wait_for in 120 acme_started && wait_for in 30 cse_up; } \
  || die "setup: IN-CSE up" "$(grep -h -E 'ERROR|Error' "$WORK/in.stdout" "$WORK/in.stderr" 2>/dev/null | tail -10)"
say "IN-CSE up (HTTP $IN_HTTP, WebSocket $IN_WS); sidecars H $P_HTTP -> HTTP, W $P_WS -> WebSocket"

PX="https://$H:$P_HTTP"
section "1. resources made through the proxy, as CAdmin (sysop)"
req 1-keep POST "$PX/cse-in" CAdmin cadmin '{"m2m:cnt":{"rn":"keepme"}}' 'application/json;ty=3'
KEEP_RI=$(jqb 1-keep '.["m2m:cnt"].ri' | tr -d '"')
check "1.1 container /cse-in/keepme created (ri $KEEP_RI)" "$(summary 1-keep)" test "$STATUS" = 201 -a -n "$KEEP_RI"
req 1-secret POST "$PX/cse-in" CAdmin cadmin '{"m2m:cnt":{"rn":"secret"}}' 'application/json;ty=3'
SECRET_RI=$(jqb 1-secret '.["m2m:cnt"].ri' | tr -d '"')
req 1-cin POST "$PX/cse-in/secret" CAdmin cadmin '{"m2m:cin":{"con":"s3cret-value"}}' 'application/json;ty=4'
check "1.2 /cse-in/secret with a contentInstance (con s3cret-value) created" "$(summary 1-secret); $(summary 1-cin)" test "$STATUS" = 201
req 1-grp POST "$PX/cse-in" CAdmin cadmin "{\"m2m:grp\":{\"rn\":\"grp\",\"mt\":3,\"mnm\":10,\"mid\":[\"$SECRET_RI\"]}}" 'application/json;ty=9'
check "1.3 group /cse-in/grp with member $SECRET_RI created" "$(summary 1-grp): $(body 1-grp)" test "$STATUS" = 201

section "2. DELETE in every form through the proxy: refused, the container survives (issue 19, 26.3)"
n=0
for path in "/cse-in/keepme" "/~/id-in/cse-in/keepme" "/_/$SP/id-in/cse-in/keepme" \
    "/_/ACME.Example.COM/id-in/cse-in/keepme" "/-/keepme" "/~/id-in/-/keepme" \
    "/_/$SP/id-in/-/keepme" "/cse-%69n/keepme" "/$KEEP_RI" "/~/id-in/$KEEP_RI"; do
  n=$((n + 1))
  req "2-del-$n" DELETE "$PX$path" CAdmin cadmin
  line=$(by_rid h "2-del-$n")
  check "2.$n DELETE $path: 403 / 4103 by no-deletes-under-cse-in, and keepme is still there" \
    "$(summary "2-del-$n"): $(body "2-del-$n")
access log: $(jq -c '{path, target, rule, status, upstream_status}' <<<"$line" 2>/dev/null)" \
    del_refused "2-del-$n"
done
for path in "/~cse-in/keepme" "/_id-in/cse-in/keepme" "/%7Ecse-in/keepme" "/%5Fid-in/cse-in/keepme"; do
  n=$((n + 1))
  req "2-del-$n" DELETE "$PX$path" CAdmin cadmin
  check "2.$n DELETE $path (form marker glued to the ID): 400 / 4000, keepme still there" \
    "$(summary "2-del-$n"): $(body "2-del-$n")" test "$STATUS/$RSC" = 400/4000
  survives "2-$n" || fail "2.$n keepme gone after DELETE $path" "$(summary "2-$n-alive")"
done
nfwd=$(alog h | jq -c 'select(.method=="DELETE" and .upstream_status != null)' | grep -c . || true)
check "2.$((n + 1)) no DELETE reached ACME (access log: upstream_status null for every DELETE)" "$nfwd forwarded" test "$nfwd" = 0

section "3. indirection: retrieves that would return the denied subtree (issue 26.4)"
direct 3-direct-rcn "/cse-in?rcn=4"
info "ACME directly: GET /cse-in?rcn=4 returns the secret content: $(grep -o 's3cret-value' "$WORK/req/3-direct-rcn.body" | head -1 || echo no)" "$(summary 3-direct-rcn)"
direct 3-direct-fopt "/cse-in/grp/fopt/la"
info "ACME directly: GET /cse-in/grp/fopt/la: $(summary 3-direct-fopt)" "$(body 3-direct-fopt)"
n=0
for path in "/cse-in?rcn=4" "/~/id-in/cse-in?rcn=8" "/cse-in?fu=1&ty=4" "/cse-in/grp/fopt/la" "/$SECRET_RI" "/cse-in/secret/la"; do
  n=$((n + 1))
  req "3-get-$n" GET "$PX$path" Ctool ctool
  check "3.$n GET $path as Ctool: 403 / 4103 by no-secret-reads, nothing of the secret" \
    "$(summary "3-get-$n"): $(body "3-get-$n")" \
    bash -c "[ '$STATUS/$RSC' = 403/4103 ] && grep -q no-secret-reads '$WORK/req/3-get-$n.body'"
done
req 3-ok GET "$PX/cse-in/keepme?rcn=1" CAdmin cadmin
check "3.$((n + 1)) GET /cse-in/keepme?rcn=1 as CAdmin is forwarded and answered by ACME" "$(summary 3-ok)" test "$STATUS" = 200

section "4. one canonical originator (issue 29.1): Ctool may use C*, never as CAdmin in any form"
n=0
for claim in "CAdmin" "/id-in/CAdmin" "//$SP/id-in/CAdmin"; do
  n=$((n + 1))
  req "4-admin-$n" GET "$PX/cse-in" "$claim" ctool
  check "4.$n Ctool claiming $claim: 403 / 4103 by admin-for-sysop" "$(summary "4-admin-$n"): $(body "4-admin-$n")" \
    bash -c "[ '$STATUS/$RSC' = 403/4103 ] && grep -q admin-for-sysop '$WORK/req/4-admin-$n.body'"
done
req 4-victim POST "$PX/cse-in" "/id-in/Cvictim" ctool '{"m2m:ae":{"rn":"victimApp","api":"Nvictim","rr":false,"srv":["3"]}}' 'application/json;ty=2'
line=$(by_rid h 4-victim)
direct 4-victim-ae "/cse-in/victimApp"
check "4.4 Ctool as /id-in/Cvictim registers an AE: the proxy forwarded the canonical Cvictim, ACME's AE has aei Cvictim" \
  "$(summary 4-victim); access log: $(jq -c '{originator, status}' <<<"$line" 2>/dev/null); AE: $(jqb 4-victim-ae '.["m2m:ae"] | {ri, aei}')" \
  bash -c "[ '$(jq -r .originator <<<"$line" 2>/dev/null)' = Cvictim ] && [ '$(jqb 4-victim-ae '.["m2m:ae"].aei')' = '\"Cvictim\"' ]"

section "5. the same over ACME's WebSocket binding (sidecar W)"
cat >"$WORK/ws.py" <<'EOF'
import json, ssl, sys
from websockets.sync.client import connect
from websockets.typing import Subprotocol
url, ca, cert, key = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)
with connect(url, ssl=ctx, subprotocols=[Subprotocol("oneM2M.json")], compression=None,
             open_timeout=10, close_timeout=2) as ws:
    for line in sys.stdin:
        if line.strip():
            ws.send(line.strip())
            print(ws.recv(timeout=15), flush=True)
EOF
WS_IN="$WORK/ws.in"; : >"$WS_IN"
tos=("cse-in/keepme" "/id-in/cse-in/keepme" "//$SP/id-in/cse-in/keepme" "-/keepme" "/id-in/-/keepme" "$KEEP_RI" "/id-in/$KEEP_RI")
for i in "${!tos[@]}"; do
  jq -cn --arg to "${tos[$i]}" --arg rqi "ws-del-$i" '{op: 4, to: $to, fr: "CAdmin", rqi: $rqi, rvi: "3"}' >>"$WS_IN"
done
jq -cn '{op: 2, to: "~cse-in/keepme", fr: "CAdmin", rqi: "ws-glued", rvi: "3"}' >>"$WS_IN"
jq -cn '{op: 2, to: "cse-in", fr: "CAdmin", rqi: "ws-rcn", rvi: "3", rcn: 4}' >>"$WS_IN"
jq -cn '{op: 2, to: "cse-in/keepme", fr: "CAdmin", rqi: "ws-get", rvi: "3"}' >>"$WS_IN"
set +e
"$ACME_VENV/bin/python" "$WORK/ws.py" "wss://$H:$P_WS/" "$PKI/ca.pem" "$PKI/cadmin.pem" "$PKI/cadmin.key" \
  <"$WS_IN" >"$WORK/ws.out" 2>"$WORK/ws.err"
ws_rc=$?
set -e
[ "$ws_rc" = 0 ] || fail "5.0 WebSocket client" "exit $ws_rc: $(tail -5 "$WORK/ws.err")"
ws_rsc() { jq -r "select(.rqi==\"$1\") | .rsc" "$WORK/ws.out" 2>/dev/null | head -1; }
ws_dbg() { jq -c "select(.rqi==\"$1\") | .pc" "$WORK/ws.out" 2>/dev/null | head -1; }
for i in "${!tos[@]}"; do
  check "5.$((i + 1)) WebSocket DELETE to ${tos[$i]}: rsc 4103 (no-deletes-under-cse-in)" \
    "$(ws_rsc "ws-del-$i") $(ws_dbg "ws-del-$i")" test "$(ws_rsc "ws-del-$i")" = 4103
done
check "5.8 WebSocket to ~cse-in/keepme: rsc 4000" "$(ws_rsc ws-glued) $(ws_dbg ws-glued)" test "$(ws_rsc ws-glued)" = 4000
check "5.9 WebSocket retrieve of cse-in with rcn 4: rsc 4103 (no-secret-reads)" "$(ws_rsc ws-rcn) $(ws_dbg ws-rcn)" test "$(ws_rsc ws-rcn)" = 4103
check "5.10 WebSocket retrieve of cse-in/keepme reaches ACME (rsc 2000 from the CSE)" \
  "$(jq -c 'select(.rqi=="ws-get") | {rsc, fr, to}' "$WORK/ws.out" 2>/dev/null)" test "$(ws_rsc ws-get)" = 2000
check "5.11 keepme survived the WebSocket deletes" "$(summary 5-alive 2>/dev/null || true)" survives 5

section "6. ACME's own reading of target aliases (directly, GET only; for the record)"
for path in "/" "/-/keepme" "/~/ID-IN/cse-in/keepme" "/_/ACME.EXAMPLE.COM/id-in/cse-in/keepme" \
    "/CSE-IN/keepme" "/~cse-in/keepme" "/_id-in/cse-in/keepme" "/~/id-in" "/cse-in/keepme?rcn=%34"; do
  direct "6-$(tr -c 'A-Za-z0-9' _ <<<"$path")" "$path"
  info "ACME GET $path -> HTTP $STATUS RSC ${RSC:--}"
done

section "7. control: ACME itself deletes on the SP-relative form (so 2.x were the proxy's doing)"
req 7-del DELETE "http://$H:$IN_HTTP/~/id-in/cse-in/keepme" CAdmin -
direct 7-gone "/cse-in/keepme"
check "7.1 DELETE /~/id-in/cse-in/keepme directly at ACME: 200 / 2002, then 404" \
  "$(summary 7-del); $(summary 7-gone)" test "$(cat "$WORK/req/7-del.summary" | awk '{print $5}')/$STATUS" = 200/404
