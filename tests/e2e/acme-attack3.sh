#!/usr/bin/env bash
# End-to-end: red-team run attack3 against main (55b6994), from outside, with an UNMODIFIED ACME
# CSE: can a client make the CSE send anything through an egress route (issue 27.1: the CSE
# would send it as the pod, and the peer's sidecar authenticates it as the CSE)? One IN-CSE
# (/id-in, cse-in, SP-ID //acme.example.com) with a registered peer <remoteCSE> /id-mn whose poa
# is sidecar H's egress listener (what the peer's registration through peer_roles leaves
# there). H (HTTP binding) and W (WebSocket binding) each have an egress route "mn" to sidecar P,
# which stands for the MN's sidecar (mTLS, identity = the client certificate) in front of a
# recording sink. H's route presents the pod certificate /id-in and has an allow list as in
# deploy/kubernetes/base/proxy.yaml (as /id-in: retrieve of the MN's CSEBase and notify; its
# AEs' requests /id-in/...). Attacker: the AE Cae1 (client certificate URI Cae1).
# A check of an open finding prints KNOWN while the proxy lets it through and FIXED once it does
# not; E2E_STRICT=1 counts KNOWN as FAIL. E2E_HOLD=1 keeps everything running until $WORK/hold
# is removed.
#
#   tests/e2e/acme-attack3.sh
#
# Environment: M2M_AUTH_PROXY_BIN, ACME_VENV, ACME_SPEC, E2E_WORK as for acme-mcc.sh; E2E_STRICT.
# Only loopback addresses are used. Every process started here is stopped on exit.
# Requires: bash, curl, openssl, jq, python3 (>= 3.11, with venv).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
  *) echo "usage: $0" >&2; exit 2 ;;
esac
BIN=${M2M_AUTH_PROXY_BIN:-target/debug/m2m-auth-proxy}
case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac
ACME_VENV=${ACME_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/m2m-auth-proxy-e2e/acme-venv}
ACME_SPEC=${ACME_SPEC:-acmecse==2026.5.*}
STRICT=${E2E_STRICT:-0}

H=127.0.0.1
IN_HTTP=25280   # ACME HTTP binding (fixtures and verification reads only)
IN_WS=25180     # ACME WebSocket binding
P_HTTP=25543    # sidecar H: TLS -> ACME HTTP, egress route mn on EGRESS
P_WS=25544      # sidecar W: TLS -> ACME WebSocket, egress route mn on EGRESS_W
P_MN=25545      # sidecar P: the MN's sidecar (mTLS) in front of the sink
H_ADMIN=25591
W_ADMIN=25592
P_ADMIN=25593
EGRESS=25598    # H's egress listener: the <remoteCSE> /id-mn's poa
EGRESS_W=25597  # W's egress listener
SINK=25599      # recording HTTP sink: the MN CSE behind P
SP=acme.example.com

for tool in curl openssl jq python3; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done
WORK=${E2E_WORK:-$(mktemp -d /tmp/m2m-e2e-attack3.XXXXXX)}
mkdir -p "$WORK/req"
WORK=$(cd "$WORK" && pwd)

PASSES=0; FAILS=0; KNOWN=0; PIDS=(); RUN_ID=$(date +%s)-$$
say() { printf '%s\n' "$*"; }
section() { printf '\n== %s\n' "$*"; }
evidence() { sed 's/^/      /' <<<"$1"; }
pass() { PASSES=$((PASSES + 1)); printf 'PASS %s\n' "$1"; [ -z "${2:-}" ] || evidence "$2"; }
fail() { FAILS=$((FAILS + 1)); printf 'FAIL %s\n' "$1"; [ -z "${2:-}" ] || evidence "$2"; }
info() { printf 'INFO %s\n' "$1"; [ -z "${2:-}" ] || evidence "$2"; }
check() { local name=$1 ev=$2; shift 2; if "$@"; then pass "$name" "$ev"; else fail "$name" "$ev"; fi; }
# finding N NAME EVIDENCE CMD...: the protection an open finding lacks
finding() {
  local n=$1 name=$2 ev=$3; shift 3
  if "$@"; then
    PASSES=$((PASSES + 1)); printf 'FIXED finding %s: %s\n' "$n" "$name"; evidence "$ev"
  elif [ "$STRICT" = 1 ]; then
    fail "finding $n: $name" "$ev"
  else
    KNOWN=$((KNOWN + 1)); printf 'KNOWN finding %s: %s\n' "$n" "$name"; evidence "$ev"
  fi
}
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
  printf '\n%d passed, %d failed, %d known findings open\n' "$PASSES" "$FAILS" "$KNOWN"
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

# req NAME METHOD URL ORIGINATOR CERT|- [BODY [CONTENT-TYPE [EXTRA-HEADER]]]: sets STATUS and RSC.
# URLs are sent as written (--path-as-is).
req() {
  local name=$1 method=$2 url=$3 orig=$4 cert=$5 body=${6:-} ctype=${7:-application/json} extra=${8:-}
  local out="$WORK/req/$name" args=()
  args=(-sS -m 30 --path-as-is -X "$method" -o "$out.body" -D "$out.hdr" -w '%{http_code}'
        -H "X-M2M-RI: $name-$RUN_ID" -H 'X-M2M-RVI: 3' -H 'Accept: application/json')
  [ -z "$orig" ] || args+=(-H "X-M2M-Origin: $orig")
  [ -z "$body" ] || args+=(-H "Content-Type: $ctype" --data-binary "$body")
  [ -z "$extra" ] || args+=(-H "$extra")
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
body() { head -c "${2:-300}" "$WORK/req/$1.body"; }
has() { grep -q -- "$2" "$WORK/req/$1.body"; }
jqb() { jq -c "$2" "$WORK/req/$1.body" 2>/dev/null; }
alog() { grep -h '^{' "$WORK/$1.stdout" 2>/dev/null || true; }
by_rid() { alog "$1" | jq -c "select(.request_id==\"$2-$RUN_ID\") | {path, target, rule, status, upstream_status}" 2>/dev/null || true; }
direct() { req "$1" "${3:-GET}" "http://$H:$IN_HTTP$2" CAdmin - "${4:-}" "${5:-application/json}"; }
ri_of() { curl -s -m 10 -H 'X-M2M-Origin: CAdmin' -H "X-M2M-RI: ri-$RUN_ID" -H 'X-M2M-RVI: 3' "http://$H:$IN_HTTP$1" | jq -r '.[] | .ri'; }
# refused NAME: the sidecar answered itself (403 / 4103 or 400 / 4000), nothing reached ACME
refused() {
  [[ "$STATUS/$RSC" == 403/4103 || "$STATUS/$RSC" == 400/4000 ]] \
    && [ "$(alog h | jq -r "select(.request_id==\"$1-$RUN_ID\") | .upstream_status" 2>/dev/null)" = null ]
}
sink_saw() { grep -c -- "$1" "$WORK/sink.log" 2>/dev/null || true; }

section "setup in $WORK"
for p in "$IN_HTTP" "$IN_WS" "$P_HTTP" "$P_WS" "$P_MN" "$H_ADMIN" "$W_ADMIN" "$P_ADMIN" "$EGRESS" "$EGRESS_W" "$SINK"; do
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
leaf cae1 clientAuth "URI:Cae1"
leaf cin clientAuth "URI:/id-in"
leaf cmn clientAuth "URI:/id-mn"
chmod 600 "$PKI"/*.key

# sidecar_config NAME LISTEN UPSTREAM ADMIN EGRESS_LISTEN|-
# H and W: the IN's sidecars. Each has a route "mn" to P, presenting the pod's certificate /id-in;
# the MN's certificate holds the role mnpeer (the route's peer_roles, by certificate).
sidecar_config() {
  cat >"$WORK/$1.yaml" <<EOF
# sidecar $1 (generated by tests/e2e/acme-attack3.sh)
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
    mnpeer: {methods: [mtls], names: ["/id-mn"]}
originator:
  mode: verify
  cse_namespace: true
cse:
  id: "/id-in"
  name: "cse-in"
  sp_id: "//$SP"
authorization:
  default: allow
  rules:
    - {name: admin-for-sysop, originators: ["^CAdmin\$"], unless_roles: [sysop], effect: deny}
log:
  access: true
shutdown:
  grace_period: 1s
EOF
  [ "$5" = - ] || cat >>"$WORK/$1.yaml" <<EOF
egress:
  - name: mn
    listen: "$5"
    peer: "https://$H:$P_MN"
    tls:
      ca: $PKI/ca.pem
      cert: $PKI/cin.pem
      key: $PKI/cin.key
    originators: ["^/id-in(/.*)?\$"]
    peer_roles: [mnpeer]
    peer_cse: {id: /id-mn, name: cse-mn, sp_id: "//$SP"}
    # as deploy/kubernetes/base/proxy.yaml: the CSE as itself only for what Mcc needs
    allow:
      - {originators: ["^/id-in\$"], operations: [retrieve], targets: ["/cse-mn"]}
      - {originators: ["^/id-in\$"], operations: [notify]}
      - {originators: ["^/id-in/"]}
EOF
}
sidecar_config h "$H:$P_HTTP" "http://$H:$IN_HTTP" "$H:$H_ADMIN" "$H:$EGRESS"
sidecar_config w "$H:$P_WS" "http://$H:$IN_WS" "$H:$W_ADMIN" "$H:$EGRESS_W"
# P: the MN's sidecar, in front of the sink; logs who called (identity, originator)
cat >"$WORK/p.yaml" <<EOF
# sidecar p (generated by tests/e2e/acme-attack3.sh): stands for the MN's sidecar
listen: "$H:$P_MN"
threads: 1
tls:
  cert: $PKI/server.pem
  key: $PKI/server.key
  client_ca: $PKI/ca.pem
  client_cert: required
upstream: "http://$H:$SINK"
admin: "$H:$P_ADMIN"
auth:
  methods: [mtls]
  mtls:
    identity: [uri]
originator:
  mode: verify
  cse_namespace: true
log:
  access: true
shutdown:
  grace_period: 1s
EOF
for c in h w p; do
  "$BIN" check --config "$WORK/$c.yaml" >"$WORK/$c.check.log" 2>&1 \
    || die "setup: m2m-auth-proxy check --config $c.yaml" "$(cat "$WORK/$c.check.log")"
done

mkdir -p "$WORK/in/logs"
cat >"$WORK/in/acme.ini" <<EOF
; generated by tests/e2e/acme-attack3.sh
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

[cse.registration]
allowedCSROriginators=/id-mn
checkInterval=10

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
# The sink: answers every request 200 / 2000 (echoing X-M2M-RI, a CSEBase body) and records
# its request line and X-M2M-Origin; it stands for the MN at its poa and for any URL a client
# names as a response target.
cat >"$WORK/sink.py" <<'EOF'
import re, socket, sys, threading, time
port, log_path, secs = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port)); srv.listen(16); srv.settimeout(1)
log = open(log_path, "a", buffering=1)
def handle(c):
    c.settimeout(5); data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = c.recv(65536)
            if not chunk: return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        while m and len(body) < int(m.group(1)):
            chunk = c.recv(65536)
            if not chunk: break
            body += chunk
        lines = head.decode("latin1").split("\r\n")
        origin = [l for l in lines if l.lower().startswith("x-m2m-origin:")]
        log.write(f"{lines[0]} | {' '.join(origin)} | {body[:300].decode('latin1')}\n")
        ri = re.search(rb"(?i)\r\nx-m2m-ri: *([^\r]*)", head)
        out = b'{"m2m:cb":{"rn":"cse-mn","csi":"/id-mn","ri":"id-mn"}}'
        c.sendall(b"HTTP/1.1 200 OK\r\nX-M2M-RSC: 2000\r\nX-M2M-RI: " + (ri.group(1) if ri else b"x")
                  + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(out)).encode()
                  + b"\r\nConnection: close\r\n\r\n" + out)
    except Exception as e:
        log.write(f"error {e!r}\n")
    finally:
        c.close()
end = time.time() + secs
while time.time() < end:
    try:
        c, _ = srv.accept()
    except socket.timeout:
        continue
    threading.Thread(target=handle, args=(c,), daemon=True).start()
EOF
ACME_LAUNCHER='import runpy, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.argv[0] = "acmecse"
runpy.run_module("acmecse", run_name="__main__", alter_sys=True)'
admin_ready() { curl -sf -o /dev/null -m 3 "http://$H:$1/readyz"; }
acme_started() { grep -q "CSE started" "$WORK/in.stdout" 2>/dev/null; }
cse_up() { curl -s -o /dev/null -m 3 -H 'X-M2M-Origin: CAdmin' -H "X-M2M-RI: up-$RUN_ID" -H 'X-M2M-RVI: 3' "http://$H:$IN_HTTP/~/id-in/cse-in"; }
sink_up() { ! port_free "$SINK"; }
start sink "$WORK/sink" python3 "$WORK/sink.py" "$SINK" "$WORK/sink.log" 600
start h "$WORK/h" "$BIN" --config "$WORK/h.yaml"
start w "$WORK/w" "$BIN" --config "$WORK/w.yaml"
start p "$WORK/p" "$BIN" --config "$WORK/p.yaml"
wait_for sink 10 sink_up || die "setup: sink on $SINK" "$(cat "$WORK/sink.stderr")"
wait_for h 30 admin_ready "$H_ADMIN" || die "setup: sidecar H ready" "$(tail -20 "$WORK/h.stderr")"
wait_for w 30 admin_ready "$W_ADMIN" || die "setup: sidecar W ready" "$(tail -20 "$WORK/w.stderr")"
wait_for p 30 admin_ready "$P_ADMIN" || die "setup: sidecar P ready" "$(tail -20 "$WORK/p.stderr")"
start in "$WORK/in" "$ACME_VENV/bin/python" -c "$ACME_LAUNCHER" --config acme.ini --base-directory "$WORK/in" --headless
{ wait_for in 120 acme_started && wait_for in 30 cse_up; } \
  || die "setup: IN-CSE up" "$(grep -h -E 'ERROR|Error' "$WORK/in.stdout" "$WORK/in.stderr" 2>/dev/null | tail -10)"
say "IN-CSE up (HTTP $IN_HTTP, WebSocket $IN_WS); sidecars H $P_HTTP -> HTTP, W $P_WS -> WebSocket; P $P_MN -> sink $SINK; egress listeners H $EGRESS, W $EGRESS_W"

PX="https://$H:$P_HTTP"
# ACME's own liveliness checks of the <remoteCSE> (GET /~/id-mn/cse-mn as /id-in every 10 s)
# are no client's doing and are not counted
EG_SEL='select(.direction=="egress" and (.method != "GET" or .path != "/~/id-mn/cse-mn"))'
egress_n() { alog "${1:-h}" | jq -c "$EG_SEL" 2>/dev/null | wc -l; }
sink_lines() { grep -v '^GET /~/id-mn/cse-mn HTTP/1.1 | X-M2M-Origin: /id-in |' "$WORK/sink.log" 2>/dev/null || true; }
sink_n() { sink_lines | wc -l; }
# mark / leaked: what left through an egress route (H's and W's egress access-log lines, the sink)
# since the last mark
mark() { E0=$(( $(egress_n h) + $(egress_n w) )); S0=$(sink_n); }
left() {
  local e s
  e=$(( $(egress_n h) + $(egress_n w) - E0 )); s=$(( $(sink_n) - S0 ))
  LEFT="egress lines +$e, sink +$s"
  [ "$s" -eq 0 ] || LEFT="$LEFT: $(sink_lines | tail -n "$s" | cut -c1-220 | tr '\n' ';')"
  [ "$e" -eq 0 ] || LEFT="$LEFT; egress: $( (alog h; alog w) | jq -c "$EG_SEL"' | {route, method, path, originator, status, upstream_status}' 2>/dev/null | tail -n "$e" | tr '\n' ' ')"
  [ "$e" -eq 0 ] && [ "$s" -eq 0 ]
}
settle() { sleep "${1:-3}"; if left; then L=y; else L=n; fi; }
# held NAME: the sidecar refused the request itself and nothing left through a route
held() { refused "$1" && [ "$L" = y ]; }

section "0. fixtures"
req 0-1 POST "http://$H:$IN_HTTP/cse-in" /id-mn - \
  "{\"m2m:csr\":{\"rn\":\"id-mn\",\"csi\":\"/id-mn\",\"cb\":\"/id-mn/cse-mn\",\"poa\":[\"http://$H:$EGRESS\"],\"rr\":true,\"srv\":[\"3\",\"4\"],\"cst\":2,\"dcse\":[]}}" \
  'application/json;ty=16'
check "0.1 <remoteCSE> /id-mn whose poa is H's egress listener (as the MN's registration through the peer role leaves it)" "$(summary 0-1)" test "$STATUS" = 201
req 0-2 POST "$PX/cse-in" Cae1 cae1 '{"m2m:ae":{"rn":"ae1","api":"Nae1","rr":false,"srv":["3"]}}' 'application/json;ty=2'
check "0.2 the AE Cae1 registers through H (the attacker)" "$(summary 0-2): $(jqb 0-2 '.["m2m:ae"] | {ri, aei}')" test "$STATUS" = 201
req 0-3 POST "$PX/cse-in/ae1" Cae1 cae1 '{"m2m:cnt":{"rn":"box"}}' 'application/json;ty=3'
check "0.3 Cae1 creates /cse-in/ae1/box through H" "$(summary 0-3)" test "$STATUS" = 201
mark; req 0-4 GET "$PX/~/id-mn/cse-mn" CAdmin cadmin; settle 2
info "0.4 control: CAdmin's GET /~/id-mn/cse-mn through H is forwarded by ACME through the route (as /id-in/CAdmin)" "$(summary 0-4); $LEFT"
mark; req 0-5 POST "$PX/cse-in/ae1/box" Cae1 cae1 "{\"m2m:sub\":{\"rn\":\"s-url\",\"nu\":[\"http://$H:$EGRESS/cse-mn/x\"]}}" 'application/json;ty=23'; settle
check "0.5 control: a subscription whose nu is the listener's URL is refused, nothing leaves" "$(summary 0-5): $(body 0-5 160); $LEFT" held 0-5

section "1. a client names the peer by ID, not by URL: the CSE sends to it through the route as /id-in (finding 1, open)"
# The CSE resolves an ID (SP-relative /id-mn/..., the CSE-ID /id-mn, the <remoteCSE>'s resource
# ID or structured path) to the <remoteCSE>'s poa, which is the egress listener, and sends as
# itself. No URL appears anywhere in the request, so the steering check has nothing to find;
# the route's allow lets the CSE's notify out (as deploy/kubernetes/base/proxy.yaml does).
# untouched: nothing reached the peer (the sink behind P) since the mark
untouched() { [ "$(( $(sink_n) - S0 ))" -eq 0 ]; }
n=0
for nu in /id-mn/cse-mn/x /id-mn id-mn cse-in/id-mn /id-in/cse-in/id-mn; do
  n=$((n + 1)); mark
  req "1-$n" POST "$PX/cse-in/ae1/box" Cae1 cae1 "{\"m2m:sub\":{\"rn\":\"s1-$n\",\"nu\":[\"$nu\"]}}" 'application/json;ty=23'
  settle 2
  finding "1.$n" "Cae1's subscription with nu [\"$nu\"] makes no request leave through the route" \
    "$(summary "1-$n"); $LEFT" untouched
done
mark
req 1-6 GET "$PX/cse-in/ae1/box?rt=2" Cae1 cae1 "" "" "X-M2M-RTU: /id-mn/cse-mn/rtu-target"
settle 2
finding 1.6 "GET ?rt=2 with X-M2M-RTU: /id-mn/cse-mn/rtu-target makes no request leave through the route" \
  "$(summary 1-6); $LEFT" untouched
mark
req 1-7 PUT "$PX/cse-in/ae1/box/s1-2" Cae1 cae1 '{"m2m:sub":{"nu":["/id-mn/cse-mn/via-update"]}}'
settle 2
finding 1.7 "an UPDATE of a subscription's nu to /id-mn/cse-mn/via-update makes no request leave" \
  "$(summary 1-7); $LEFT" untouched
mark
req 1-8 PUT "$PX/cse-in/ae1/box" Cae1 cae1 '{"m2m:cnt":{"lbl":["attacker-chosen-label"]}}'
settle 2
finding 1.8 "an UPDATE of the subscribed container sends no notification (its content the attacker's) through the route" \
  "$(summary 1-8); $LEFT" untouched
mark
req 1-9 POST "$PX/cse-in/ae1" Cae1 cae1 '{"m2m:tsb":{"rn":"tsb","bcni":"PT2S","bcnc":1,"bcnu":["/id-mn/cse-mn/beacon"]}}' 'application/json;ty=60'
settle 5
finding 1.9 "a <timeSyncBeacon> with bcnu [/id-mn/cse-mn/beacon] (every 2 s) makes no request leave" \
  "$(summary 1-9); $LEFT" untouched
req 1-10 DELETE "$PX/cse-in/ae1/tsb" Cae1 cae1
for ((n = 1; n <= 5; n++)); do req "1-d$n" DELETE "$PX/cse-in/ae1/box/s1-$n" Cae1 cae1; done
info "1.x the peer's sidecar P authenticated these requests as the pod" \
  "$(alog p | jq -c 'select(.method=="POST") | {identity, originator, method, path, status}' 2>/dev/null | sort | uniq -c | head -8)"

section "2. held: URLs of the listener in every spelling, bodies the proxy cannot read"
n=0
for u in "http://127.0.0.1:$EGRESS/a" "http://127.1:$EGRESS/a" "http://2130706433:$EGRESS/a" "http://0x7f000001:$EGRESS/a" \
         "http://[::ffff:127.0.0.1]:$EGRESS/a" "HTTP://localhost.:$EGRESS/a" "http://u@127.0.0.1:$EGRESS/a" \
         'http:\\/\\/127.0.0.1:'"$EGRESS"'\\/a' 'http:\u002f\u002f127.0.0.1:'"$EGRESS"'/a' "http://127.0.0.1:%32%35%35%39%38/a" \
         "http://127.0.0.1%3A$EGRESS/a" " http://127.0.0.1:$EGRESS/a"; do
  n=$((n + 1)); mark
  req "2-$n" POST "$PX/cse-in/ae1/box" Cae1 cae1 "{\"m2m:sub\":{\"nu\":[\"$u\"]}}" 'application/json;ty=23'
  settle 1
  check "2.$n nu [\"$u\"]: refused, nothing leaves" "$(summary "2-$n"): $(body "2-$n" 120); $LEFT" held "2-$n"
done
n=$((n + 1)); mark
req "2-$n" GET "$PX/cse-in/ae1/box?rt=2" Cae1 cae1 "" "" "X-M2M-RTU: http://localhost:$EGRESS/x"
settle 1
check "2.$n X-M2M-RTU naming the listener as localhost: refused" "$(summary "2-$n"); $LEFT" held "2-$n"
U16="$WORK/u16.json"; printf '{"m2m:sub":{"nu":["http://127.0.0.1:%s/u16"]}}' "$EGRESS" | iconv -t UTF-16LE >"$U16"
n=$((n + 1)); mark
req "2-$n" POST "$PX/cse-in/ae1/box" Cae1 cae1 "@$U16" 'application/json;ty=23'
settle 1
check "2.$n a UTF-16 JSON body naming the listener: refused" "$(summary "2-$n"): $(body "2-$n" 100); $LEFT" held "2-$n"
n=$((n + 1)); mark
req "2-$n" POST "$PX/cse-in/ae1/box" Cae1 cae1 \
  "<m2m:sub xmlns:m2m=\"http://www.onem2m.org/xml/protocols\"><nu>http://127.0.0.1:$EGRESS/xml</nu></m2m:sub>" 'application/xml;ty=23'
settle 1
check "2.$n an XML body naming the listener: refused" "$(summary "2-$n"): $(body "2-$n" 100); $LEFT" held "2-$n"
n=$((n + 1)); mark
req "2-$n" POST "$PX/cse-in/ae1/box" Cae1 cae1 "{\"m2m:sub\":{\"nu\":[\"/id-in/x\"],\"nu\":[\"http://127.0.0.1:$EGRESS/dup\"]}}" 'application/json;ty=23'
settle 1
check "2.$n duplicate keys (the second nu names the listener): refused" "$(summary "2-$n"): $(body "2-$n" 100); $LEFT" held "2-$n"
n=$((n + 1)); mark
req "2-$n" PUT "$PX/cse-in/ae1" Cae1 cae1 '{"m2m:ae":{"at":["/id-mn"]}}'
settle 2
check "2.$n announcing the AE to /id-mn: the route's allow refuses the CSE's create as /id-in, the peer sees nothing" \
  "$(summary "2-$n"): $(body "2-$n" 100); $LEFT" untouched

section "3. held: the peer role and poa rewriting are the peer's only"
req 3-1 GET "$PX/cse-in" /id-mn cae1
check "3.1 Cae1 claiming /id-mn: refused" "$(summary 3-1): $(body 3-1 100)" refused 3-1
req 3-2 PUT "$PX/cse-in/ae1" Cae1 cae1 "{\"m2m:ae\":{\"poa\":[\"https://$H:$P_MN\"],\"rr\":true}}"
direct 3-3 /cse-in/ae1
check "3.2 Cae1 advertising the peer's public URL as its poa: ACME keeps it unrewritten" \
  "$(summary 3-2); stored poa: $(jqb 3-3 '.["m2m:ae"].poa')" test "$(jqb 3-3 '.["m2m:ae"].poa')" = "[\"https://$H:$P_MN\"]"
if [ -n "${E2E_HOLD:-}" ]; then
  say "holding: rm $WORK/hold to stop"; touch "$WORK/hold"
  for ((i = 0; i < 3600; i++)); do [ -e "$WORK/hold" ] || break; sleep 1; done
fi
