#!/usr/bin/env bash
# End-to-end: what a request reaches beyond the target the rules judged, against a real,
# UNMODIFIED ACME CSE (findings of the red-team run `attack1`; tests/reach.rs has the same
# findings as #[ignore]d Rust tests). One IN-CSE (/id-in, cse-in, SP-ID //acme.example.com,
# a <remoteCSE> /id-mn whose poa is a recording sink on 127.0.0.1) behind sidecar H (HTTP
# binding) and sidecar W (WebSocket binding), with
#   - {name: no-deletes-under-cse-in, operations: [delete], targets: ["/cse-in/**"], effect: deny}
#   - {name: no-secret-reads, operations: [retrieve], targets: ["/cse-in/secret/**"], effect: deny}
#   - {name: no-mn-private, operations: [retrieve], targets: ["/~/id-mn/cse-mn/private/**"], effect: deny}
# Every check is first shown against ACME alone where that helps, then through the sidecars.
# A check of an open finding prints KNOWN (not counted as a failure) while it fails, FIXED once
# it passes; E2E_STRICT=1 counts KNOWN as FAIL. See tests/e2e/README.md.
#
#   tests/e2e/acme-reach.sh
#
# Environment: M2M_AUTH_PROXY_BIN, ACME_VENV, ACME_SPEC, E2E_WORK as for acme-mcc.sh; E2E_STRICT.
# Only loopback addresses are used. Every process started here is stopped on exit.
# Requires: bash, curl, openssl, jq, python3 (>= 3.11, with venv).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
  *) echo "usage: $0" >&2; exit 2 ;;
esac
BIN=${M2M_AUTH_PROXY_BIN:-target/debug/m2m-auth-proxy}
case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac
ACME_VENV=${ACME_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/m2m-auth-proxy-e2e/acme-venv}
ACME_SPEC=${ACME_SPEC:-acmecse==2026.5.*}
STRICT=${E2E_STRICT:-0}

H=127.0.0.1
IN_HTTP=27280   # ACME HTTP binding (fixtures and verification reads only)
IN_WS=27180     # ACME WebSocket binding
P_HTTP=27543    # sidecar H: TLS -> ACME HTTP
P_WS=27544      # sidecar W: TLS -> ACME WebSocket
H_ADMIN=27591
W_ADMIN=27592
SINK=27599      # recording HTTP sink: the fake MN's poa, and response targets (X-M2M-RTU)
SP=acme.example.com

for tool in curl openssl jq python3; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done
WORK=${E2E_WORK:-$(mktemp -d /tmp/m2m-e2e-reach.XXXXXX)}
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
for p in "$IN_HTTP" "$IN_WS" "$P_HTTP" "$P_WS" "$H_ADMIN" "$W_ADMIN" "$SINK"; do
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
leaf cgw clientAuth "URI:Cgw"
leaf cvictim clientAuth "URI:Cvictim"
chmod 600 "$PKI"/*.key

# sidecar_config NAME LISTEN UPSTREAM ADMIN
sidecar_config() {
  cat >"$WORK/$1.yaml" <<EOF
# sidecar $1 (generated by tests/e2e/acme-reach.sh)
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
    Cgw: ["Cgw-*"]
cse:
  id: "/id-in"
  name: "cse-in"
  sp_id: "//$SP"
authorization:
  default: allow
  rules:
    - {name: no-deletes-under-cse-in, operations: [delete], targets: ["/cse-in/**"], effect: deny}
    - {name: no-secret-reads, operations: [retrieve], targets: ["/cse-in/secret/**"], effect: deny}
    - {name: no-mn-private, operations: [retrieve], targets: ["/~/id-mn/cse-mn/private/**"], effect: deny}
    - {name: admin-for-sysop, originators: ["^CAdmin\$"], unless_roles: [sysop], effect: deny}
log:
  access: true
shutdown:
  grace_period: 1s
EOF
}
sidecar_config h "$H:$P_HTTP" "http://$H:$IN_HTTP" "$H:$H_ADMIN"
sidecar_config w "$H:$P_WS" "http://$H:$IN_WS" "$H:$W_ADMIN"
for c in h w; do
  "$BIN" check --config "$WORK/$c.yaml" >"$WORK/$c.check.log" 2>&1 \
    || die "setup: m2m-auth-proxy check --config $c.yaml" "$(cat "$WORK/$c.check.log")"
done

mkdir -p "$WORK/in/logs"
cat >"$WORK/in/acme.ini" <<EOF
; generated by tests/e2e/acme-reach.sh
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
wait_for sink 10 sink_up || die "setup: sink on $SINK" "$(cat "$WORK/sink.stderr")"
wait_for h 30 admin_ready "$H_ADMIN" || die "setup: sidecar H ready" "$(tail -20 "$WORK/h.stderr")"
wait_for w 30 admin_ready "$W_ADMIN" || die "setup: sidecar W ready" "$(tail -20 "$WORK/w.stderr")"
start in "$WORK/in" "$ACME_VENV/bin/python" -c "$ACME_LAUNCHER" --config acme.ini --base-directory "$WORK/in" --headless
{ wait_for in 120 acme_started && wait_for in 30 cse_up; } \
  || die "setup: IN-CSE up" "$(grep -h -E 'ERROR|Error' "$WORK/in.stdout" "$WORK/in.stderr" 2>/dev/null | tail -10)"
say "IN-CSE up (HTTP $IN_HTTP, WebSocket $IN_WS); sidecars H $P_HTTP -> HTTP, W $P_WS -> WebSocket; sink $SINK"

PX="https://$H:$P_HTTP"
section "0. fixtures, made directly at ACME as CAdmin"
mk() { direct "0-$1" "$2" POST "$3" "application/json;ty=$4"; check "0.$1 $2 <- $3" "$(summary "0-$1"): $(body "0-$1" 160)" test "$STATUS" = 201; }
mk 1 /cse-in '{"m2m:cnt":{"rn":"secret","lbl":["secret-label"]}}' 3
mk 2 /cse-in/secret '{"m2m:cnt":{"rn":"inner"}}' 3
mk 3 /cse-in/secret/inner '{"m2m:cin":{"rn":"c1","con":"deep-s3cret"}}' 4
RDF='<?xml version="1.0"?><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:ex="http://example.org/"><rdf:Description rdf:about="http://example.org/vault"><ex:pin>SECRET-PIN-4711</ex:pin></rdf:Description></rdf:RDF>'
mk 4 /cse-in/secret "{\"m2m:smd\":{\"rn\":\"sem\",\"dcrp\":4,\"dsp\":\"$(printf '%s' "$RDF" | base64 -w0)\"}}" 24
mk 5 /cse-in '{"m2m:cnt":{"rn":"keepme"}}' 3
mk 6 /cse-in '{"m2m:cnt":{"rn":"pub"}}' 3
req 0-7 POST "http://$H:$IN_HTTP/cse-in" /id-mn - \
  "{\"m2m:csr\":{\"rn\":\"id-mn\",\"csi\":\"/id-mn\",\"cb\":\"/id-mn/cse-mn\",\"poa\":[\"http://$H:$SINK\"],\"rr\":true,\"srv\":[\"3\",\"4\"],\"cst\":2,\"dcse\":[]}}" \
  'application/json;ty=16'
check "0.7 <remoteCSE> /id-mn with poa http://$H:$SINK (the sink stands for the MN)" "$(summary 0-7)" test "$STATUS" = 201
C1=$(ri_of /cse-in/secret/inner/c1); PUB=$(ri_of /cse-in/pub); KEEP=$(ri_of /cse-in/keepme)
req 0-8 POST "http://$H:$IN_HTTP/cse-in/id-mn" /id-mn - "{\"m2m:cntA\":{\"rn\":\"annc\",\"lnk\":\"/id-in/cse-in/secret/inner/c1\"}}" 'application/json;ty=10003'
check "0.8 an announced container at /cse-in/id-mn/annc whose lnk is the secret c1 (made by /id-mn)" "$(summary 0-8)" test "$STATUS" = 201
n=8
for path in /cse-in/secret "/cse-in?rcn=4" /cse-in/secret/inner/c1; do
  n=$((n + 1))
  req "0-$n" GET "$PX$path" CAdmin cadmin
  check "0.$n baseline: GET $path through H is refused by no-secret-reads" "$(summary "0-$n")" test "$STATUS/$RSC" = 403/4103
done

section "1. result contents beyond 4, 5, 6, 8 (finding 1)"
req 1-12 GET "$PX/cse-in?rcn=12" CAdmin cadmin
finding 1 "GET /cse-in?rcn=12 (permissions) does not return the secret subtree" \
  "$(summary 1-12); deep-s3cret in the answer: $(grep -c deep-s3cret "$WORK/req/1-12.body" || true); access log: $(by_rid h 1-12)" \
  refused 1-12
Q=$(python3 -c 'import urllib.parse; print(urllib.parse.quote("SELECT ?o WHERE { ?s ?p ?o }", safe=""))')
req 1-10 GET "$PX/cse-in?rcn=10&smf=$Q" CAdmin cadmin
finding 1 "GET /cse-in?rcn=10&smf=<SPARQL> (semantic content) does not query the secret semantic descriptor" \
  "$(summary 1-10): $(body 1-10 200); access log: $(by_rid h 1-10)" refused 1-10
req 1-7 GET "$PX/cse-in/id-mn/annc?rcn=7" CAdmin cadmin
finding 1 "GET /cse-in/id-mn/annc?rcn=7 (original resource) does not return what lnk names (secret c1)" \
  "$(summary 1-7): $(body 1-7 200); access log: $(by_rid h 1-7)" refused 1-7

section "2. a # in the target (finding 2)"
direct 2-direct "/cse-in/secret%23lbl"
info "ACME alone: GET /cse-in/secret%23lbl is a partial retrieve of /cse-in/secret" "$(summary 2-direct): $(body 2-direct)"
req 2-1 GET "$PX/cse-in/secret%23lbl" CAdmin cadmin
finding 2 "GET /cse-in/secret%23lbl is not a partial retrieve of the denied /cse-in/secret" \
  "$(summary 2-1): $(body 2-1 200); access log: $(by_rid h 2-1)" refused 2-1

section "3. a ? in another CSE's target (finding 3)"
before=$(wc -l <"$WORK/sink.log" 2>/dev/null || echo 0)
req 3-0 GET "$PX/~/id-mn/cse-mn/private" CAdmin cadmin
check "3.0 GET /~/id-mn/cse-mn/private: refused by no-mn-private" "$(summary 3-0)" test "$STATUS/$RSC" = 403/4103
req 3-1 GET "$PX/~/id-mn/cse-mn/private%3F" CAdmin cadmin
sleep 1
finding 3 "GET /~/id-mn/cse-mn/private%3F does not reach the MN as GET /~/id-mn/cse-mn/private" \
  "$(summary 3-1); access log: $(by_rid h 3-1); the MN (sink) saw: $(tail -n +$((before + 1)) "$WORK/sink.log" | cut -d'|' -f1,2 | tr '\n' ';')" \
  refused 3-1

section "4. an <action> executes a primitive the rules never judged (finding 4)"
req 4-0 DELETE "$PX/cse-in/keepme" CAdmin cadmin
check "4.0 DELETE /cse-in/keepme: refused by no-deletes-under-cse-in" "$(summary 4-0)" test "$STATUS/$RSC" = 403/4103
ACT="{\"m2m:actr\":{\"rn\":\"act1\",\"sri\":\"$PUB\",\"evc\":{\"optr\":1,\"sbjt\":\"cni\",\"thld\":1},\"evm\":1,\"orc\":\"$KEEP\",\"apv\":{\"op\":4,\"fr\":\"CAdmin\",\"to\":\"cse-in/pub\",\"rqi\":\"act-del\",\"rvi\":\"3\"}}}"
req 4-1 POST "$PX/cse-in/pub" CAdmin cadmin "$ACT" 'application/json;ty=65'
req 4-2 POST "$PX/cse-in/pub" CAdmin cadmin '{"m2m:cin":{"con":"trigger"}}' 'application/json;ty=4'
sleep 2
direct 4-3 /cse-in/keepme
finding 4 "an <action> (orc keepme, apv op 4) created through H does not delete /cse-in/keepme" \
  "$(summary 4-1); trigger: $(summary 4-2); keepme now: $(summary 4-3)" \
  test "$STATUS" = 200
ACT2="{\"m2m:actr\":{\"rn\":\"act2\",\"sri\":\"$PUB\",\"evc\":{\"optr\":1,\"sbjt\":\"cni\",\"thld\":2},\"evm\":1,\"orc\":\"$C1\",\"apv\":{\"op\":2,\"fr\":\"CAdmin\",\"to\":\"cse-in/pub\",\"rqi\":\"act-get\",\"rvi\":\"3\"}}}"
req 4-4 POST "$PX/cse-in/pub" CAdmin cadmin "$ACT2" 'application/json;ty=65'
req 4-5 POST "$PX/cse-in/pub" CAdmin cadmin '{"m2m:cin":{"con":"trigger2"}}' 'application/json;ty=4'
sleep 2
req 4-6 GET "$PX/cse-in/pub/act2" CAdmin cadmin
finding 4 "an <action> (orc secret c1, apv op 2) does not put deep-s3cret into its air" \
  "$(summary 4-4); $(summary 4-6): $(jqb 4-6 '.["m2m:actr"].air.pc' | head -c 200)" \
  bash -c "! grep -q deep-s3cret '$WORK/req/4-6.body'"

section "5. a response target the CSE sends to at once (finding 5, issue 27.1)"
before=$(wc -l <"$WORK/sink.log" 2>/dev/null || echo 0)
req 5-1 GET "$PX/cse-in/pub?rt=2" CAdmin cadmin "" "" "X-M2M-RTU: http://$H:$SINK/cse-in/anything?x=1"
sleep 3
finding 5 "X-M2M-RTU: http://$H:$SINK/… with rt=2 does not make the CSE send to that URL as /id-in" \
  "$(summary 5-1): $(body 5-1 100); the sink saw: $(tail -n +$((before + 1)) "$WORK/sink.log" | cut -c1-200 | tr '\n' ';')" \
  bash -c "[ \$(tail -n +$((before + 1)) '$WORK/sink.log' | grep -c 'POST /cse-in/anything') = 0 ]"

section "6. an allow pattern reaches past one AE-ID segment (finding 6)"
# Cgw may act for its sub-AEs Cgw-… (originator.allow: Cgw: ["Cgw-*"], the docs' example)
AE_SQ='{"m2m:ae":{"rn":"gwsq","api":"Ngw","rr":true,"srv":["3"],"poa":["http://127.0.0.1:'"$SINK"'"]}}'
req 6-1 POST "$PX/cse-in" "Cgw-x/id-mn2" cgw "$AE_SQ" 'application/json;ty=2'
finding 6 "Cgw (allowed Cgw-*) cannot register an AE as Cgw-x/id-mn2 (ACME: resource ID id-mn2)" \
  "$(summary 6-1): $(jqb 6-1 '.["m2m:ae"] | {ri, aei}')" refused 6-1
before=$(wc -l <"$WORK/sink.log" 2>/dev/null || echo 0)
req 6-2 GET "$PX/~/id-mn2/cse-mn2/x" CAdmin cadmin
sleep 1
finding 6 "CAdmin's GET /~/id-mn2/cse-mn2/x does not go to the squatter's poa" \
  "$(summary 6-2): $(body 6-2 120); the sink saw: $(tail -n +$((before + 1)) "$WORK/sink.log" | cut -d'|' -f1,2 | tr '\n' ';')" \
  bash -c "[ \$(tail -n +$((before + 1)) '$WORK/sink.log' | grep -c 'id-mn2') = 0 ]"
req 6-3 POST "$PX/cse-in" "Cgw-x/Cvictim" cgw '{"m2m:ae":{"rn":"gwsq2","api":"Ngw","rr":false,"srv":["3"]}}' 'application/json;ty=2'
req 6-4 POST "$PX/cse-in" Cvictim cvictim '{"m2m:ae":{"rn":"victimApp","api":"Nvictim","rr":false,"srv":["3"]}}' 'application/json;ty=2'
finding 6 "the AE Cvictim registers after Cgw tried Cgw-x/Cvictim" \
  "$(summary 6-3): $(jqb 6-3 '.["m2m:ae"] | {ri, aei}'); Cvictim: $(summary 6-4): $(body 6-4 120)" \
  test "$STATUS" = 201

section "7. the same over ACME's WebSocket binding (sidecar W)"
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
jq -cn '{op: 2, to: "cse-in", rqi: "ws-rcn12", rvi: "3", rcn: 12}' >>"$WS_IN"
jq -cn '{op: 2, to: "cse-in/secret#lbl", rqi: "ws-frag", rvi: "3"}' >>"$WS_IN"
jq -cn '{op: 2, to: "cse-in/secret", rqi: "ws-plain", rvi: "3"}' >>"$WS_IN"
set +e
"$ACME_VENV/bin/python" "$WORK/ws.py" "wss://$H:$P_WS/" "$PKI/ca.pem" "$PKI/cadmin.pem" "$PKI/cadmin.key" \
  <"$WS_IN" >"$WORK/ws.out" 2>"$WORK/ws.err"
ws_rc=$?
set -e
[ "$ws_rc" = 0 ] || fail "7.0 WebSocket client" "exit $ws_rc: $(tail -5 "$WORK/ws.err")"
ws_rsc() { jq -r "select(.rqi==\"$1\") | .rsc" "$WORK/ws.out" 2>/dev/null | head -1; }
check "7.1 WebSocket retrieve of cse-in/secret: rsc 4103" "$(ws_rsc ws-plain)" test "$(ws_rsc ws-plain)" = 4103
finding 1 "WebSocket retrieve of cse-in with rcn 12 is refused (no secret subtree)" \
  "rsc $(ws_rsc ws-rcn12), deep-s3cret in it: $(grep -c deep-s3cret "$WORK/ws.out" || true)" \
  test "$(ws_rsc ws-rcn12)" = 4103
finding 2 "WebSocket retrieve of cse-in/secret#lbl is refused" \
  "$(jq -c 'select(.rqi=="ws-frag") | {rsc, pc}' "$WORK/ws.out" 2>/dev/null)" \
  bash -c "[ '$(ws_rsc ws-frag)' = 4103 ] || [ '$(ws_rsc ws-frag)' = 4000 ]"

section "8. non-findings tried on the way (the sidecar holds)"
n=0
for path in "/cse-in?RCN=4" "/cse-in?r%63n=4" "/cse-in?rcn=%2B4" "/cse-in?rcn=1&rcn=4" "/cse-in?x=1;rcn=4" \
    "/cse-in?fu=1" "/cse-in/%73ecret" "/~/id-in/-/secret" "/_/ACME.EXAMPLE.COM/id-in/cse-in/secret"; do
  n=$((n + 1))
  req "8-$n" GET "$PX$path" CAdmin cadmin
  check "8.$n GET $path: refused by no-secret-reads" "$(summary "8-$n")" test "$STATUS/$RSC" = 403/4103
done
for claim in CAdmin /id-in/CAdmin "//$SP/id-in/CAdmin" "//ACME.EXAMPLE.COM/id-in/CAdmin" /id-in; do
  n=$((n + 1))
  req "8-$n" GET "$PX/cse-in/pub" "$claim" ctool
  check "8.$n Ctool claiming $claim: 403 / 4103" "$(summary "8-$n"): $(body "8-$n" 120)" test "$STATUS/$RSC" = 403/4103
done
