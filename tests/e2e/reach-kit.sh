# Sourced by acme-reach.sh, acme-attack2.sh and acme-attack3.sh after their port and path
# settings (E2E_NAME names the work directory): tools, work dir, counters, PASS/FAIL/KNOWN
# helpers, request helpers (curl + jq), access-log and sink readers.

for tool in curl openssl jq python3; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done
WORK=${E2E_WORK:-$(mktemp -d /tmp/m2m-e2e-$E2E_NAME.XXXXXX)}
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

# setup_tools_and_pki PORT...: the ports are free, the proxy binary runs, ACME is installed (a
# venv, reused), and a test CA in $PKI; `leaf NAME EKU SAN` then issues certificates from it
setup_tools_and_pki() {
local p
for p in "$@"; do
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
}

leaf() { # leaf NAME EKU SAN
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=%s\n' \
    "$2" "$3" >"$PKI/$1.ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
    -keyout "$PKI/$1.key" -out "$PKI/$1.csr" >>"$PKI/openssl.log" 2>&1
  openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 2 -extfile "$PKI/$1.ext" -out "$PKI/$1.pem" >>"$PKI/openssl.log" 2>&1
}

# Writes ACME's acme.ini and the recording sink, defines the readiness checks, starts the
# sink and sidecars H and W (their configs written by the caller); the caller waits for them.
start_in_sink_h_w() {
mkdir -p "$WORK/in/logs"
cat >"$WORK/in/acme.ini" <<EOF
; generated by tests/e2e/acme-$E2E_NAME.sh
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
}
