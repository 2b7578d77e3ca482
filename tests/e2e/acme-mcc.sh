#!/usr/bin/env bash
# End-to-end Mcc test: two UNMODIFIED ACME CSEs without any authentication (an IN-CSE and an
# MN-CSE) register with each other and exchange requests in both directions ONLY through two
# m2m-auth-proxy sidecars (ingress + egress), with no credential in any `poa`.
# See tests/e2e/README.md for what it proves and how to read its output.
#
#   tests/e2e/acme-mcc.sh               # the proxied scenario (needs the proxy binary)
#   tests/e2e/acme-mcc.sh --acme-only   # baseline: the same two CSEs talking directly, no proxy
#
# Environment:
#   M2M_AUTH_PROXY_BIN  proxy binary (default: target/debug/m2m-auth-proxy under the repo root)
#   ACME_VENV           venv for ACME (default: ${XDG_CACHE_HOME:-$HOME/.cache}/m2m-auth-proxy-e2e/acme-venv);
#                       reused when it already imports acmecse, else created with pip
#   ACME_SPEC           pip requirement for ACME (default: acmecse==2026.5.*)
#   E2E_ACME_ACCESS     grant (default): ACME keeps its ACP checks; the peer CSE's admin
#                       (/id-mn/CAdmin on the IN, /id-in/CAdmin on the MN) is granted RETRIEVE
#                       by adding one rule to the CSEBase's ACP (through the sidecar, as CAdmin).
#                       open: [cse.security] enableACPChecks=false on both CSEs.
#                       none: ACP checks on and no grant (3.1 and 4.1 then FAIL with 4103:
#                       shows why one of the two is needed).
#   E2E_SERIALIZATION   json (default) or cbor: what the MN uses toward its registrar
#                       ([cse.registrar] serialization), so cbor exercises CBOR poa rewriting
#   E2E_SOAK            seconds of ACME's periodic registration checks to watch (default 25)
#   E2E_WORK            work directory (default: a new /tmp/m2m-e2e.XXXXXX, kept for the logs)
#
# Only loopback addresses are used. Every process started here is stopped on exit.
# Requires: bash, curl, openssl, jq, python3 (>= 3.11, with venv).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
MODE=proxied
case "${1:-}" in
  "") ;;
  --acme-only) MODE=acme-only ;;
  -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--acme-only]" >&2; exit 2 ;;
esac

BIN=${M2M_AUTH_PROXY_BIN:-target/debug/m2m-auth-proxy}
case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac
ACME_VENV=${ACME_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/m2m-auth-proxy-e2e/acme-venv}
ACME_SPEC=${ACME_SPEC:-acmecse==2026.5.*}
ACCESS=${E2E_ACME_ACCESS:-grant}
case "$ACCESS" in grant|open|none) ;; *) echo "E2E_ACME_ACCESS must be grant, open or none" >&2; exit 2 ;; esac
SER=${E2E_SERIALIZATION:-json}
case "$SER" in json|cbor) ;; *) echo "E2E_SERIALIZATION must be json or cbor" >&2; exit 2 ;; esac
SOAK=${E2E_SOAK:-25}
case "$SOAK" in ''|*[!0-9]*) echo "E2E_SOAK must be a number of seconds" >&2; exit 2 ;; esac
[ "$SOAK" -le 300 ] || { echo "E2E_SOAK: at most 300 s" >&2; exit 2; }

# The layout (all loopback).
H=127.0.0.1
IN_HTTP=28080     # IN-CSE plain HTTP (only the sidecar A and the verification reads use it)
MN_HTTP=29080     # MN-CSE plain HTTP
A_INGRESS=28443   # sidecar A (IN's) public TLS port = the IN's public URL
B_INGRESS=29443   # sidecar B (MN's) public TLS port = the MN's public URL
A_EGRESS=29081    # sidecar A's egress route "mn"        -> https://127.0.0.1:29443
B_EGRESS=28081    # sidecar B's egress route "registrar" -> https://127.0.0.1:28443
A_ADMIN=28091
B_ADMIN=29091
IN_WS=28180       # IN-CSE's WebSocket binding (plain ws), section 8
C_INGRESS=28445   # sidecar C: a second ingress of the IN, in front of its WebSocket port
C_ADMIN=28092

for tool in curl openssl jq python3; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done

WORK=${E2E_WORK:-$(mktemp -d /tmp/m2m-e2e.XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

# ---------------------------------------------------------------------------------------------
# Output and bookkeeping

PASSES=0
FAILS=0
PIDS=()     # "name:pid" of every process started here, in start order
RUN_ID=$(date +%s)-$$

say() { printf '%s\n' "$*"; }
section() { printf '\n== %s\n' "$*"; }
evidence() { sed 's/^/      /' <<<"$1"; }
pass() { PASSES=$((PASSES + 1)); printf 'PASS %s\n' "$1"; [ -z "${2:-}" ] || evidence "$2"; }
fail() { FAILS=$((FAILS + 1)); printf 'FAIL %s\n' "$1"; [ -z "${2:-}" ] || evidence "$2"; }
check() { # check NAME EVIDENCE CMD... : PASS when CMD succeeds
  local name=$1 ev=$2
  shift 2
  if "$@"; then pass "$name" "$ev"; else fail "$name" "$ev"; fi
}
die() { # a setup step failed: report it as a FAIL and stop (the trap cleans up)
  fail "$1" "${2:-}"
  exit 1
}

# stop_one NAME: stops a process started here (ACME: SIGINT, its graceful shutdown, in which an
# MN deregisters from its registrar; the proxy: SIGTERM); SIGKILL after 15 s.
stop_one() {
  local name=$1 pid sig=TERM n
  pid=$(pid_of "$name")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  case "$name" in in|mn) sig=INT ;; esac
  kill "-$sig" "$pid" 2>/dev/null || true
  for ((n = 0; n < 60; n++)); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.25
  done
  say "cleanup: $name ($pid) still running 15 s after SIG$sig, SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  return 1
}

stop_all() {
  local i
  # Reverse start order: the MN first (it deregisters through the sidecars), then the IN,
  # then the sidecars.
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    stop_one "${PIDS[$i]%%:*}" || true
  done
}

on_exit() {
  local rc=$?
  stop_all
  printf '\n%d passed, %d failed\n' "$PASSES" "$FAILS"
  say "logs and configs: $WORK"
  if [ "$rc" -eq 0 ] && [ "$FAILS" -gt 0 ]; then rc=1; fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# start NAME LOGPREFIX CMD...: runs CMD in the background, stdout and stderr to
# LOGPREFIX.stdout / LOGPREFIX.stderr, and remembers its pid for the cleanup.
start() {
  local name=$1 log=$2
  shift 2
  "$@" >"$log.stdout" 2>"$log.stderr" </dev/null &
  PIDS+=("$name:$!")
}

pid_of() { local e; for e in "${PIDS[@]}"; do [ "${e%%:*}" = "$1" ] && echo "${e#*:}"; done; }

# wait_for NAME SECONDS CMD...: polls CMD every 0.5 s; fails if the process NAME died.
wait_for() {
  local name=$1 secs=$2 n pid
  shift 2
  pid=$(pid_of "$name")
  for ((n = 0; n < secs * 2; n++)); do
    if "$@"; then return 0; fi
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    sleep 0.5
  done
  return 1
}

port_free() { ! (exec 3<>"/dev/tcp/$H/$1") 2>/dev/null; }

# ---------------------------------------------------------------------------------------------
# oneM2M requests

# req NAME METHOD URL ORIGINATOR CERT|- [BODY [CONTENT-TYPE]]
# Writes $WORK/req/NAME.{hdr,body,err}, sets STATUS (HTTP code, 000 on no answer), RSC, CURL_RC.
# The request id is NAME-RUN_ID (so the sidecars' access-log lines can be matched).
req() {
  local name=$1 method=$2 url=$3 orig=$4 cert=$5 body=${6:-} ctype=${7:-application/json}
  local out="$WORK/req/$name" args=()
  mkdir -p "$WORK/req"
  args=(-sS -m 30 -X "$method" -o "$out.body" -D "$out.hdr" -w '%{http_code}'
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
  CURL_RC=$?
  set -e
  [ -n "$STATUS" ] || STATUS=000
  RSC=$(tr -d '\r' <"$out.hdr" | awk -F': *' 'tolower($1)=="x-m2m-rsc"{print $2}' | tail -1)
  printf '%s %s -> HTTP %s RSC %s (curl exit %s)\n' "$method" "$url" "$STATUS" "${RSC:--}" "$CURL_RC" >"$out.summary"
}
resp_body() { cat "$WORK/req/$1.body"; }
resp_summary() { cat "$WORK/req/$1.summary"; }
jqb() { jq -c "$2" "$WORK/req/$1.body" 2>/dev/null; }   # jqb NAME FILTER: on a response body

# poa_clean JSON-ARRAY: true when no poa carries a credential (userinfo "@" before the host).
poa_clean() { jq -e 'all(.[]; (test("^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*@") | not))' <<<"$1" >/dev/null 2>&1; }

# Access-log lines of a sidecar (stdout holds only JSON access lines).
alog() { grep -h '^{' "$WORK/$1.stdout" 2>/dev/null || true; }

# metric_sum PORT NAME [LABEL-REGEX]: sum of a counter's samples on an admin port.
metric_sum() {
  curl -sS -m 5 "http://$H:$1/metrics" 2>/dev/null \
    | awk -v n="$2" '(index($0, n "{") == 1 || index($0, n " ") == 1) {s += $NF} END {printf "%d\n", s}'
}
metric_lines() { curl -sS -m 5 "http://$H:$1/metrics" 2>/dev/null | grep -E "^$2[{ ]" || true; }

# ---------------------------------------------------------------------------------------------
section "setup ($MODE, ACME access: $ACCESS, registrar serialization: $SER) in $WORK"

ports=("$IN_HTTP" "$MN_HTTP")
ports+=("$IN_WS")
[ "$MODE" = acme-only ] || ports+=("$A_INGRESS" "$B_INGRESS" "$A_EGRESS" "$B_EGRESS" "$A_ADMIN" "$B_ADMIN" "$C_INGRESS" "$C_ADMIN")
busy=()
for p in "${ports[@]}"; do port_free "$p" || busy+=("$p"); done
[ ${#busy[@]} -eq 0 ] || die "setup: ports free" "in use on $H: ${busy[*]}"

if [ "$MODE" = proxied ]; then
  [ -x "$BIN" ] || die "setup: proxy binary" "not executable: $BIN (set M2M_AUTH_PROXY_BIN)"
  say "proxy binary: $BIN ($("$BIN" --version 2>&1 | head -1))"
fi

# --- ACME in a venv (reused when present) ---
if "$ACME_VENV/bin/python" -c 'import acmecse' 2>/dev/null; then
  say "ACME venv: reusing $ACME_VENV"
else
  say "ACME venv: creating $ACME_VENV and installing $ACME_SPEC"
  python3 -m venv "$ACME_VENV"
  "$ACME_VENV/bin/python" -m pip install -q "$ACME_SPEC" >"$WORK/pip.log" 2>&1 \
    || die "setup: pip install $ACME_SPEC" "$(tail -20 "$WORK/pip.log")"
fi
ACME_VERSION=$("$ACME_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("acmecse"))')
say "ACME: acmecse $ACME_VERSION"

# --- PKI: EC P-256 test CA, server certs (IP 127.0.0.1 + localhost), client certs (SAN URI) ---
PKI="$WORK/pki"
mkdir -p "$PKI"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=m2m-auth-proxy e2e test CA" -keyout "$PKI/ca.key" -out "$PKI/ca.pem" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  >"$PKI/openssl.log" 2>&1
leaf() { # leaf NAME CN EKU SAN [CA-NAME]
  local ca=${5:-ca}
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=%s\n' \
    "$3" "$4" >"$PKI/$1.ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" \
    -keyout "$PKI/$1.key" -out "$PKI/$1.csr" >>"$PKI/openssl.log" 2>&1
  openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/$ca.pem" -CAkey "$PKI/$ca.key" -CAcreateserial \
    -days 2 -extfile "$PKI/$1.ext" -out "$PKI/$1.pem" >>"$PKI/openssl.log" 2>&1
}
leaf a-server "sidecar A (IN)" serverAuth "IP:127.0.0.1,DNS:localhost"
leaf b-server "sidecar B (MN)" serverAuth "IP:127.0.0.1,DNS:localhost"
leaf in-client "id-in" clientAuth "URI:/id-in"
leaf mn-client "id-mn" clientAuth "URI:/id-mn"
leaf cadmin "CAdmin" clientAuth "URI:CAdmin"
leaf cae-x "Cae-x" clientAuth "URI:Cae-x"
leaf cinae "Cinae" clientAuth "URI:Cinae"
leaf cmn-ae1 "Cmn-ae1" clientAuth "URI:Cmn-ae1"
leaf csensor1 "Csensor1" clientAuth "URI:Csensor1"
# A second, untrusted CA and a forged "/id-mn" client certificate from it (negative check).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=untrusted e2e CA" -keyout "$PKI/rogue-ca.key" -out "$PKI/rogue-ca.pem" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  >>"$PKI/openssl.log" 2>&1
leaf rogue-mn "id-mn" clientAuth "URI:/id-mn" rogue-ca
chmod 600 "$PKI"/*.key
say "PKI: $PKI (CA + a-server, b-server, in-client /id-in, mn-client /id-mn, cadmin CAdmin, cae-x Cae-x, csensor1 Csensor1; untrusted rogue-ca + rogue-mn /id-mn)"

# --- proxy configs ---
# sidecar NAME LISTEN UPSTREAM ADMIN SERVERCERT ROUTE EGRESS_LISTEN PEER CLIENTCERT OWN_CSI
#         OWN_CSE_NAME PEER_CSI PEER_AE_PREFIX
# Each sidecar knows its own CSE (cse:), gives the peer CSE's identity the role the route names
# as its peer (peer_roles: only its poa is rewritten toward the route), and bounds what the peer CSE may register for its AEs
# (cse_ae_ids: the peer's AEs need their own prefix, so they cannot take this CSE's AE-IDs).
sidecar_config() {
  cat >"$WORK/$1.yaml" <<EOF
# sidecar $1 (generated by tests/e2e/acme-mcc.sh)
listen: "$2"
threads: 2
tls:
  cert: $PKI/$5.pem
  key: $PKI/$5.key
  client_ca: $PKI/ca.pem
  client_cert: required
upstream: "$3"
admin: "$4"
auth:
  methods: [mtls]
  mtls:
    identity: [uri]
  # the peer CSE's pod identity: the route's peer (peer_roles), whose bodies get poa rewriting
  roles:
    cse: {methods: [mtls], names: ["${12}"]}
originator:
  mode: verify
  cse_namespace: true
  cse_ae_ids:
    "${12}": "^${13}"
cse:
  id: "${10}"
  name: "${11}"
  sp_id: "//acme.example.com"
log:
  access: true
shutdown:
  grace_period: 1s
egress:
  - name: $6
    listen: "$7"
    peer: "$8"
    tls:
      ca: $PKI/ca.pem
      cert: $PKI/$9.pem
      key: $PKI/$9.key
    originators: ["^${10}(/.*)?\$"]
    peer_roles: [cse]
EOF
}

# Section 8 (parser differentials, issue 26): rules that keep the AE Csensor1 away from
# cse-in/mgmt, from deletes and from creating containers, on A and on sidecar C (C fronts the
# IN's WebSocket port). They name Csensor1 only, so the rest of the run is not affected.
SENSOR_RULES='authorization:
  default: allow
  rules:
    - name: sensor-not-mgmt
      identities: [Csensor1]
      targets: ["/cse-in/mgmt", "/cse-in/mgmt/**", "/~/id-in/cse-in/mgmt", "/~/id-in/cse-in/mgmt/**"]
      effect: deny
    - name: sensor-no-deletes
      identities: [Csensor1]
      operations: [delete]
      effect: deny
    - name: sensor-no-containers
      identities: [Csensor1]
      operations: [create]
      resource_types: [container]
      effect: deny'
ws_sidecar_config() { # ws_sidecar_config NAME LISTEN UPSTREAM ADMIN SERVERCERT
  cat >"$WORK/$1.yaml" <<EOF
# sidecar $1 (generated by tests/e2e/acme-mcc.sh): the IN's WebSocket binding
listen: "$2"
threads: 2
tls:
  cert: $PKI/$5.pem
  key: $PKI/$5.key
  client_ca: $PKI/ca.pem
  client_cert: required
upstream: "$3"
admin: "$4"
auth:
  methods: [mtls]
  mtls:
    identity: [uri]
originator:
  mode: overwrite
cse:
  id: "/id-in"
  name: "cse-in"
  sp_id: "//acme.example.com"
log:
  access: true
shutdown:
  grace_period: 1s
$SENSOR_RULES
EOF
}

if [ "$MODE" = proxied ]; then
  sidecar_config a "$H:$A_INGRESS" "http://$H:$IN_HTTP" "$H:$A_ADMIN" a-server \
    mn "$H:$A_EGRESS" "https://$H:$B_INGRESS" in-client /id-in cse-in /id-mn Cmn-
  printf '%s\n' "$SENSOR_RULES" >>"$WORK/a.yaml"
  sidecar_config b "$H:$B_INGRESS" "http://$H:$MN_HTTP" "$H:$B_ADMIN" b-server \
    registrar "$H:$B_EGRESS" "https://$H:$A_INGRESS" mn-client /id-mn cse-mn /id-in Cin-
  ws_sidecar_config c "$H:$C_INGRESS" "http://$H:$IN_WS" "$H:$C_ADMIN" a-server
  for s in a b c; do
    if "$BIN" check --config "$WORK/$s.yaml" >"$WORK/$s.check.log" 2>&1; then
      pass "0.$s m2m-auth-proxy check --config $s.yaml" "$(head -40 "$WORK/$s.check.log")"
    else
      die "0.$s m2m-auth-proxy check --config $s.yaml" "$(cat "$WORK/$s.check.log")"
    fi
  done
fi

# --- ACME configs ---
if [ "$MODE" = proxied ]; then
  IN_POA="https://$H:$A_INGRESS"; MN_POA="https://$H:$B_INGRESS"; REGISTRAR="http://$H:$B_EGRESS"
  IN_PUBLIC="https://$H:$A_INGRESS"; MN_PUBLIC="https://$H:$B_INGRESS"
  EXPECT_IN_SEES_MN="http://$H:$A_EGRESS"; EXPECT_MN_SEES_IN="http://$H:$B_EGRESS"
else
  IN_POA="http://$H:$IN_HTTP"; MN_POA="http://$H:$MN_HTTP"; REGISTRAR="http://$H:$IN_HTTP"
  IN_PUBLIC="http://$H:$IN_HTTP"; MN_PUBLIC="http://$H:$MN_HTTP"
  EXPECT_IN_SEES_MN="$MN_POA"; EXPECT_MN_SEES_IN="$IN_POA"
fi
ACP_CHECKS=true
if [ "$ACCESS" = open ]; then ACP_CHECKS=false; fi

# acme_config DIR TYPE CSI-STEM RN PORT POA ALLOWED-CSR-ORIGINATOR [REGISTRAR-URL]
acme_config() {
  local dir=$1 registrar=${8:-}
  mkdir -p "$dir/logs"
  {
    cat <<EOF
; generated by tests/e2e/acme-mcc.sh: ACME $2-CSE for the m2m-auth-proxy e2e test
[basic.config]
cseType=$2
cseID=$3
cseName=$4
adminID=CAdmin
networkInterface=$H
cseHost=$H
httpPort=$5
databaseType=memory
logLevel=debug
consoleType=simple
; no registrar unless [cse.registrar] below says so (an IN-CSE must have none)
registrarCseHost=$H
registrarCsePort=0
registrarCseID=
registrarCseName=

[cse]
; the CSE's advertised point of access: its PUBLIC URL (the sidecar's ingress)
poa=$6

[cse.security]
enableACPChecks=$ACP_CHECKS

[cse.registration]
allowedCSROriginators=$7
checkInterval=10

[logging]
enableFileLogging=true
enableScreenLogging=false
path=$dir/logs
level=debug
size=20000000
count=3

[textui]
startWithTUI=false

[cse.statistics]
enable=false
EOF
    if [ -z "$registrar" ]; then
      cat <<EOF

[websocket]
; section 8: the IN's WebSocket binding, plain ws on loopback (sidecar C fronts it)
enable=true
port=$IN_WS
listenIF=$H
address=ws://$H:$IN_WS
EOF
    fi
    if [ -n "$registrar" ]; then
      cat <<EOF

[cse.registrar]
; where the MN registers: its sidecar's egress route (plain HTTP on loopback)
address=$registrar
cseID=/id-in
resourceName=cse-in
INCSEcseID=/id-in
serialization=$SER
EOF
    fi
  } >"$dir/acme.ini"
}
acme_config "$WORK/in" IN id-in cse-in "$IN_HTTP" "$IN_POA" /id-mn
acme_config "$WORK/mn" MN id-mn cse-mn "$MN_HTTP" "$MN_POA" /id-in "$REGISTRAR"
say "ACME configs: $WORK/in/acme.ini, $WORK/mn/acme.ini"

# ACME runs unmodified, from its installed package. The launcher only restores Python's default
# SIGINT handler (bash starts background jobs with SIGINT ignored), so that SIGINT runs ACME's
# own graceful shutdown (SIGTERM would end it without one).
ACME_LAUNCHER='import runpy, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.argv[0] = "acmecse"
runpy.run_module("acmecse", run_name="__main__", alter_sys=True)'
start_acme() { # start_acme NAME DIR
  start "$1" "$WORK/$1" "$ACME_VENV/bin/python" -c "$ACME_LAUNCHER" --config acme.ini --base-directory "$2" --headless
}
cse_up() { curl -s -o /dev/null -m 3 -H 'X-M2M-Origin: CAdmin' -H "X-M2M-RI: up-$RUN_ID" -H 'X-M2M-RVI: 3' "http://$H:$1/~/$2"; }
admin_ready() { curl -sf -o /dev/null -m 3 "http://$H:$1/readyz"; }

# --- start everything ---
if [ "$MODE" = proxied ]; then
  start a "$WORK/a" "$BIN" --config "$WORK/a.yaml"
  start b "$WORK/b" "$BIN" --config "$WORK/b.yaml"
  start c "$WORK/c" "$BIN" --config "$WORK/c.yaml"
  wait_for a 30 admin_ready "$A_ADMIN" || die "setup: sidecar A ready" "$(tail -20 "$WORK/a.stderr")"
  wait_for b 30 admin_ready "$B_ADMIN" || die "setup: sidecar B ready" "$(tail -20 "$WORK/b.stderr")"
  wait_for c 30 admin_ready "$C_ADMIN" || die "setup: sidecar C ready" "$(tail -20 "$WORK/c.stderr")"
  say "sidecars A ($A_INGRESS), B ($B_INGRESS) and C ($C_INGRESS, the IN's WebSocket) ready"
fi
# ACME must not be sent a request before it prints "CSE started": a request during its start-up
# makes Flask refuse the routes registered after it, and the start-up fails ("The setup method
# 'add_url_rule' can no longer be called on the application").
acme_started() { grep -q "CSE started" "$WORK/$1.stdout" 2>/dev/null; }
acme_trouble() { grep -h -E 'ERROR|Error' "$WORK/$1.stdout" "$WORK/$1.stderr" "$WORK/$1/logs"/*.log 2>/dev/null | tail -10; }
start_acme in "$WORK/in"
{ wait_for in 120 acme_started in && wait_for in 30 cse_up "$IN_HTTP" id-in/cse-in; } \
  || die "setup: IN-CSE up" "$(acme_trouble in)"
say "IN-CSE up on $H:$IN_HTTP"
start_acme mn "$WORK/mn"
{ wait_for mn 120 acme_started mn && wait_for mn 30 cse_up "$MN_HTTP" id-mn/cse-mn; } \
  || die "setup: MN-CSE up" "$(acme_trouble mn)"
say "MN-CSE up on $H:$MN_HTTP"

# Registration: the MN creates its <remoteCSE> on the IN, retrieves the IN's <CSEBase> and
# creates the IN's <remoteCSE> locally. Both must exist.
registered() {
  req wait-in GET "http://$H:$IN_HTTP/~/id-in/cse-in/id-mn" CAdmin - && [ "$STATUS" = 200 ] &&
  req wait-mn GET "http://$H:$MN_HTTP/~/id-mn/cse-mn/id-in" CAdmin - && [ "$STATUS" = 200 ]
}
if wait_for mn 120 registered; then
  say "registration complete"
else
  fail "setup: registration within 120 s" "$(resp_summary wait-in; resp_body wait-in; echo; resp_summary wait-mn; resp_body wait-mn; echo
    grep -h -iE 'regist|error|warn' "$WORK/mn/logs"/*.log 2>/dev/null | tail -15)"
fi

# log_lines SIDECAR JQ-FILTER: matching access-log lines (compact JSON)
log_lines() { alog "$1" | jq -c "select($2)" 2>/dev/null || true; }
# tally LINES KEYS: "count {selected keys}" per distinct combination
tally() { jq -c "{$2}" <<<"$1" 2>/dev/null | sort | uniq -c | sed 's/^ *//' | head -12 || true; }
nlines() { if [ -z "$1" ]; then echo 0; else grep -c . <<<"$1"; fi; }
# by_rid SIDECAR DIRECTION REQUEST-ID
by_rid() { log_lines "$1" ".direction==\"$2\" and .request_id==\"$3\""; }
has() { [ -n "$(jq -r "select($2) | 1" <<<"$1" 2>/dev/null)" ]; }   # has LINES JQ-CONDITION

# ---------------------------------------------------------------------------------------------
section "1. the MN registered at the IN ($MODE)"

# The IN's <remoteCSE> of the MN, read directly from the IN (for verification only).
req 1-in-csr GET "http://$H:$IN_HTTP/~/id-in/cse-in/id-mn" CAdmin -
IN_CSR_POA=$(jqb 1-in-csr '.["m2m:csr"].poa // empty')
IN_CSR_CT=$(jqb 1-in-csr '.["m2m:csr"].ct // empty')
check "1.1 IN has <remoteCSE> id-mn (csi /id-mn)" "$(resp_summary 1-in-csr)
$(jqb 1-in-csr 'if has("m2m:csr") then (.["m2m:csr"] | {rn, csi, cb, poa, ct}) else . end')" \
  test "$STATUS/$(jqb 1-in-csr '.["m2m:csr"].csi')" = '200/"/id-mn"'
check "1.2 its poa is [\"$EXPECT_IN_SEES_MN\"] (the MN advertises $MN_POA)" "poa = ${IN_CSR_POA:-<none>}" \
  test "$IN_CSR_POA" = "[\"$EXPECT_IN_SEES_MN\"]"
check "1.3 no credential in that poa" "poa = ${IN_CSR_POA:-<none>}" poa_clean "${IN_CSR_POA:-[]}"

req 1-mn-csr GET "http://$H:$MN_HTTP/~/id-mn/cse-mn/id-in" CAdmin -
MN_CSR_POA=$(jqb 1-mn-csr '.["m2m:csr"].poa // empty')
MN_CSR_CT=$(jqb 1-mn-csr '.["m2m:csr"].ct // empty')
check "1.4 MN has <remoteCSE> id-in (csi /id-in)" "$(resp_summary 1-mn-csr)
$(jqb 1-mn-csr 'if has("m2m:csr") then (.["m2m:csr"] | {rn, csi, cb, poa, ct}) else . end')" \
  test "$STATUS/$(jqb 1-mn-csr '.["m2m:csr"].csi')" = '200/"/id-in"'
check "1.5 its poa is [\"$EXPECT_MN_SEES_IN\"] (the IN advertises $IN_POA)" "poa = ${MN_CSR_POA:-<none>}" \
  test "$MN_CSR_POA" = "[\"$EXPECT_MN_SEES_IN\"]"
check "1.6 no credential in that poa" "poa = ${MN_CSR_POA:-<none>}" poa_clean "${MN_CSR_POA:-[]}"

# Every poa on both CSEs (both <CSEBase>s and all <remoteCSE>s): none carries a credential.
all_poa_check() { # all_poa_check CHECK-NAME
  local name=$1 spec listing=() f all
  rm -f "$WORK"/req/poa-*.body
  for spec in "$IN_HTTP id-in/cse-in" "$MN_HTTP id-mn/cse-mn"; do
    # shellcheck disable=SC2086 # word splitting wanted: "PORT PATH"
    set -- $spec
    req "poa-cb-$1" GET "http://$H:$1/~/$2" CAdmin -
    listing+=("$2 <CSEBase>: $(jqb "poa-cb-$1" '.["m2m:cb"].poa')")
    req "poa-csr-$1" GET "http://$H:$1/~/$2?fu=2&ty=16&rcn=8" CAdmin -
    listing+=("$2 <remoteCSE>s: $(jqb "poa-csr-$1" '[.. | objects | select(has("poa")) | .poa[]]')")
  done
  all=$(for f in "$WORK"/req/poa-*.body; do jq -c '[.. | objects | select(has("poa")) | .poa[]]' "$f" 2>/dev/null || echo '[]'; done | jq -sc 'add // []')
  check "$name" "$(printf '%s\n' "${listing[@]}")" poa_clean "$all"
}
all_poa_check "1.7 no credential in any poa on either CSE"

if [ "$MODE" = proxied ]; then
  # The public view: the same <remoteCSE> read by a client through A's ingress shows the MN's
  # public URL again (ingress responses are rewritten back on the way out).
  req 1-in-csr-public GET "https://$H:$A_INGRESS/~/id-in/cse-in/id-mn" CAdmin cadmin
  check "1.8 through A's ingress the same <remoteCSE> shows the MN's public URL [\"$MN_PUBLIC\"]" \
    "$(resp_summary 1-in-csr-public)
poa = $(jqb 1-in-csr-public '.["m2m:csr"].poa')" \
    test "$STATUS/$(jqb 1-in-csr-public '.["m2m:csr"].poa')" = "200/[\"$MN_PUBLIC\"]"

  # -------------------------------------------------------------------------------------------
  section "2. the registration went through the sidecars (access logs, metrics)"
  b_reg=$(log_lines b '.direction=="egress" and .route=="registrar"')
  b_reg_create=$(jq -c 'select(.method=="POST" and .status==201)' <<<"$b_reg" 2>/dev/null | head -1)
  check "2.1 B's egress (route registrar) carried the MN's registration ($(nlines "$b_reg") lines; the CREATE answered 201)" \
    "${b_reg_create:-<no POST answered 201>}
$(tally "$b_reg" 'method, path, originator, status, rsc')" \
    test -n "$b_reg_create"
  a_from_mn=$(log_lines a '.direction=="ingress" and .identity=="/id-mn"')
  a_from_mn_create=$(jq -c 'select(.method=="POST" and .status==201 and .originator=="/id-mn")' <<<"$a_from_mn" 2>/dev/null | head -1)
  check "2.2 A's ingress authenticated the MN by its certificate (identity and originator /id-mn; $(nlines "$a_from_mn") lines)" \
    "${a_from_mn_create:-<no POST answered 201 with originator /id-mn>}
$(tally "$a_from_mn" 'method, path, identity, originator, status')" \
    test -n "$a_from_mn_create"
  n=$(metric_sum "$B_ADMIN" m2m_auth_proxy_egress_requests_total)
  check "2.3 m2m_auth_proxy_egress_requests_total on B's admin port ($B_ADMIN) = $n > 0" \
    "$(metric_lines "$B_ADMIN" m2m_auth_proxy_egress_requests_total)" test "$n" -gt 0
  n=$(metric_sum "$B_ADMIN" m2m_auth_proxy_egress_poa_rewrites_total)
  check "2.4 m2m_auth_proxy_egress_poa_rewrites_total on B's admin port ($B_ADMIN) = $n > 0 (the IN's <CSEBase> toward the MN)" \
    "$(metric_lines "$B_ADMIN" m2m_auth_proxy_egress_poa_rewrites_total)" test "$n" -gt 0
  n=$(metric_sum "$A_ADMIN" m2m_auth_proxy_egress_poa_rewrites_total)
  check "2.5 m2m_auth_proxy_egress_poa_rewrites_total on A's admin port ($A_ADMIN) = $n > 0 (the MN's CREATE toward the IN)" \
    "$(metric_lines "$A_ADMIN" m2m_auth_proxy_egress_poa_rewrites_total)" test "$n" -gt 0
  if [ "$SER" = cbor ]; then
    cbor_in=$(grep -h -o "'Content-Type': 'application/cbor;ty=16'[^}]*'X-M2M-Origin': '/id-mn'" "$WORK/in/logs"/*.log 2>/dev/null | head -1 || true)
    check "2.6 (cbor) the MN's CREATE reached the IN as CBOR, so 1.2's poa was rewritten inside CBOR" \
      "${cbor_in:-<no CBOR CREATE from /id-mn in the IN log>}" test -n "$cbor_in"
  fi
fi

# ---------------------------------------------------------------------------------------------
# ACME's access control: a forwarded request carries the SP-relative originator of the sending
# CSE's admin (/id-mn/CAdmin at the IN, /id-in/CAdmin at the MN), which ACME's default ACPs do
# not grant. Grant it RETRIEVE (acop 2) on the CSEBase's ACP, as that CSE's admin.
if [ "$ACCESS" = grant ]; then
  section "ACME access control: grant the peer's admin RETRIEVE on the CSEBase (as CAdmin)"
  # grant_peer NAME BASEURL CERT CSE-PATH PEER-ORIGINATOR
  grant_peer() {
    local acp="$2/~/$4/acpCreateRootResources" newpv
    req "$1-get" GET "$acp" CAdmin "$3"
    if [ "$STATUS" != 200 ]; then
      fail "grant: read $4/acpCreateRootResources" "$(resp_summary "$1-get"; resp_body "$1-get")"
      return 0
    fi
    newpv=$(jq -c --arg o "$5" '.["m2m:acp"].pv | .acr = ((.acr // []) + [{"acor": [$o], "acop": 2}])' "$WORK/req/$1-get.body")
    req "$1-put" PUT "$acp" CAdmin "$3" "{\"m2m:acp\":{\"pv\":$newpv}}"
    check "grant: $4/acpCreateRootResources += {acor: [$5], acop: 2 (RETRIEVE)}" \
      "$(resp_summary "$1-put")
pv = $(jqb "$1-put" '.["m2m:acp"].pv')" test "$STATUS" = 200
  }
  if [ "$MODE" = proxied ]; then
    grant_peer grant-in "https://$H:$A_INGRESS" cadmin id-in/cse-in /id-mn/CAdmin
    grant_peer grant-mn "https://$H:$B_INGRESS" cadmin id-mn/cse-mn /id-in/CAdmin
  else
    grant_peer grant-in "http://$H:$IN_HTTP" - id-in/cse-in /id-mn/CAdmin
    grant_peer grant-mn "http://$H:$MN_HTTP" - id-mn/cse-mn /id-in/CAdmin
  fi
fi

# ---------------------------------------------------------------------------------------------
section "3. MN -> IN: a request to the MN for an IN resource is forwarded to the IN"
if [ "$MODE" = proxied ]; then MN_URL="https://$H:$B_INGRESS"; CERT=cadmin; else MN_URL="http://$H:$MN_HTTP"; CERT=-; fi
req 3-mn-to-in GET "$MN_URL/~/id-in/cse-in" CAdmin "$CERT"
check "3.1 GET $MN_URL/~/id-in/cse-in (CAdmin) answered 200 with the IN's <CSEBase>" \
  "$(resp_summary 3-mn-to-in)
$(jqb 3-mn-to-in 'if has("m2m:cb") then (.["m2m:cb"] | {ri, rn, csi, poa}) else . end')" \
  test "$STATUS/$(jqb 3-mn-to-in '.["m2m:cb"].csi')" = '200/"/id-in"'
if [ "$MODE" = proxied ]; then
  check "3.2 the client sees the IN's public poa [\"$IN_PUBLIC\"] (no internal URL leaks out)" \
    "poa = $(jqb 3-mn-to-in '.["m2m:cb"].poa')" test "$(jqb 3-mn-to-in '.["m2m:cb"].poa')" = "[\"$IN_PUBLIC\"]"
  RID="3-mn-to-in-$RUN_ID"
  b_in=$(by_rid b ingress "$RID"); b_eg=$(by_rid b egress "$RID"); a_in=$(by_rid a ingress "$RID")
  check "3.3 B's ingress: the client request (identity CAdmin, originator CAdmin), 200" "${b_in:-<no line with request_id $RID>}" \
    has "$b_in" '.identity=="CAdmin" and .originator=="CAdmin" and .status==200'
  check "3.4 B's egress route registrar: the MN's forwarded request to the IN, 200" "${b_eg:-<no line with request_id $RID>}" \
    has "$b_eg" '.route=="registrar" and .status==200'
  A_ORIG=$(jq -r '.originator' <<<"$a_in" 2>/dev/null | head -1)
  check "3.5 A's ingress: identity /id-mn, originator in its namespace (seen: ${A_ORIG:-none}), 200" "${a_in:-<no line with request_id $RID>}" \
    has "$a_in" '.identity=="/id-mn" and (.originator=="/id-mn" or (.originator|startswith("/id-mn/"))) and .status==200'
fi

# ---------------------------------------------------------------------------------------------
section "4. IN -> MN: a request to the IN for an MN resource is forwarded to the MN"
if [ "$MODE" = proxied ]; then IN_URL="https://$H:$A_INGRESS"; else IN_URL="http://$H:$IN_HTTP"; fi
req 4-in-to-mn GET "$IN_URL/~/id-mn/cse-mn" CAdmin "$CERT"
check "4.1 GET $IN_URL/~/id-mn/cse-mn (CAdmin) answered 200 with the MN's <CSEBase>" \
  "$(resp_summary 4-in-to-mn)
$(jqb 4-in-to-mn 'if has("m2m:cb") then (.["m2m:cb"] | {ri, rn, csi, poa}) else . end')" \
  test "$STATUS/$(jqb 4-in-to-mn '.["m2m:cb"].csi')" = '200/"/id-mn"'
if [ "$MODE" = proxied ]; then
  check "4.2 the client sees the MN's public poa [\"$MN_PUBLIC\"]" \
    "poa = $(jqb 4-in-to-mn '.["m2m:cb"].poa')" test "$(jqb 4-in-to-mn '.["m2m:cb"].poa')" = "[\"$MN_PUBLIC\"]"
  RID="4-in-to-mn-$RUN_ID"
  a_in=$(by_rid a ingress "$RID"); a_eg=$(by_rid a egress "$RID"); b_in=$(by_rid b ingress "$RID")
  check "4.3 A's ingress: the client request (identity CAdmin, originator CAdmin), 200" "${a_in:-<no line with request_id $RID>}" \
    has "$a_in" '.identity=="CAdmin" and .originator=="CAdmin" and .status==200'
  check "4.4 A's egress route mn: the IN's forwarded request to the MN, 200" "${a_eg:-<no line with request_id $RID>}" \
    has "$a_eg" '.route=="mn" and .status==200'
  B_ORIG=$(jq -r '.originator' <<<"$b_in" 2>/dev/null | head -1)
  check "4.5 B's ingress: identity /id-in, originator in its namespace (seen: ${B_ORIG:-none}), 200" "${b_in:-<no line with request_id $RID>}" \
    has "$b_in" '.identity=="/id-in" and (.originator=="/id-in" or (.originator|startswith("/id-in/"))) and .status==200'
  n=$(metric_sum "$A_ADMIN" m2m_auth_proxy_egress_requests_total)
  check "4.6 m2m_auth_proxy_egress_requests_total on A's admin port ($A_ADMIN) = $n > 0" \
    "$(metric_lines "$A_ADMIN" m2m_auth_proxy_egress_requests_total)" test "$n" -gt 0
fi

# ---------------------------------------------------------------------------------------------
if [ "$MODE" = proxied ]; then
  section "5. negative: the public ports admit no one the sidecars cannot authenticate"
  req 5-nocert GET "https://$H:$A_INGRESS/~/id-in/cse-in" /id-mn -
  check "5.1 A's ingress without a client certificate: no HTTP answer (TLS handshake refused)" \
    "$(resp_summary 5-nocert): $(cat "$WORK/req/5-nocert.err")
A's stderr (a missing certificate is logged there only, not counted): $(sleep 0.2; grep -h 'did not return a certificate' "$WORK/a.stderr" | tail -1 | cut -c1-160)" \
    test "$STATUS" = 000
  req 5-nocert-b GET "https://$H:$B_INGRESS/~/id-mn/cse-mn" /id-in -
  check "5.2 B's ingress without a client certificate: no HTTP answer (TLS handshake refused)" \
    "$(resp_summary 5-nocert-b): $(cat "$WORK/req/5-nocert-b.err")" test "$STATUS" = 000
  req 5-rogue GET "https://$H:$A_INGRESS/~/id-in/cse-in" /id-mn rogue-mn
  na=$(metric_sum "$A_ADMIN" m2m_auth_proxy_tls_handshake_failures_total)
  check "5.3 a forged /id-mn certificate from an untrusted CA at A: no HTTP answer, counted as tls_handshake_failures_total{reason=\"unknown_ca\"} ($na)" \
    "$(resp_summary 5-rogue): $(cat "$WORK/req/5-rogue.err")
$(metric_lines "$A_ADMIN" m2m_auth_proxy_tls_handshake_failures_total | grep -v ' 0$' || true)" \
    test "$STATUS" = 000 -a "$(metric_sum "$A_ADMIN" m2m_auth_proxy_tls_handshake_failures_total | head -1)" -gt 0 \
    -a -n "$(metric_lines "$A_ADMIN" m2m_auth_proxy_tls_handshake_failures_total | grep 'reason="unknown_ca"' | grep -v ' 0$')"
  req 5-caex-as-mn GET "https://$H:$A_INGRESS/~/id-in/cse-in" /id-mn cae-x
  check "5.4 client cert Cae-x claiming X-M2M-Origin /id-mn at A: 403 / RSC 4103" \
    "$(resp_summary 5-caex-as-mn): $(resp_body 5-caex-as-mn)" test "$STATUS/$RSC" = 403/4103
  req 5-caex-as-mnsub GET "https://$H:$A_INGRESS/~/id-in/cse-in" /id-mn/CAdmin cae-x
  check "5.5 client cert Cae-x claiming /id-mn/CAdmin at A: 403 / RSC 4103" \
    "$(resp_summary 5-caex-as-mnsub): $(resp_body 5-caex-as-mnsub)" test "$STATUS/$RSC" = 403/4103
  req 5-caex-as-in GET "https://$H:$B_INGRESS/~/id-mn/cse-mn" /id-in/CAdmin cae-x
  check "5.6 client cert Cae-x claiming /id-in/CAdmin at B: 403 / RSC 4103" \
    "$(resp_summary 5-caex-as-in): $(resp_body 5-caex-as-in)" test "$STATUS/$RSC" = 403/4103
  req 5-mn-as-in GET "https://$H:$B_INGRESS/~/id-mn/cse-mn" /id-in mn-client
  check "5.7 the MN's own certificate (/id-mn) claiming /id-in at B: 403 / RSC 4103" \
    "$(resp_summary 5-mn-as-in): $(resp_body 5-mn-as-in)" test "$STATUS/$RSC" = 403/4103
  req 5-mn-as-inadmin GET "https://$H:$A_INGRESS/~/id-in/cse-in" /id-in/CAdmin mn-client
  check "5.8 the MN's certificate claiming /id-in/CAdmin (outside its namespace) at A: 403 / RSC 4103" \
    "$(resp_summary 5-mn-as-inadmin): $(resp_body 5-mn-as-inadmin)" test "$STATUS/$RSC" = 403/4103
  req 5-caex-csr POST "https://$H:$A_INGRESS/~/id-in/cse-in" /id-evil cae-x \
    '{"m2m:csr":{"rn":"id-evil","csi":"/id-evil","cb":"/id-evil/cse-evil","rr":true,"poa":["http://attacker.invalid"],"srv":["3"]}}' \
    'application/json;ty=16'
  check "5.9 Cae-x trying to register a <remoteCSE> as /id-evil at A: 403 / RSC 4103" \
    "$(resp_summary 5-caex-csr): $(resp_body 5-caex-csr)" test "$STATUS/$RSC" = 403/4103
  if [ "$ACCESS" != open ]; then
    req 5-caex-own GET "https://$H:$A_INGRESS/~/id-in/cse-in/id-mn" Cae-x cae-x
    check "5.10 Cae-x as itself is forwarded, and ACME's ACPs refuse it (the proxy authenticates, the CSE authorises)" \
      "$(resp_summary 5-caex-own): $(resp_body 5-caex-own)" test "$STATUS/$RSC" = 403/4103
  fi
  # Issue 29: the MN's namespace at the IN holds one AE-ID segment with the MN's own prefix.
  req 5-mn-shadow GET "https://$H:$A_INGRESS/~/id-in/cse-in" /id-mn/Cmn-x/id-mn2 mn-client
  check "5.12 the MN's certificate claiming /id-mn/Cmn-x/id-mn2 (an AE named after a CSE) at A: 403 / RSC 4103" \
    "$(resp_summary 5-mn-shadow): $(resp_body 5-mn-shadow)" test "$STATUS/$RSC" = 403/4103
  req 5-mn-csename GET "https://$H:$A_INGRESS/~/id-in/cse-in" /id-mn/id-mn2 mn-client
  check "5.13 the MN's certificate claiming /id-mn/id-mn2 (not an AE-ID) at A: 403 / RSC 4103" \
    "$(resp_summary 5-mn-csename): $(resp_body 5-mn-csename)" test "$STATUS/$RSC" = 403/4103
  AE_BODY='{"m2m:ae":{"rn":"RN","api":"Ne2e","rr":false,"srv":["3"]}}'
  req 5-squat POST "https://$H:$B_INGRESS/~/id-in/cse-in" Cinae cinae "${AE_BODY/RN/squat}" 'application/json;ty=2'
  a_squat=$(by_rid a ingress "5-squat-$RUN_ID")
  req 5-squat-in GET "http://$H:$IN_HTTP/~/id-in/Cinae" CAdmin -
  check "5.14 an AE at the MN registering at the IN as Cinae (an IN-side AE-ID): A refuses /id-mn/Cinae, the IN has no AE Cinae" \
    "client: $(resp_summary 5-squat): $(resp_body 5-squat)
A: ${a_squat:-<no line with request_id 5-squat-$RUN_ID>}
IN: $(resp_summary 5-squat-in)" \
    bash -c "[ '$STATUS' = 404 ] && [ '$(jq -r 'select(.originator=="/id-mn/Cinae" or .originator==null) | .status' <<<"$a_squat" 2>/dev/null | head -1)' = 403 ]"
  req 5-own-ae POST "https://$H:$A_INGRESS/~/id-in/cse-in" Cinae cinae "${AE_BODY/RN/inae}" 'application/json;ty=2'
  check "5.15 the IN-side AE Cinae then registers at the IN itself: 201 (not 409/4105 nor 403/4117)" \
    "$(resp_summary 5-own-ae): $(resp_body 5-own-ae | head -c 300)" test "$STATUS" = 201
  req 5-mn-ae POST "https://$H:$B_INGRESS/~/id-in/cse-in" Cmn-ae1 cmn-ae1 "${AE_BODY/RN/mnae}" 'application/json;ty=2'
  req 5-mn-ae-in GET "http://$H:$IN_HTTP/~/id-in/Cmn-ae1" CAdmin -
  check "5.16 an AE at the MN with the MN's prefix (Cmn-ae1) registers at the IN through both sidecars: the IN has it (aei /id-mn/Cmn-ae1)" \
    "client: $(resp_summary 5-mn-ae); IN: $(resp_summary 5-mn-ae-in): $(jqb 5-mn-ae-in '.["m2m:ae"] | {ri, aei}')" \
    test "$(jqb 5-mn-ae-in '.["m2m:ae"].aei')" = '"/id-mn/Cmn-ae1"'
  refused=$(log_lines a '.direction=="ingress" and .status==403 and .upstream_status==null'; log_lines b '.direction=="ingress" and .status==403 and .upstream_status==null')
  check "5.11 the forged-originator requests were refused by the sidecars themselves (no upstream status)" \
    "$(tally "$refused" 'path, auth_method, auth_failure, identity, originator, status, rsc, upstream_status')" test "$(nlines "$refused")" -ge 6
fi

# ---------------------------------------------------------------------------------------------
if [ "$SOAK" -gt 0 ]; then
  section "6. ACME's periodic checks through the sidecars for ${SOAK}s (checkInterval 10 s)"
  soak_from=$(date -u +%Y-%m-%dT%H:%M:%S.%3N)
  sleep "$SOAK"
  req 6-in-csr GET "http://$H:$IN_HTTP/~/id-in/cse-in/id-mn" CAdmin -
  check "6.1 the IN's <remoteCSE> id-mn is the same one (ct $IN_CSR_CT), poa still [\"$EXPECT_IN_SEES_MN\"]" \
    "$(resp_summary 6-in-csr)
$(jqb 6-in-csr 'if has("m2m:csr") then (.["m2m:csr"] | {ct, lt, poa}) else . end')" \
    test "$(jqb 6-in-csr '[.["m2m:csr"].ct, .["m2m:csr"].poa]')" = "[$IN_CSR_CT,[\"$EXPECT_IN_SEES_MN\"]]"
  req 6-mn-csr GET "http://$H:$MN_HTTP/~/id-mn/cse-mn/id-in" CAdmin -
  check "6.2 the MN's <remoteCSE> id-in is the same one (ct $MN_CSR_CT), poa still [\"$EXPECT_MN_SEES_IN\"]" \
    "$(resp_summary 6-mn-csr)
$(jqb 6-mn-csr 'if has("m2m:csr") then (.["m2m:csr"] | {ct, lt, poa}) else . end')" \
    test "$(jqb 6-mn-csr '[.["m2m:csr"].ct, .["m2m:csr"].poa]')" = "[$MN_CSR_CT,[\"$EXPECT_MN_SEES_IN\"]]"
  if [ "$MODE" = proxied ] && [ "$SOAK" -lt 11 ]; then
    say "(6.3 and 6.4 need E2E_SOAK >= 11, more than one checkInterval: skipped)"
  elif [ "$MODE" = proxied ]; then
    b_soak=$(log_lines b ".direction==\"egress\" and .time >= \"$soak_from\"")
    a_soak=$(log_lines a ".direction==\"egress\" and .time >= \"$soak_from\"")
    check "6.3 B's egress: the MN's periodic checks of its registration, all answered 200" \
      "$(tally "$b_soak" 'method, path, originator, status')" \
      test -n "$b_soak" -a -z "$(jq -c 'select(.status != 200)' <<<"$b_soak" 2>/dev/null)"
    check "6.4 A's egress: the IN's periodic liveliness checks of the MN, all answered 200" \
      "$(tally "$a_soak" 'method, path, originator, status')" \
      test -n "$a_soak" -a -z "$(jq -c 'select(.status != 200)' <<<"$a_soak" 2>/dev/null)"
  fi
  if [ "$MODE" = proxied ]; then
    # the MN's own CREATEs (originator /id-mn); 5.14 and 5.16 add AE registrations of its AEs
    creates=$(log_lines b '.direction=="egress" and .method=="POST" and .path=="/~/id-in/cse-in" and .originator=="/id-mn"')
    check "6.5 the MN registered exactly once (one CREATE by /id-mn on B's egress in the whole run)" \
      "$(tally "$creates" 'method, path, status')" test "$(nlines "$creates")" = 1
  fi
fi

# ---------------------------------------------------------------------------------------------
section "7. the MN deregisters through the sidecars when it stops; nothing leaked"
if stop_one mn; then mn_stop="MN-CSE ended by SIGINT (ACME's graceful shutdown)"; else mn_stop="MN-CSE needed SIGKILL"; fi
req 7-in-csr GET "http://$H:$IN_HTTP/~/id-in/cse-in/id-mn" CAdmin -
check "7.1 after the MN stopped, the IN's <remoteCSE> id-mn is gone (404)" "$mn_stop
$(resp_summary 7-in-csr): $(resp_body 7-in-csr)" test "$STATUS" = 404
if [ "$MODE" = proxied ]; then
  b_del=$(log_lines b '.direction=="egress" and .route=="registrar" and .method=="DELETE" and .path=="/~/id-in/cse-in/id-mn" and .status==200')
  a_del=$(log_lines a '.direction=="ingress" and .identity=="/id-mn" and .originator=="/id-mn" and .method=="DELETE" and .path=="/~/id-in/cse-in/id-mn" and .status==200')
  check "7.2 the DELETE went MN -> B's egress (registrar) -> A's ingress (identity /id-mn) -> IN, answered 200" \
    "B: ${b_del:-<no DELETE 200 on route registrar>}
A: ${a_del:-<no DELETE 200 from /id-mn>}" test -n "$b_del" -a -n "$a_del"

  # The CSEs' own debug logs hold every request and response they exchanged: in the whole run
  # neither CSE ever saw its peer's public URL, only its sidecar's local egress URL.
  n=$(cat "$WORK/in/logs"/*.log 2>/dev/null | grep -c -F "$MN_PUBLIC" || true)
  check "7.3 the IN-CSE's log never mentions the MN's public URL $MN_PUBLIC (found $n times)" \
    "the IN's log has the local URL $EXPECT_IN_SEES_MN $(grep -h -o -F "$EXPECT_IN_SEES_MN" "$WORK/in/logs"/*.log 2>/dev/null | grep -c . || true) times instead" \
    test "$n" = 0
  n=$(cat "$WORK/mn/logs"/*.log 2>/dev/null | grep -c -F "$IN_PUBLIC" || true)
  check "7.4 the MN-CSE's log never mentions the IN's public URL $IN_PUBLIC (found $n times)" \
    "the MN's log has the local URL $EXPECT_MN_SEES_IN $(grep -h -o -F "$EXPECT_MN_SEES_IN" "$WORK/mn/logs"/*.log 2>/dev/null | grep -c . || true) times instead" \
    test "$n" = 0
  all_creds=$(grep -h -o -E "[a-z]+://[^/@\"', ]*@" "$WORK/in/logs"/*.log "$WORK/mn/logs"/*.log "$WORK"/a.stdout "$WORK"/b.stdout 2>/dev/null | sort -u || true)
  check "7.5 no URL with credentials (scheme://user:pass@) anywhere in the CSEs' logs or the access logs" \
    "${all_creds:-none found}" test -z "$all_creds"

  # -------------------------------------------------------------------------------------------
  section "8. parser differentials (issue 26): ACME acts on what the rules judged"
  # Csensor1's rules (SENSOR_RULES, on A and C): not cse-in/mgmt, no deletes, no containers.
  # Each vector is first sent to ACME alone (its own ports, no proxy), to show that this ACME
  # really reads it another way; then through the sidecars, where it is refused or reaches ACME
  # as what the rules judged.
  WSC="$WORK/wsclient.py"
  cat >"$WSC" <<'PY'
# A oneM2M WebSocket client for section 8 of acme-mcc.sh: sends one message, prints the reply.
#   wsclient.py URL PROTOCOL MESSAGE [CERT KEY CA]
# or prints how ACME's own decoder (RequestUtils.deserializeData) reads a message:
#   wsclient.py acme-decode PROTOCOL MESSAGE
import json, ssl, sys
import cbor2
from websockets.sync.client import connect

url, proto, name = sys.argv[1:4]

def t(s):
    b = s.encode()
    return bytes([0x60 + len(b)]) + b

def cbor_forgery(tag):
    # {"op":2,"to":"cse-in/sensorApp","fr":"Csensor1","rqi":"c1","rvi":"3",
    #  tag("op"):4, tag("to"):"cse-in/mgmt", tag("fr"):"CAdmin"}
    return (bytes([0xa8]) + t('op') + b'\x02' + t('to') + t('cse-in/sensorApp')
            + t('fr') + t('Csensor1') + t('rqi') + t('c1') + t('rvi') + t('3')
            + tag + t('op') + b'\x04' + tag + t('to') + t('cse-in/mgmt') + tag + t('fr') + t('CAdmin'))

MESSAGES = {
    # issue 26, class 1, verbatim
    'json-forgery': r'{"op":2,"to":"cse-in/sensorApp","rqi":"x","rvi":"3","a":"\\","b":"/*","n":{"c":"*/","op":4,"to":"cse-in/mgmt","fr":"CAdmin","d":"/*"},"e":"*/"}',
    # issue 26, class 2: tag 55799 (self-describe) and tag 256 (stringref namespace) on keys
    'cbor-55799': cbor_forgery(b'\xd9\xd9\xf7'),
    'cbor-256': cbor_forgery(b'\xd9\x01\x00'),
}
if url == 'acme-decode':
    from acmecse.etc.RequestUtils import deserializeData
    from acmecse.etc.Types import ContentSerializationType as CT
    msg = MESSAGES[name]
    ct = CT.JSON if proto == 'oneM2M.json' else CT.CBOR
    decoded = deserializeData(msg.encode() if isinstance(msg, str) else msg, ct)
    print(json.dumps({k: decoded.get(k) for k in ('op', 'to', 'fr')}))
    sys.exit(0)
ctx, headers = None, {}
if url.startswith('wss:'):
    ctx = ssl.create_default_context(cafile=sys.argv[6])
    ctx.load_cert_chain(sys.argv[4], sys.argv[5])
else:
    # ACME alone: the connection's originator, as the proxy sends it for Csensor1
    headers = {'X-M2M-Origin': 'Csensor1'}
with connect(url, ssl=ctx, subprotocols=[proto], additional_headers=headers,
             open_timeout=10, close_timeout=2) as ws:
    ws.send(MESSAGES[name])
    reply = ws.recv(timeout=15)
reply = cbor2.loads(reply) if isinstance(reply, bytes) else json.loads(reply)
print(json.dumps(reply, default=str))
PY
  ws_send() { # ws_send NAME URL PROTOCOL MESSAGE: the reply (JSON) in $WORK/req/NAME.ws
    mkdir -p "$WORK/req"
    "$ACME_VENV/bin/python" "$WSC" "$2" "$3" "$4" "$PKI/csensor1.pem" "$PKI/csensor1.key" "$PKI/ca.pem" \
      >"$WORK/req/$1.ws" 2>"$WORK/req/$1.wserr" || true
  }
  wsj() { jq -c "$2" "$WORK/req/$1.ws" 2>/dev/null || true; }
  ws_reply() { cut -c1-300 "$WORK/req/$1.ws"; tail -2 "$WORK/req/$1.wserr"; }
  # hreq NAME CURL-ARGS...: a request with the curl arguments as given; sets STATUS and RSC
  hreq() {
    local name=$1 out="$WORK/req/$1"
    shift
    : >"$out.hdr"; : >"$out.body"
    set +e
    STATUS=$(curl -sS -m 30 -o "$out.body" -D "$out.hdr" -w '%{http_code}' \
      -H "X-M2M-RI: $name-$RUN_ID" -H 'X-M2M-RVI: 3' "$@" 2>"$out.err")
    set -e
    [ -n "$STATUS" ] || STATUS=000
    RSC=$(tr -d '\r' <"$out.hdr" | awk -F': *' 'tolower($1)=="x-m2m-rsc"{print $2}' | tail -1)
    printf -- '-> HTTP %s RSC %s: %s\n' "$STATUS" "${RSC:--}" "$(head -c 200 "$out.body")" >"$out.summary"
  }
  SENSOR=(--cacert "$PKI/ca.pem" --cert "$PKI/csensor1.pem" --key "$PKI/csensor1.key" -H 'X-M2M-Origin: Csensor1')
  A_URL="https://$H:$A_INGRESS"
  # present NAME PATH: the resource exists (CAdmin through A)
  present() { req "$1" GET "$A_URL/cse-in/$2" CAdmin cadmin; [ "$STATUS" = 200 ]; }
  state() { if present "$1" "$2"; then echo present; else echo absent; fi; }
  make_mgmt() { req "$1" POST "$A_URL/cse-in" CAdmin cadmin '{"m2m:cnt":{"rn":"mgmt"}}' 'application/json;ty=3'; }

  make_mgmt 8-fix-mgmt
  fix_mgmt=$STATUS
  req 8-fix-ae POST "$A_URL/cse-in" Csensor1 csensor1 \
    '{"m2m:ae":{"rn":"sensorApp","api":"Nsensor","rr":true,"srv":["3"]}}' 'application/json;ty=2'
  check "8.0 fixtures through A: container cse-in/mgmt (CAdmin) $fix_mgmt, AE cse-in/sensorApp (Csensor1) $STATUS" \
    "$(resp_summary 8-fix-mgmt)
$(resp_summary 8-fix-ae)" test "$fix_mgmt/$STATUS" = 201/201

  ws_send 8-acme-json "ws://$H:$IN_WS" oneM2M.json json-forgery
  after=$(state 8-acme-json-after mgmt)
  check "8.1 ACME alone (its WebSocket port, no proxy) reads the JSON forgery as a delete of cse-in/mgmt by CAdmin: rsc $(wsj 8-acme-json .rsc), mgmt $after" \
    "$(ws_reply 8-acme-json)" test "$(wsj 8-acme-json .rsc)/$after" = 2002/absent
  make_mgmt 8-refix-1
  ws_send 8-c-json "wss://$H:$C_INGRESS" oneM2M.json json-forgery
  after=$(state 8-c-json-after mgmt)
  check "8.2 through sidecar C as Csensor1: ACME answers the retrieve of cse-in/sensorApp the rules judged (rsc $(wsj 8-c-json .rsc), rn $(wsj 8-c-json '.pc["m2m:ae"].rn')), mgmt $after" \
    "$(ws_reply 8-c-json)" test "$(wsj 8-c-json '[.rsc, .rqi, .pc["m2m:ae"].rn]')/$after" = '[2000,"x","sensorApp"]/present'

  # ACME's WebSocket binding cannot take CBOR while it logs at debug level, as here (it decodes
  # every message as UTF-8 for a log line: 5000), so ACME's own decoder shows its reading
  for tag in 55799 256; do
    ws_send "8-acme-cbor-$tag" acme-decode oneM2M.cbor "cbor-$tag"
    check "8.3.$tag ACME's own CBOR decoder (RequestUtils.deserializeData) reads the forgery with tag $tag on keys as $(cat "$WORK/req/8-acme-cbor-$tag.ws")" \
      "$(ws_reply "8-acme-cbor-$tag")" test "$(wsj "8-acme-cbor-$tag" '[.op, .to, .fr]')" = '[4,"cse-in/mgmt","CAdmin"]'
  done
  for tag in 55799 256; do
    ws_send "8-c-cbor-$tag" "wss://$H:$C_INGRESS" oneM2M.cbor "cbor-$tag"
    after=$(state "8-c-cbor-$tag-after" mgmt)
    check "8.4.$tag through C: the CBOR forgery with tag $tag on keys is answered 4000 by the proxy, nothing forwarded (rsc $(wsj "8-c-cbor-$tag" .rsc)), mgmt $after" \
      "$(ws_reply "8-c-cbor-$tag")" test "$(wsj "8-c-cbor-$tag" '[.rsc, .rqi]')/$after" = '[4000,"c1"]/present'
  done
  n=$(metric_lines "$C_ADMIN" m2m_auth_proxy_websocket_messages_total | grep -E 'outcome="(invalid|rewritten)"' | tr '\n' ' ')
  say "      sidecar C: $n"

  cnt() { printf '{"m2m:cnt":{"rn":"%s"}}' "$1"; }
  hreq 8-acme-2ct -X POST "http://$H:$IN_HTTP/cse-in/sensorApp" -H 'X-M2M-Origin: Csensor1' \
    -H 'Content-Type: application/json' -H 'Content-Type: application/json;ty=3' --data-binary "$(cnt stolen0)"
  check "8.5 ACME alone takes the last of two Content-Types: a container is created ($STATUS)" \
    "$(resp_summary 8-acme-2ct)" test "$STATUS" = 201
  hreq 8-a-2ct "${SENSOR[@]}" -X POST "$A_URL/cse-in/sensorApp" \
    -H 'Content-Type: application/json' -H 'Content-Type: application/json;ty=3' --data-binary "$(cnt stolen1)"
  got="$STATUS/$RSC"; after=$(state 8-a-2ct-after sensorApp/stolen1)
  check "8.6 through A: two Content-Types are refused ($got), container stolen1 $after" \
    "$(resp_summary 8-a-2ct)" test "$got/$after" = 400/4000/absent
  hreq 8-a-high "${SENSOR[@]}" -X POST "$A_URL/cse-in/sensorApp" \
    -H $'Content-Type: application/json;\x80;ty=3' --data-binary "$(cnt stolen2)"
  got="$STATUS/$RSC"; after=$(state 8-a-high-after sensorApp/stolen2)
  check "8.7 through A: a 0x80 byte in Content-Type is refused ($got), container stolen2 $after" \
    "$(resp_summary 8-a-high)" test "$got/$after" = 400/4000/absent
  hreq 8-a-post "${SENSOR[@]}" -X post "$A_URL/cse-in/sensorApp" \
    -H 'Content-Type: application/json;ty=3' --data-binary "$(cnt stolen3)"
  got="$STATUS/$RSC"; after=$(state 8-a-post-after sensorApp/stolen3)
  check "8.8 through A: method 'post' is refused ($got), container stolen3 $after" \
    "$(resp_summary 8-a-post)" test "$got/$after" = 405/4005/absent
  hreq 8-acme-delete -X delete "http://$H:$IN_HTTP/cse-in/sensorApp/stolen0" -H 'X-M2M-Origin: Csensor1'
  got=$STATUS; after=$(state 8-acme-delete-after sensorApp/stolen0)
  check "8.9 ACME alone upper-cases 'delete': stolen0 is deleted ($got), now $after" \
    "$(resp_summary 8-acme-delete)" test "$got/$after" = 200/absent
  hreq 8-a-delete "${SENSOR[@]}" -X delete "$A_URL/cse-in/sensorApp"
  got="$STATUS/$RSC"; after=$(state 8-a-delete-after sensorApp)
  check "8.10 through A: method 'delete' on the AE is refused ($got), sensorApp $after" \
    "$(resp_summary 8-a-delete)" test "$got/$after" = 405/4005/present
  hreq 8-a-create "${SENSOR[@]}" -X POST "$A_URL/cse-in/sensorApp" \
    -H 'Content-Type: application/json;ty=3' --data-binary "$(cnt stolen4)"
  check "8.11 control: the container create written plainly meets rule sensor-no-containers ($STATUS/$RSC)" \
    "$(resp_summary 8-a-create)" test "$STATUS/$RSC" = 403/4103

  section "proxy stderr (warnings/errors)"
  for s in a b c; do
    say "sidecar $s: $(grep -c . "$WORK/$s.stderr" || true) stderr lines; WARN/ERROR:"
    evidence "$(grep -E 'WARN|ERROR|panick' "$WORK/$s.stderr" | tail -10 || true)"
  done
fi
