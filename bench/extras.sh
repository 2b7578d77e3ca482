#!/usr/bin/env bash
# Rows the shared harness (../shared/bench/run.sh) does not have, measured the same way (same
# upstream, PKI, CPU pinning, oha options, proxy CPU from /proc/PID/stat):
#   bearer            Bearer token, 1-entry tokens file, keep-alive
#   bearer-100k       same with a 100 000-entry tokens file
#   bearer-100k-reload  same while the tokens file is rewritten (a new 100 000-entry parse on the
#                     reload path) every RELOAD_EVERY seconds: do requests stall?
#   basic-bcrypt10-100k  Basic, bcrypt-10 user among 99 999 {SHA} users, cache on
#   mtls-newconn-ca1 / -ca100  new TLS connection per request, client CA bundle of 1 / 100 CAs
#   sys-*             the same mTLS rows with a second binary (M2M_BIN_SYSSSL, e.g. linked
#                     against Debian's OpenSSL 3.0), when given
#   mtls-newconn-resumed  new connection per request with tls.session_tickets on (oha resumes)
#   resumption        tlsclient.py loop --mode full|resume, TLS 1.3 and 1.2, session tickets on
#                     (RESUME_TICKETS=0: the plain config): full vs resumed handshake CPU
#   memory            idle RSS, and RSS with N idle keep-alive mTLS connections (tlsclient.py hold)
# Called by bench/run.sh; usable alone after `cargo build --release`:
#   M2M_BIN=$PWD/target/release/m2m-auth-proxy bench/extras.sh
# Knobs: DURATION WARMUP REPEATS CONC ONLY SKIP NS RATE RELOAD_EVERY M2M_BIN M2M_BIN_SYSSSL OUT
set -uo pipefail
MYDIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SHARED=${SHARED:-$(cd "$MYDIR/../../shared/bench" && pwd)}
HERE=$SHARED            # lib.sh copies the shared conf/ and runs the shared pki.sh from HERE
. "$SHARED/lib.sh"      # start/stop (own process groups), cleanup trap, tree_ticks, tree_mem, ...

M2M_BIN=${M2M_BIN:-$MYDIR/../target/release/m2m-auth-proxy}
M2M_BIN_SYSSSL=${M2M_BIN_SYSSSL:-}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
REPEATS=${REPEATS:-2}
CONC=${CONC:-32}
ONLY=${ONLY:-}
SKIP=${SKIP:-}
NS=${NS:-1000 5000}
RATE=${RATE:-400}
RELOAD_EVERY=${RELOAD_EVERY:-3}
OHA=${OHA:-oha}
ADMIN_PORT=${ADMIN_PORT:-$((PORT + 1))}
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${OUT:-$WORK/results/m2m-extras-$STAMP}
mkdir -p "$OUT"
TSV=$OUT/extras.tsv
MEMTSV=$OUT/memory.tsv
: > "$TSV"
printf 'proxy\tN\topened\tbad\terrors\testab\tidle0_kb\tidle1_kb\theld_kb\tclosed_kb\tstill_open\n' > "$MEMTSV"
LOADGEN_THREADS=1
export ADMIN_PORT M2M_BIN
want() { { [ -z "$ONLY" ] || [[ $1 =~ $ONLY ]]; } && { [ -z "$SKIP" ] || ! [[ $1 =~ $SKIP ]]; }; }
command -v "$OHA" >/dev/null || die "missing oha (run ../shared/bench/setup.sh)"
[ -x "$M2M_BIN" ] || die "no binary $M2M_BIN (cargo build --release)"

# ---------------------------------------------------------------- credential files
M2M=$WORK/m2m
mkdir -p "$M2M"
BASIC_CRED=$(cat "$PKI/basic.cred"); BASIC_USER=${BASIC_CRED%%:*}
TOKEN=bench-bearer-token-0000000000000000000000000
BEARER_ORIGIN=Cae-bearer1
"$PYTHON" - "$M2M" "$TOKEN" "$BEARER_ORIGIN" "$PKI/htpasswd.bcrypt10" <<'PY'
import base64, hashlib, os, sys
out, token, origin, bcrypt_file = sys.argv[1:]
def tokens(n, path, extra=""):
    if os.path.exists(path) and not extra:
        return
    with open(path, "w") as f:
        f.write("tokens:\n")
        f.write('  - name: bench\n    sha256: "%s"\n    originator: %s\n'
                % (hashlib.sha256(token.encode()).hexdigest(), origin))
        for i in range(1, n):
            # other tokens: random 256-bit values, only their hashes are stored
            f.write('  - name: gw-%d\n    sha256: "%s"\n    originator: Cgw%d\n'
                    % (i, hashlib.sha256(os.urandom(32)).hexdigest(), i))
        f.write(extra)
tokens(1, os.path.join(out, "tokens1.yaml"))
tokens(100000, os.path.join(out, "tokens100k.yaml"))
p = os.path.join(out, "htpasswd100k")
if not os.path.exists(p):
    with open(p, "w") as f:
        f.write(open(bcrypt_file).read().strip() + "\n")
        for i in range(1, 100000):
            d = base64.b64encode(hashlib.sha1(("p%d" % i).encode()).digest()).decode()
            f.write("u%d:{SHA}%s\n" % (i, d))
PY
# CA bundle of 100: the harness's CA (last, so the 99 others are scanned first) + 99 unrelated CAs
if [ ! -s "$M2M/ca100.pem" ]; then
  mkdir -p "$M2M/cas"
  for i in $(seq 1 99); do
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -keyout "$M2M/cas/ca$i.key" -out "$M2M/cas/ca$i.crt" -subj "/O=Other Org $i/CN=Unrelated CA $i" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
  done
  cat "$M2M"/cas/ca*.crt "$PKI/ca.crt" > "$M2M/ca100.pem"
fi

# ---------------------------------------------------------------- env for project-proxy.sh
export LISTEN_HOST=$HOST LISTEN_PORT=$PORT LISTEN_ADDR=$HOST:$PORT UPSTREAM_HOST=$HOST UPSTREAM_PORT=$UPORT \
       UPSTREAM_ADDR=$HOST:$UPORT TLS_CERT=$PKI/server.crt TLS_KEY=$PKI/server.key TLS_PEM=$PKI/server.pem \
       CLIENT_CA=$PKI/ca.crt WORKERS=1 BENCH_WORK=$WORK
URL="https://localhost:$PORT/m2m/cse-bench/cnt-1/la"
HDR=(-H 'X-M2M-Origin: spoofed-by-client' -H 'X-M2M-RI: bench-1')
MTLS_OPTS=(--cacert "$PKI/ca.crt" --cert "$PKI/client.crt" --key "$PKI/client.key")
TCURL=(curl -sS --max-time 5 -o "$RUN/body" -w '%{http_code}' --cacert "$PKI/ca.crt")

# check KIND EXPECTED-ORIGIN -> OK / FAIL:...
check() {
  local c u="https://localhost:$PORT/m2m/check"
  case $1 in
    mtls)
      c=$("${TCURL[@]}" --cert "$PKI/client.crt" --key "$PKI/client.key" -H 'X-M2M-Origin: spoofed' "$u" 2>/dev/null)
      [ "$c" = 200 ] || { echo "FAIL:valid-cert=$c"; return; }
      grep -q "\"origin\":\"$2\"" "$RUN/body" || { echo "FAIL:origin"; return; }
      c=$("${TCURL[@]}" --cert "$PKI/rogue-client.crt" --key "$PKI/rogue-client.key" "$u" 2>/dev/null)
      [ "$c" = 200 ] && { echo "FAIL:rogue-cert-accepted"; return; } ;;
    bearer)
      c=$("${TCURL[@]}" -H "Authorization: Bearer $TOKEN" -H 'X-M2M-Origin: spoofed' "$u" 2>/dev/null)
      [ "$c" = 200 ] || { echo "FAIL:valid-token=$c"; return; }
      grep -q "\"origin\":\"$2\"" "$RUN/body" || { echo "FAIL:origin"; return; }
      c=$("${TCURL[@]}" -H "Authorization: Bearer wrong-token" "$u" 2>/dev/null)
      [ "$c" = 401 ] || { echo "FAIL:wrong-token=$c"; return; } ;;
    basic)
      c=$("${TCURL[@]}" -u "$BASIC_CRED" -H 'X-M2M-Origin: spoofed' "$u" 2>/dev/null)
      [ "$c" = 200 ] || { echo "FAIL:valid-cred=$c"; return; }
      grep -q "\"origin\":\"$2\"" "$RUN/body" || { echo "FAIL:origin"; return; }
      c=$("${TCURL[@]}" -u "$BASIC_USER:wrong" "$u" 2>/dev/null)
      [ "$c" = 401 ] || { echo "FAIL:wrong-pw=$c"; return; } ;;
  esac
  echo OK
}

# measure ID LABEL PROXYPID CHECK ROUND [oha options...] -> one TSV line
measure() {
  local id=$1 label=$2 ppid=$3 chk=$4 r=$5; shift 5
  local opts=(--no-tui -w --worker-threads "$LOADGEN_THREADS" -c "$CONC" "$@")
  wait_idle
  timeout -k 2 $((WARMUP + 20)) taskset -c "$LOADGEN_CPUS" "$OHA" "${opts[@]}" -z "${WARMUP}s" "$URL" > /dev/null 2>&1
  local p0 p1 u0 u1 a0 a1 at0 at1 t0 t1
  p0=$(tree_ticks "$ppid"); u0=$(tree_ticks "$UPID"); read -r a0 at0 < <(cpu_ticks "$ALLCPUS"); t0=$(date +%s.%N)
  timeout -k 2 $((DURATION + 30)) taskset -c "$LOADGEN_CPUS" "$OHA" "${opts[@]}" -z "${DURATION}s" \
    --output-format json "$URL" > "$OUT/$id.$r.json" 2> "$OUT/$id.$r.err"
  t1=$(date +%s.%N); p1=$(tree_ticks "$ppid"); u1=$(tree_ticks "$UPID"); read -r a1 at1 < <(cpu_ticks "$ALLCPUS")
  "$PYTHON" - "$OUT/$id.$r.json" "$id" "$label" "$r" "$chk" "$t0" "$t1" "$HZ" "$((p1 - p0))" "$((u1 - u0))" \
    "$((a1 - a0))" "$((at1 - at0))" "$NCPU" >> "$TSV" <<'PY'
import json, sys
f, rid, label, rep, check, t0, t1, hz, pt, ut, ab, at, ncpu = sys.argv[1:]
wall = float(t1) - float(t0); hz = float(hz)
pct = lambda t: 100.0 * int(t) / hz / wall
allbusy = 100.0 * int(ab) / max(1, int(at)) * int(ncpu)
try:
    j = json.load(open(f))
except Exception:
    print("\t".join([rid, label, rep, "0", "nan", "nan", "0", "0", check, "0", "0", "0", "nan", "oha-failed"])); sys.exit()
s = j.get("summary", {}); lp = j.get("latencyPercentiles", {})
codes = j.get("statusCodeDistribution", {}) or {}; errs = j.get("errorDistribution", {}) or {}
ok = codes.get("200", 0); total = sum(codes.values()) + sum(errs.values())
rps = ok / float(s.get("total") or wall)
ms = lambda x: "nan" if x is None else "%.3f" % (x * 1000)
us = pct(pt) * 1e4 / rps if rps > 0 else float("nan")
note = ";".join("%s:%s" % (k, v) for k, v in list(codes.items()) + list(errs.items()) if k != "200")[:120]
print("\t".join([rid, label, rep, "%.1f" % rps, ms(lp.get("p50")), ms(lp.get("p99")), str(ok), str(total), check,
                 "%.0f" % pct(pt), "%.0f" % pct(ut), "%.0f" % allbusy, "%.0f" % us, note or "-"]))
PY
  log "    $id round $r: $(tail -1 "$TSV" | awk -F'\t' '{printf "%s req/s, p50 %s ms, p99 %s ms, proxy %s%% cpu, %s us/req", $4,$5,$6,$10,$13}')"
}

# row ID LABEL KIND EXPECTED ROUND ENV... -- OHA-OPTS...   (fresh proxy per row)
row() {
  local id=$1 label=$2 kind=$3 expect=$4 r=$5; shift 5
  local envs=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  want "$id" || return 0
  port_busy "$PORT" && die "port $PORT busy before $id"
  start "$id" "$PROXY_CPUS" env "${envs[@]}" bash "$MYDIR/project-proxy.sh"; local pid=$STARTED_PID
  if ! wait_port "$PORT" 30 "$pid"; then
    log "$id did not start:"; tail -5 "$RUN/$id.out" >&2
    printf '%s\t%s\t%s\t0\tnan\tnan\t0\t0\tFAIL:start\t0\t0\t0\tnan\t-\n' "$id" "$label" "$r" >> "$TSV"
    stop "$pid"; return 0
  fi
  sleep 0.3
  local chk; chk=$(check "$kind" "$expect")
  log "$id (round $r): check $chk"
  local rpid=""
  if [[ $id == *-reload ]]; then   # rewrite the tokens file every RELOAD_EVERY s during the row
    ( i=0; while :; do sleep "$RELOAD_EVERY"; i=$((i + 1))
        { cat "$M2M/tokens100k.yaml"; echo "# revision $i"; } > "$M2M/tokens100k-reload.yaml.tmp" &&
        mv "$M2M/tokens100k-reload.yaml.tmp" "$M2M/tokens100k-reload.yaml"; done ) &
    rpid=$!
  fi
  measure "$id" "$label" "$pid" "$chk" "$r" "$@"
  [ -n "$rpid" ] && { kill "$rpid" 2>/dev/null; wait "$rpid" 2>/dev/null; }
  stop "$pid"
  if [[ $id == *-reload ]]; then
    echo "$id round $r: reloads applied: $(grep -c 'reloaded tokens' "$RUN/$id.out" 2>/dev/null) (file rewritten every ${RELOAD_EVERY}s), refused: $(grep -c 'reload tokens.*refused' "$RUN/$id.out" 2>/dev/null)" >> "$OUT/reload.txt"
  fi
  sleep 0.5
}

one_round() {
  local r=$1
  local B=(BENCH_MODE=bearer "TOKENS=$M2M/tokens1.yaml")
  row m2m-bearer "m2m Bearer, 1 token" bearer "$BEARER_ORIGIN" "$r" "${B[@]}" -- \
    --cacert "$PKI/ca.crt" -H "Authorization: Bearer $TOKEN" "${HDR[@]}"
  row m2m-bearer-100k "m2m Bearer, 100 000 tokens" bearer "$BEARER_ORIGIN" "$r" BENCH_MODE=bearer "TOKENS=$M2M/tokens100k.yaml" -- \
    --cacert "$PKI/ca.crt" -H "Authorization: Bearer $TOKEN" "${HDR[@]}"
  cp "$M2M/tokens100k.yaml" "$M2M/tokens100k-reload.yaml"
  row m2m-bearer-100k-reload "m2m Bearer, 100 000 tokens, file rewritten every ${RELOAD_EVERY}s" bearer "$BEARER_ORIGIN" "$r" \
    BENCH_MODE=bearer "TOKENS=$M2M/tokens100k-reload.yaml" -- \
    --cacert "$PKI/ca.crt" -H "Authorization: Bearer $TOKEN" "${HDR[@]}"
  row m2m-basic-bcrypt10-100k "m2m Basic bcrypt10, 100 000 users (cache)" basic "$BASIC_USER" "$r" \
    BENCH_MODE=basic-bcrypt10 "HTPASSWD=$M2M/htpasswd100k" -- \
    --cacert "$PKI/ca.crt" -a "$BASIC_CRED" "${HDR[@]}"
  row m2m-mtls-newconn-ca1 "m2m mTLS new conn/req, 1-CA bundle" mtls "$CLIENT_URI" "$r" BENCH_MODE=mtls "CLIENT_CA=$PKI/ca.crt" -- \
    "${MTLS_OPTS[@]}" "${HDR[@]}" --disable-keepalive
  # oha --disable-keepalive resumes whenever the server offers tickets (rustls session cache):
  # with tls.session_tickets on, this is the resumed-handshake row
  row m2m-mtls-newconn-resumed "m2m mTLS new conn/req, session tickets on (oha resumes)" mtls "$CLIENT_URI" "$r" BENCH_MODE=mtls SESSION_TICKETS=1 -- \
    "${MTLS_OPTS[@]}" "${HDR[@]}" --disable-keepalive
  row m2m-mtls-newconn-ca100 "m2m mTLS new conn/req, 100-CA bundle" mtls "$CLIENT_URI" "$r" BENCH_MODE=mtls "CLIENT_CA=$M2M/ca100.pem" -- \
    "${MTLS_OPTS[@]}" "${HDR[@]}" --disable-keepalive
  if [ -n "$M2M_BIN_SYSSSL" ]; then
    row m2msys-mtls "m2m (Debian OpenSSL 3.0) mTLS keep-alive" mtls "$CLIENT_URI" "$r" BENCH_MODE=mtls "M2M_BIN=$M2M_BIN_SYSSSL" -- \
      "${MTLS_OPTS[@]}" "${HDR[@]}"
    row m2msys-mtls-newconn "m2m (Debian OpenSSL 3.0) mTLS new conn/req" mtls "$CLIENT_URI" "$r" BENCH_MODE=mtls "M2M_BIN=$M2M_BIN_SYSSSL" -- \
      "${MTLS_OPTS[@]}" "${HDR[@]}" --disable-keepalive
  fi
}

# ---------------------------------------------------------------- main
log "m2m extras: results $OUT"
start_upstream 12000
for ((R = 1; R <= REPEATS; R++)); do
  log "=== extras round $R/$REPEATS"
  one_round "$R"
done

# ---- resumption: does a client that offers its previous session get a resumed handshake?
if want resumption; then
  start m2m-resume "$PROXY_CPUS" env BENCH_MODE=mtls SESSION_TICKETS="${RESUME_TICKETS:-1}" bash "$MYDIR/project-proxy.sh"; pid=$STARTED_PID
  wait_port "$PORT" 30 "$pid" || die "proxy did not start (resumption)"
  for tv in 1.3 1.2; do
    for mode in full resume; do
      t0=$(tree_ticks "$pid")
      res=$(taskset -c "$LOADGEN_CPUS" "$PYTHON" "$SHARED/tlsclient.py" loop --port "$PORT" --duration 3 \
            --threads 4 --mode "$mode" --tls "$tv" --expect-origin "$CLIENT_URI" 2>&1 | tail -1)
      t1=$(tree_ticks "$pid")
      echo "resumption tls$tv $mode: $res proxy_ticks=$((t1 - t0)) hz=$HZ" | tee -a "$OUT/resumption.txt" >&2
    done
  done
  stop "$pid"; sleep 0.5
fi

# ---- memory: idle, after 1 request, with N idle keep-alive mTLS connections, after close
if want memory; then
  for N in $NS; do
    wait_idle
    start "m2m-mem-$N" "$PROXY_CPUS" env BENCH_MODE=mtls LIMITS_IDLE="${LIMITS_IDLE-300s}" bash "$MYDIR/project-proxy.sh"; pid=$STARTED_PID
    wait_port "$PORT" 30 "$pid" || die "proxy did not start (memory)"
    sleep 1
    read -r r0 _ _ < <(tree_mem "$pid")
    chk=$(check mtls "$CLIENT_URI"); sleep 1
    read -r r1 _ _ < <(tree_mem "$pid")
    hold_s=$((N / RATE + 90))
    start "client-m2m-$N" "$LOADGEN_CPUS" timeout -k 5 $((hold_s + 30)) "$PYTHON" "$SHARED/tlsclient.py" hold \
      --port "$PORT" -n "$N" --rate "$RATE" --hold "$hold_s" --expect-origin "$CLIENT_URI"
    cpid=$STARTED_PID
    for ((i = 0; i < (N / RATE + 60) * 10; i++)); do
      grep -q '^READY' "$RUN/client-m2m-$N.out" 2>/dev/null && break
      kill -0 "$cpid" 2>/dev/null || break
      sleep 0.1
    done
    ready=$(grep '^READY' "$RUN/client-m2m-$N.out")
    sleep 3
    read -r rh _ _ < <(tree_mem "$pid")
    ep=$(estab_sport "$PORT")
    opened=$(sed -n 's/^READY open=\([0-9]*\).*/\1/p' <<< "$ready")
    bad=$(sed -n 's/.* bad=\([0-9]*\).*/\1/p' <<< "$ready"); errs=$(sed -n 's/.* errors=\([0-9]*\).*/\1/p' <<< "$ready")
    kill -TERM -- "-$cpid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do kill -0 "$cpid" 2>/dev/null || break; sleep 0.1; done
    still=$(sed -n 's/^CLOSED still_open_at_end=\([0-9]*\).*/\1/p' "$RUN/client-m2m-$N.out")
    stop "$cpid"; sleep 3
    read -r rc _ _ < <(tree_mem "$pid")
    printf 'm2m\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$N" "${opened:-0}" "${bad:-?}" "${errs:-?}" "$ep" \
      "$r0" "$r1" "$rh" "$rc" "${still:-?}" >> "$MEMTSV"
    log "m2m memory N=$N (check $chk): idle $r0 kB -> $r1 kB after 1 req, held $rh kB ($ready), closed $rc kB"
    stop "$pid"; sleep 1
  done
fi
stop "$UPID"

"$PYTHON" "$MYDIR/tables.py" extras "$TSV" "$MEMTSV" | tee "$OUT/extras.md"
log "extras results in $OUT"
