#!/usr/bin/env bash
# The load rows: the anchors (HAProxy, nginx) and m2m-auth-proxy side by side, same upstream,
# PKI, pinning and oha options, in rounds (every row once, then again) so that a slow spell of
# the machine does not hit every repeat of one row. Each row: start the proxy, check it (the
# identity reaches the upstream as X-M2M-Origin despite a spoofed one; a wrong identity is
# refused), warm up, measure with oha, stop it.
#
# Rows (ids; ONLY / SKIP are regexes on them):
#   direct                          oha -> upstream, plain HTTP: the ceiling of the layout
#   nginx-mtls-san[-newconn]        nginx 1.22, mTLS, origin = URI SAN (njs); -newconn: a new TLS
#                                   connection per request (full handshakes: no resumption offered)
#   haproxy-mtls-san[-newconn]      HAProxy 2.6 `nbthread 1`, URI SAN via Lua, once per connection
#   haproxy-mtls-san-t2             the same with `nbthread 2`, pinned to PROXY_CPUS_T2 (0,1)
#   nginx-basic-bcrypt10, haproxy-basic-bcrypt10   Basic over TLS, bcrypt cost 10, no cache
#   NAME-mtls[-newconn], NAME-mtls-t2, NAME-basic-bcrypt10   ours, per PROJECTS entry, `threads: 1`
#                                   (-t2: `threads: 2`, pinned like HAProxy's -t2)
#   NAME-mtls-newconn-resumed       a new connection per request with `tls.session_tickets: true`:
#                                   oha (rustls) resumes the session it got, so resumed handshakes
#   NAME-egress                     oha -> ours as an egress route (plain HTTP) -mTLS-> ours as
#                                   the peer's ingress (mTLS, URI SAN) -> upstream; both proxies
#                                   pinned to PROXY_CPUS; CPU per request of both, and of each
#
#   PROJECTS="m2m=target/release/m2m-auth-proxy" bench/harness.sh
# Knobs: PROJECTS ("name=binary ...", names [a-z0-9]), ANCHORS (1), MODES (ours: "mtls mtls-t2
# mtls-resumed basic-bcrypt10 egress"), REPEATS (2), DURATION, WARMUP, CONC, ONLY, SKIP, OUT (results dir),
# and lib.sh's. Prints the markdown table; OUT gets runs.tsv, table.md and the raw oha JSON.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PROJECTS=${PROJECTS:-m2m=$M2M_BIN}
ANCHORS=${ANCHORS:-1}
MODES=${MODES:-mtls mtls-t2 mtls-resumed basic-bcrypt10 egress}
REPEATS=${REPEATS:-2}
RES=${OUT:-$WORK/results/harness-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$RES"
TSV=$RES/runs.tsv
: > "$TSV"
for p in $PROJECTS; do [ -x "${p#*=}" ] || die "not executable: ${p#*=} (cargo build --release)"; done

# serve ID LABEL CHECK-KIND CPUS LOADS CMD... : one proxy start and its rows. LOADS: ka (row ID,
# keep-alive), ka+nc (and row ID-newconn, a new connection per request), nc (row ID, new
# connection per request)
serve() {
  local id=$1 label=$2 kind=$3 cpus=$4 loads=$5; shift 5
  want "$id" || { [ "$loads" = ka+nc ] && want "$id-newconn"; } || return 0
  local opts=("${MTLS_OPTS[@]}")
  [ "$kind" = basic ] && opts=("${BASIC_OPTS[@]}")
  if ! start_proxy "$id" "$cpus" "$@"; then
    printf '%s\t%s\t%s\t0\tnan\tnan\t0\t0\tFAIL:start\t0\t0\t0\t0\tnan\t-\t-\n' "$id" "$label" "$ROUND" >> "$TSV"
    return 0
  fi
  local chk; chk=$(check "$kind")
  log "$id (round $ROUND): check $chk"
  local nc=()
  [ "$loads" = nc ] && nc=(--disable-keepalive)
  want "$id" && measure "$id" "$label" "$PPID_" "$URL" "$chk" "${opts[@]}" "${HDR[@]}" "${nc[@]}"
  [ "$loads" = ka+nc ] && want "$id-newconn" &&
    measure "$id-newconn" "$label, new TLS conn/req" "$PPID_" "$URL" "$chk" "${opts[@]}" "${HDR[@]}" --disable-keepalive
  stop "$PPID_"
  sleep 0.5
}

# egress NAME BIN : the route's proxy (B) in front of ours as the peer's ingress (A)
egress_row() {
  local name=$1 bin=$2 id=$1-egress
  want "$id" || return 0
  local label="$name egress: route (plain HTTP in, mTLS out) + the peer's ingress"
  port_busy "$PEER_PORT" && die "port $PEER_PORT busy before $id"
  start_proxy "$id-peer" "$PROXY_CPUS" env BENCH_MODE=mtls M2M_BIN="$bin" bash "$BENCH/project-proxy.sh" || return 0
  local apid=$PPID_
  start "$id-route" "$PROXY_CPUS" env BENCH_MODE=mtls M2M_BIN="$bin" LISTEN_ADDR="$HOST:$PEER_PORT" \
    LISTEN_PORT="$PEER_PORT" EGRESS_LISTEN="$HOST:$EGRESS_PORT" EGRESS_PEER="https://$HOST:$PORT" \
    EGRESS_CERT="$PKI/client.crt" EGRESS_KEY="$PKI/client.key" bash "$BENCH/project-proxy.sh"
  local bpid=$STARTED_PID chk
  if wait_port "$EGRESS_PORT" 30 "$bpid"; then
    sleep 0.3
    chk=$(check egress)
    log "$id (round $ROUND): check $chk"
    measure "$id" "$label" "$bpid $apid" "http://$HOST:$EGRESS_PORT/m2m/cse-bench/cnt-1/la" "$chk" "${HDR[@]}"
  else
    log "$id: the route's proxy did not start:"; tail -5 "$RUN/$id-route.out" >&2
    printf '%s\t%s\t%s\t0\tnan\tnan\t0\t0\tFAIL:start\t0\t0\t0\t0\tnan\t-\t-\n' "$id" "$label" "$ROUND" >> "$TSV"
  fi
  stop "$bpid"; stop "$apid"
  sleep 0.5
}

one_round() {
  if [ "$ANCHORS" = 1 ]; then
    if want direct; then
      measure direct "direct upstream (plain HTTP)" - "http://$HOST:$UPORT/m2m/cse-bench/cnt-1/la" "$(check direct)" "${HDR[@]}"
    fi
    serve nginx-mtls-san "nginx mTLS, origin=URI SAN (njs)" mtls "$PROXY_CPUS" ka+nc "$NGINX" -c "$RUN/nginx-mtls-san.conf"
    serve haproxy-mtls-san "haproxy mTLS, origin=URI SAN (Lua, per conn)" mtls "$PROXY_CPUS" ka+nc \
      "$HAPROXY" -db -f "$RUN/haproxy-mtls-san-t1.cfg"
    serve haproxy-mtls-san-t2 "haproxy mTLS, URI SAN, nbthread 2 on CPUs $PROXY_CPUS_T2" mtls "$PROXY_CPUS_T2" ka \
      "$HAPROXY" -db -f "$RUN/haproxy-mtls-san-t2.cfg"
    serve nginx-basic-bcrypt10 "nginx Basic bcrypt10" basic "$PROXY_CPUS" ka "$NGINX" -c "$RUN/nginx-basic-bcrypt10.conf"
    serve haproxy-basic-bcrypt10 "haproxy Basic bcrypt10" basic "$PROXY_CPUS" ka "$HAPROXY" -db -f "$RUN/haproxy-basic-bcrypt10.cfg"
  fi
  local p name bin m
  for p in $PROJECTS; do
    name=${p%%=*} bin=${p#*=}
    for m in $MODES; do
      case $m in
        mtls) serve "$name-mtls" "$name mTLS, origin=URI SAN" mtls "$PROXY_CPUS" ka+nc \
                env BENCH_MODE=mtls M2M_BIN="$bin" bash "$BENCH/project-proxy.sh" ;;
        mtls-t2) serve "$name-mtls-t2" "$name mTLS, threads: 2 on CPUs $PROXY_CPUS_T2" mtls "$PROXY_CPUS_T2" ka \
                env BENCH_MODE=mtls WORKERS=2 M2M_BIN="$bin" bash "$BENCH/project-proxy.sh" ;;
        mtls-resumed) serve "$name-mtls-newconn-resumed" "$name mTLS new conn/req, session tickets on (oha resumes)" \
                mtls "$PROXY_CPUS" nc env BENCH_MODE=mtls SESSION_TICKETS=1 M2M_BIN="$bin" bash "$BENCH/project-proxy.sh" ;;
        basic-bcrypt10) serve "$name-basic-bcrypt10" "$name Basic bcrypt10" basic "$PROXY_CPUS" ka \
                env BENCH_MODE=basic-bcrypt10 HTPASSWD="$PKI/htpasswd.bcrypt10" M2M_BIN="$bin" bash "$BENCH/project-proxy.sh" ;;
        egress) egress_row "$name" "$bin" ;;
        *) die "unknown mode $m" ;;
      esac
    done
  done
}

log "harness: results $RES; cpus: oha $LOADGEN_CPUS, proxy $PROXY_CPUS (-t2: $PROXY_CPUS_T2), upstream $UPSTREAM_CPUS; conc $CONC, ${DURATION}s x $REPEATS"
render_anchors
start_upstream
for ((ROUND = 1; ROUND <= REPEATS; ROUND++)); do
  log "=== round $ROUND/$REPEATS"
  one_round
done
stop "$UPID"
"$PYTHON" "$BENCH/tables.py" table "$TSV" | tee "$RES/table.md"
