#!/usr/bin/env bash
# Our rows beyond the harness's (bench/harness.sh), measured the same way (same upstream, PKI,
# pinning, oha options, proxy CPU from /proc):
#   m2m-bearer             Bearer token, 1-entry tokens file, keep-alive
#   m2m-bearer-100k        same with a 100 000-entry tokens file
#   m2m-bearer-100k-reload same while the tokens file is rewritten (a new 100 000-entry parse on
#                          the reload thread) every RELOAD_EVERY seconds: do requests stall?
#   m2m-basic-bcrypt10-100k  Basic, bcrypt-10 user among 99 999 {SHA} users, cache on
#   m2m-mtls-newconn-ca1 / -ca100  new TLS connection per request, client CA bundle of 1 / 100 CAs
#   m2msys-*               the mTLS rows with a second binary (M2M_BIN_SYSSSL, e.g. linked against
#                          Debian's OpenSSL 3.0), when given
#   resumption             tlsclient.py loop --mode full|resume, TLS 1.3 and 1.2, session tickets
#                          on (RESUME_TICKETS=0: the plain config): full vs resumed handshake CPU
# Called by bench/run.sh; alone after `cargo build --release`: bench/extras.sh
# Knobs: DURATION WARMUP REPEATS CONC ONLY SKIP RELOAD_EVERY RESUME_SECS M2M_BIN M2M_BIN_SYSSSL OUT
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

M2M_BIN_SYSSSL=${M2M_BIN_SYSSSL:-}
REPEATS=${REPEATS:-2}
RELOAD_EVERY=${RELOAD_EVERY:-3}
RESUME_SECS=${RESUME_SECS:-3}
RES=${OUT:-$WORK/results/extras-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$RES"
TSV=$RES/runs.tsv
: > "$TSV"
: > "$RES/resumption.txt"
: > "$RES/reload.txt"
[ -x "$M2M_BIN" ] || die "no binary $M2M_BIN (cargo build --release)"
TOKEN=bench-bearer-token-0000000000000000000000000
BEARER_ORIGIN=Cae-bearer1

# ---------------------------------------------------------------- credential files
M2M=$WORK/m2m
mkdir -p "$M2M"
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

# row ID LABEL KIND ENV... -- OHA-OPTS...   (a fresh proxy per row)
row() {
  local id=$1 label=$2 kind=$3; shift 3
  local envs=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  want "$id" || return 0
  if ! start_proxy "$id" "$PROXY_CPUS" env "${envs[@]}" bash "$BENCH/project-proxy.sh"; then
    printf '%s\t%s\t%s\t0\tnan\tnan\t0\t0\tFAIL:start\t0\t0\t0\t0\tnan\t-\t-\n' "$id" "$label" "$ROUND" >> "$TSV"
    return 0
  fi
  local chk rpid=
  chk=$(check "$kind")
  log "$id (round $ROUND): check $chk"
  if [[ $id == *-reload ]]; then   # rewrite the tokens file every RELOAD_EVERY s during the row
    ( i=0; while :; do sleep "$RELOAD_EVERY"; i=$((i + 1))
        { cat "$M2M/tokens100k.yaml"; echo "# revision $i"; } > "$M2M/tokens100k-reload.yaml.tmp" &&
        mv "$M2M/tokens100k-reload.yaml.tmp" "$M2M/tokens100k-reload.yaml"; done ) &
    rpid=$!
  fi
  measure "$id" "$label" "$PPID_" "$URL" "$chk" "$@"
  [ -n "$rpid" ] && { kill "$rpid" 2>/dev/null; wait "$rpid" 2>/dev/null; }
  stop "$PPID_"
  if [[ $id == *-reload ]]; then
    echo "$id round $ROUND: reloads applied: $(grep -c 'reloaded tokens' "$RUN/$id.out" 2>/dev/null) (file rewritten every ${RELOAD_EVERY}s), refused: $(grep -c 'reload tokens.*refused' "$RUN/$id.out" 2>/dev/null)" >> "$RES/reload.txt"
  fi
  sleep 0.5
}

one_round() {
  local BEARER=(--cacert "$PKI/ca.crt" -H "Authorization: Bearer $TOKEN" "${HDR[@]}")
  row m2m-bearer "m2m Bearer, 1 token" bearer BENCH_MODE=bearer "TOKENS=$M2M/tokens1.yaml" -- "${BEARER[@]}"
  row m2m-bearer-100k "m2m Bearer, 100 000 tokens" bearer BENCH_MODE=bearer "TOKENS=$M2M/tokens100k.yaml" -- "${BEARER[@]}"
  cp "$M2M/tokens100k.yaml" "$M2M/tokens100k-reload.yaml"
  row m2m-bearer-100k-reload "m2m Bearer, 100 000 tokens, file rewritten every ${RELOAD_EVERY}s" bearer \
    BENCH_MODE=bearer "TOKENS=$M2M/tokens100k-reload.yaml" -- "${BEARER[@]}"
  row m2m-basic-bcrypt10-100k "m2m Basic bcrypt10, 100 000 users (cache)" basic \
    BENCH_MODE=basic-bcrypt10 "HTPASSWD=$M2M/htpasswd100k" -- "${BASIC_OPTS[@]}" "${HDR[@]}"
  row m2m-mtls-newconn-ca1 "m2m mTLS new conn/req, 1-CA bundle" mtls BENCH_MODE=mtls "CLIENT_CA=$PKI/ca.crt" -- \
    "${MTLS_OPTS[@]}" "${HDR[@]}" --disable-keepalive
  row m2m-mtls-newconn-ca100 "m2m mTLS new conn/req, 100-CA bundle" mtls BENCH_MODE=mtls "CLIENT_CA=$M2M/ca100.pem" -- \
    "${MTLS_OPTS[@]}" "${HDR[@]}" --disable-keepalive
  if [ -n "$M2M_BIN_SYSSSL" ]; then
    row m2msys-mtls "m2m (Debian OpenSSL 3.0) mTLS keep-alive" mtls BENCH_MODE=mtls "M2M_BIN=$M2M_BIN_SYSSSL" -- \
      "${MTLS_OPTS[@]}" "${HDR[@]}"
    row m2msys-mtls-newconn "m2m (Debian OpenSSL 3.0) mTLS new conn/req" mtls BENCH_MODE=mtls "M2M_BIN=$M2M_BIN_SYSSSL" -- \
      "${MTLS_OPTS[@]}" "${HDR[@]}" --disable-keepalive
  fi
}

# ---------------------------------------------------------------- main
log "m2m extras: results $RES"
start_upstream
for ((ROUND = 1; ROUND <= REPEATS; ROUND++)); do
  log "=== extras round $ROUND/$REPEATS"
  one_round
done

# ---- resumption: does a client that offers its previous session get a resumed handshake?
if want resumption; then
  if start_proxy m2m-resume "$PROXY_CPUS" env BENCH_MODE=mtls SESSION_TICKETS="${RESUME_TICKETS:-1}" bash "$BENCH/project-proxy.sh"; then
    for tv in 1.3 1.2; do
      for mode in full resume; do
        wait_idle
        t0=$(tree_ticks "$PPID_")
        res=$(taskset -c "$LOADGEN_CPUS" "$PYTHON" "$BENCH/tlsclient.py" loop --port "$PORT" --duration "$RESUME_SECS" \
              --threads 4 --mode "$mode" --tls "$tv" --expect-origin "$CLIENT_URI" 2>&1 | tail -1)
        t1=$(tree_ticks "$PPID_")
        echo "resumption tls$tv $mode: $res proxy_ticks=$((t1 - t0)) hz=$HZ" | tee -a "$RES/resumption.txt" >&2
      done
    done
    stop "$PPID_"; sleep 0.5
  fi
fi
stop "$UPID"
"$PYTHON" "$BENCH/tables.py" table "$TSV" | tee "$RES/table.md"
