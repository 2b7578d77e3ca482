# Sourced by the bench scripts: settings, process control, CPU and memory accounting from /proc,
# the correctness checks and one measured oha run. Layout (2 CPUs): proxy and upstream on CPU 0,
# oha on CPU 1; everything on 127.0.0.1. Processes are started in their own process group
# (setsid), pinned with taskset, and stopped by PID / process group only (trap on exit).
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
WORK=${WORK:-/tmp/proxybench}
HOST=127.0.0.1
UPORT=${UPORT:-38080}             # upstream nginx (plain HTTP)
PORT=${PORT:-38443}               # the proxy under test (TLS); +1 its admin port
PEER_PORT=$((PORT + 2))           # egress row: the route's proxy (its own listener; +1 admin)
EGRESS_PORT=$((PORT + 4))         # egress row: the route's plain-HTTP listener
LOADGEN_CPUS=${LOADGEN_CPUS:-1}
PROXY_CPUS=${PROXY_CPUS:-0}
PROXY_CPUS_T2=${PROXY_CPUS_T2:-0,1}   # the `threads: 2` / `nbthread 2` rows
UPSTREAM_CPUS=${UPSTREAM_CPUS:-0}
DURATION=${DURATION:-10}          # seconds per measured run
WARMUP=${WARMUP:-2}               # seconds of discarded load before each run
CONC=${CONC:-32}                  # concurrent connections (closed loop)
WAIT_IDLE=${WAIT_IDLE:-30}        # max seconds to wait for a quiet machine before each run
IDLE_MAX=${IDLE_MAX:-10}          # "quiet" = machine below this % busy
ONLY=${ONLY:-}                    # regex on row ids: run only these
SKIP=${SKIP:-}                    # regex on row ids: skip these
TOOLS=${TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/m2m-auth-proxy-bench}
OHA=${OHA:-$TOOLS/bin/oha}        # the pinned oha of setup.sh
NGINX=${NGINX:-nginx}
HAPROXY=${HAPROXY:-haproxy}
PYTHON=${PYTHON:-python3}
# the release binary of this checkout (CARGO_TARGET_DIR honoured, relative to the root)
TARGET_DIR=${CARGO_TARGET_DIR:-target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
M2M_BIN=${M2M_BIN:-$TARGET_DIR/release/m2m-auth-proxy}
PKI=$WORK/pki
RUN=$WORK/run
CONF=$WORK/conf
HZ=$(getconf CLK_TCK)
NCPU=$(nproc)
if [ "$NCPU" -lt 2 ]; then LOADGEN_CPUS=0 PROXY_CPUS=0 PROXY_CPUS_T2=0 UPSTREAM_CPUS=0; fi
ALLCPUS=$(seq -s, 0 $((NCPU - 1)))
LOADGEN_THREADS=1                 # one oha worker thread on its one CPU
URL="https://localhost:$PORT/m2m/cse-bench/cnt-1/la"
HDR=(-H 'X-M2M-Origin: spoofed-by-client' -H 'X-M2M-RI: bench-1')
mkdir -p "$RUN" "$CONF" "$RUN"/tmp_{body,proxy,fcgi,uwsgi,scgi}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

for t in "$OHA" "$NGINX" "$HAPROXY" curl openssl htpasswd taskset setsid ss ps "$PYTHON"; do
  command -v "$t" > /dev/null || { log "missing tool: $t (bench/setup.sh installs it)"; exit 1; }
done
"$OHA" --help | grep -q -- '--cert' || { log "$OHA lacks --cert (client certificates)"; exit 1; }

# PKI and credentials (once per WORK), anchor configs copied fresh
[ -s "$PKI/client.crt" ] && [ -s "$PKI/htpasswd.bcrypt10" ] || WORK=$WORK bash "$BENCH/pki.sh" "$PKI" >&2 ||
  { log "pki.sh failed"; exit 1; }
cp "$BENCH"/conf/* "$CONF"/
CLIENT_URI=urn:m2m:Cae-sensor1
BASIC_CRED=$(cat "$PKI/basic.cred")
BASIC_USER=${BASIC_CRED%%:*}
MTLS_OPTS=(--cacert "$PKI/ca.crt" --cert "$PKI/client.crt" --key "$PKI/client.key")
BASIC_OPTS=(--cacert "$PKI/ca.crt" -a "$BASIC_CRED")

# ---------------------------------------------------------------- process control
PIDS=()      # process-group leaders we started
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$p" 2>/dev/null
  done
  PIDS=()
}
trap 'cleanup; exit 130' INT TERM
trap cleanup EXIT
die() { log "ERROR: $*"; cleanup; exit 1; }

port_busy() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
wait_port() { # port timeout_s pid
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    port_busy "$1" && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
# start NAME CPUS CMD... : own session/process group, pinned; sets STARTED_PID
start() {
  local name=$1 cpus=$2; shift 2
  setsid taskset -c "$cpus" "$@" > "$RUN/$name.out" 2>&1 < /dev/null &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
}
stop() { # PID
  local p=$1 i
  kill -TERM -- "-$p" 2>/dev/null
  for ((i = 0; i < 50; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$p" 2>/dev/null
  wait "$p" 2>/dev/null
  local keep=() q
  for q in "${PIDS[@]}"; do [ "$q" = "$p" ] || keep+=("$q"); done
  PIDS=("${keep[@]}")
}
# fill the @PLACEHOLDERS@ of a config template
render() { # template out [KEY=VALUE...]
  local in=$1 out=$2; shift 2
  local args=(-e "s|@WORK@|$WORK|g" -e "s|@RUN@|$RUN|g" -e "s|@PKI@|$PKI|g" -e "s|@CONF@|$CONF|g"
              -e "s|@PORT@|$PORT|g" -e "s|@UPORT@|$UPORT|g")
  local kv
  for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
  sed "${args[@]}" "$in" > "$out"
}
want() { { [ -z "$ONLY" ] || [[ $1 =~ $ONLY ]]; } && { [ -z "$SKIP" ] || ! [[ $1 =~ $SKIP ]]; }; }

# ---------------------------------------------------------------- accounting from /proc
tree_pids() { local p=$1 c; echo "$p"; for c in $(ps -o pid= --ppid "$p" 2>/dev/null); do tree_pids "$c"; done; }
# utime+stime (clock ticks) of PID and all its descendants
tree_ticks() {
  local t=0 p f
  for p in $(tree_pids "$1"); do
    f=$(cut -d')' -f2- "/proc/$p/stat" 2>/dev/null) || continue
    # shellcheck disable=SC2086
    set -- $f; t=$((t + ${12} + ${13}))
  done
  echo "$t"
}
# tree_mem PID -> "rss_kb pss_kb nproc" over PID's tree (the wrappers exec: the proxy's own processes)
tree_mem() {
  local p rss=0 pss=0 n=0 r s
  for p in $(tree_pids "$1"); do
    r=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null) || continue
    [ -n "$r" ] || continue
    s=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null)
    rss=$((rss + r)); pss=$((pss + ${s:-0})); n=$((n + 1))
  done
  echo "$rss $pss $n"
}
# busy/total jiffies of a cpu list like "1" or "0,1"
cpu_ticks() {
  local busy=0 total=0 c u n s i w q sq st
  for c in ${1//,/ }; do
    read -r _ u n s i w q sq st _ < <(grep "^cpu$c " /proc/stat)
    busy=$((busy + u + n + s + q + sq + st)); total=$((total + u + n + s + i + w + q + sq + st))
  done
  echo "$busy $total"
}
idle_check() { # % busy of the whole machine over 1 s
  local a1 a2 b1 b2
  read -r a1 a2 < <(cpu_ticks "$ALLCPUS"); sleep 1
  read -r b1 b2 < <(cpu_ticks "$ALLCPUS")
  echo $(( (b1 - a1) * 100 / (b2 - a2 + 1) ))
}
wait_idle() { # up to WAIT_IDLE s for other work on the machine to stop
  local t0=$SECONDS b
  [ "$WAIT_IDLE" -gt 0 ] || return 0
  while :; do
    b=$(idle_check)
    [ "$b" -le "$IDLE_MAX" ] && return 0
    if [ $((SECONDS - t0)) -ge "$WAIT_IDLE" ]; then
      log "  machine still ${b}% busy after ${WAIT_IDLE}s; measuring anyway (see 'other' CPU)"; return 0
    fi
    sleep 2
  done
}
estab_sport() { ss -Htn state established "( sport = :$1 )" 2>/dev/null | wc -l; }

# ---------------------------------------------------------------- upstream and proxies
start_upstream() { # [worker_connections]
  port_busy "$UPORT" && die "upstream port $UPORT already in use"
  render "$CONF/upstream-nginx.conf" "$RUN/upstream.conf"
  [ -n "${1:-}" ] && sed -i "s/worker_connections [0-9]*;/worker_connections $1;/" "$RUN/upstream.conf"
  render "$CONF/nginx-common.inc" "$RUN/nginx-common.inc"
  start upstream "$UPSTREAM_CPUS" "$NGINX" -c "$RUN/upstream.conf"; UPID=$STARTED_PID
  wait_port "$UPORT" 10 "$UPID" || die "upstream did not start: $(cat "$RUN/upstream.out")"
}
# what project-proxy.sh reads
export LISTEN_ADDR=$HOST:$PORT LISTEN_PORT=$PORT UPSTREAM_ADDR=$HOST:$UPORT TLS_CERT=$PKI/server.crt \
       TLS_KEY=$PKI/server.key CLIENT_CA=$PKI/ca.crt WORKERS=1 M2M_BIN BENCH_RUN=$RUN
# the anchors' configs, rendered: nginx-mtls-san, haproxy-mtls-san (+ -t2: nbthread 2),
# nginx-basic-bcrypt10, haproxy-basic-bcrypt10
render_anchors() {
  render "$CONF/nginx-common.inc" "$RUN/nginx-common.inc"
  render "$CONF/nginx-mtls-san.conf" "$RUN/nginx-mtls-san.conf"
  render "$CONF/nginx-basic.conf" "$RUN/nginx-basic-bcrypt10.conf" "HTPASSWD=$PKI/htpasswd.bcrypt10"
  local t
  for t in 1 2; do
    render "$CONF/haproxy-mtls.cfg" "$RUN/haproxy-mtls-san-t$t.cfg" "NBTHREAD=$t"
  done
  render "$CONF/haproxy-basic.cfg" "$RUN/haproxy-basic-bcrypt10.cfg" "USERLIST=users_bcrypt10" \
    "USERLISTS=$(tr '\n' '\a' < "$PKI/haproxy-userlists.cfg" | sed 's/[|&\\]/\\&/g')"
  sed -i "s/\a/\n/g" "$RUN/haproxy-basic-bcrypt10.cfg"
}
# start_proxy NAME CPUS CMD... -> PPID_ once listening on PORT (0 = ok)
start_proxy() {
  local name=$1 cpus=$2; shift 2
  port_busy "$PORT" && die "port $PORT busy before starting $name"
  start "$name" "$cpus" "$@"; PPID_=$STARTED_PID
  wait_port "$PORT" 30 "$PPID_" || { log "$name did not start:"; tail -5 "$RUN/$name.out" >&2; stop "$PPID_"; return 1; }
  sleep 0.3
}

# ---------------------------------------------------------------- correctness checks
CURL=(curl -sS --max-time 5 -o "$RUN/body" -w '%{http_code}' --cacert "$PKI/ca.crt")
check_origin() { # expected-origin -> FAIL:... or nothing
  grep -q "\"origin\":\"$1\"" "$RUN/body" || echo "FAIL:origin=$(grep -o '"origin":"[^"]*"' "$RUN/body")"
}
# check KIND [PORT] -> OK or the first failure: the valid identity reaches the upstream as the
# origin despite a spoofed X-M2M-Origin; a wrong one is refused
check() {
  local c f u="https://localhost:${2:-$PORT}/m2m/check"
  case $1 in
    mtls)
      c=$("${CURL[@]}" --cert "$PKI/client.crt" --key "$PKI/client.key" -H 'X-M2M-Origin: spoofed' "$u" 2>/dev/null)
      [ "$c" = 200 ] || { echo "FAIL:valid-cert=$c"; return; }
      f=$(check_origin "$CLIENT_URI"); [ -z "$f" ] || { echo "$f"; return; }
      c=$("${CURL[@]}" "$u" 2>/dev/null)
      [ "$c" = 200 ] && { echo "FAIL:no-cert-accepted"; return; }
      c=$("${CURL[@]}" --cert "$PKI/rogue-client.crt" --key "$PKI/rogue-client.key" "$u" 2>/dev/null)
      [ "$c" = 200 ] && { echo "FAIL:rogue-cert-accepted"; return; } ;;
    basic)
      c=$("${CURL[@]}" -u "$BASIC_CRED" -H 'X-M2M-Origin: spoofed' "$u" 2>/dev/null)
      [ "$c" = 200 ] || { echo "FAIL:valid-cred=$c"; return; }
      f=$(check_origin "$BASIC_USER"); [ -z "$f" ] || { echo "$f"; return; }
      c=$("${CURL[@]}" -u "$BASIC_USER:wrong" "$u" 2>/dev/null)
      [ "$c" = 401 ] || { echo "FAIL:wrong-pw=$c"; return; } ;;
    bearer)
      c=$("${CURL[@]}" -H "Authorization: Bearer $TOKEN" -H 'X-M2M-Origin: spoofed' "$u" 2>/dev/null)
      [ "$c" = 200 ] || { echo "FAIL:valid-token=$c"; return; }
      f=$(check_origin "$BEARER_ORIGIN"); [ -z "$f" ] || { echo "$f"; return; }
      c=$("${CURL[@]}" -H "Authorization: Bearer wrong-token" "$u" 2>/dev/null)
      [ "$c" = 401 ] || { echo "FAIL:wrong-token=$c"; return; } ;;
    egress)   # plain HTTP into the route; the peer's ingress sets the route certificate's identity
      c=$("${CURL[@]}" -H 'X-M2M-Origin: spoofed' "http://$HOST:$EGRESS_PORT/m2m/check" 2>/dev/null)
      [ "$c" = 200 ] || { echo "FAIL:through-route=$c"; return; }
      f=$(check_origin "$CLIENT_URI"); [ -z "$f" ] || { echo "$f"; return; } ;;
    direct)
      c=$(curl -s -o /dev/null -w '%{http_code}' "http://$HOST:$UPORT/")
      [ "$c" = 200 ] || { echo "FAIL:$c"; return; } ;;
  esac
  echo OK
}

# ---------------------------------------------------------------- one measured oha run
# measure ID LABEL "PROXY-PIDS" URL CHECK [oha options...] -> one line in $TSV:
#   id label round req/s p50_ms p99_ms ok total check cpu%_proxy cpu%_upstream cpu%_oha cpu%_other
#   us_per_req us_per_proxy note
# req/s counts 200s only; cpu% = % of one core over the run (proxy = all PROXY-PIDS' trees,
# "-" for none); us_per_req = the proxies' CPU time per 200 (per new connection in the
# --disable-keepalive rows); us_per_proxy = the same per proxy process, "+"-joined, when several
# (egress: the route's proxy + the peer's ingress); other = CPU of processes not started here.
measure() {
  local id=$1 label=$2 ppids=$3 url=$4 chk=$5; shift 5
  local opts=(--no-tui -w --worker-threads "$LOADGEN_THREADS" -c "$CONC" "$@") r=${ROUND:-1} p
  [ "$ppids" = - ] && ppids=
  wait_idle
  timeout -k 2 $((WARMUP + 20)) taskset -c "$LOADGEN_CPUS" "$OHA" "${opts[@]}" -z "${WARMUP}s" "$url" > /dev/null 2>&1
  local p0=() p1=() u0 u1 a0 a1 at0 at1 t0 t1 lg
  for p in $ppids; do p0+=("$(tree_ticks "$p")"); done
  u0=$(tree_ticks "$UPID"); read -r a0 at0 < <(cpu_ticks "$ALLCPUS"); t0=$(date +%s.%N)
  # the wrapper shell reports its reaped children's CPU time (= oha's) after oha exits
  LGF="$RES/$id.$r.lgcpu" bash -c '"$@"; rc=$?; f=$(cut -d")" -f2- /proc/$$/stat); set -- $f
      echo $(( ${14} + ${15} )) > "$LGF"; exit $rc' _ \
    timeout -k 2 $((DURATION + 30)) taskset -c "$LOADGEN_CPUS" "$OHA" "${opts[@]}" -z "${DURATION}s" \
    --output-format json "$url" > "$RES/$id.$r.json" 2> "$RES/$id.$r.err"
  t1=$(date +%s.%N)
  for p in $ppids; do p1+=("$(tree_ticks "$p")"); done
  u1=$(tree_ticks "$UPID"); read -r a1 at1 < <(cpu_ticks "$ALLCPUS")
  lg=$(cat "$RES/$id.$r.lgcpu" 2>/dev/null || echo 0)
  local i dp=()
  for i in "${!p0[@]}"; do dp+=($((p1[i] - p0[i]))); done
  "$PYTHON" - "$RES/$id.$r.json" "$id" "$label" "$r" "$chk" "$t0" "$t1" "$HZ" "${dp[*]}" "$((u1 - u0))" "$lg" \
    "$((a1 - a0))" "$((at1 - at0))" "$NCPU" >> "$TSV" <<'PY'
import json, sys
f, rid, label, rep, check, t0, t1, hz, pts, ut, lg, ab, at, ncpu = sys.argv[1:]
wall = float(t1) - float(t0); hz = float(hz)
pts = [int(x) for x in pts.split()]
pt = sum(pts)
pct = lambda ticks: 100.0 * int(ticks) / hz / wall
allbusy = 100.0 * int(ab) / max(1, int(at)) * int(ncpu)      # % of one core, all CPUs
other = max(0.0, allbusy - pct(pt) - pct(ut) - pct(lg))
try:
    j = json.load(open(f))
except Exception:
    print("\t".join([rid, label, rep, "0", "nan", "nan", "0", "0", check, "0", "0", "0", "0", "nan", "-", "oha-failed"]))
    sys.exit()
lp = j.get("latencyPercentiles", {})
codes = j.get("statusCodeDistribution", {}) or {}
errs = j.get("errorDistribution", {}) or {}
ok = codes.get("200", 0); total = sum(codes.values()) + sum(errs.values())
rps = ok / float(j.get("summary", {}).get("total") or wall)
ms = lambda x: "nan" if x is None else "%.3f" % (x * 1000)
us = lambda t: "%.1f" % (t / hz * 1e6 / ok) if ok and pts else "nan"
per = "+".join(us(t) for t in pts) if len(pts) > 1 else "-"
note = ";".join("%s:%s" % (k, v) for k, v in list(codes.items()) + list(errs.items()) if k != "200")[:120]
print("\t".join([rid, label, rep, "%.1f" % rps, ms(lp.get("p50")), ms(lp.get("p99")), str(ok), str(total), check,
                 "%.0f" % pct(pt), "%.0f" % pct(ut), "%.0f" % pct(lg), "%.0f" % other, us(pt), per,
                 (note or "-").replace("\t", " ")]))
PY
  log "    $id round $r: $(tail -1 "$TSV" | awk -F'\t' '{printf "%s req/s, p99 %s ms, proxy %s us/req, cpu proxy/up/oha/other %s/%s/%s/%s%%", $4,$6,$14,$10,$11,$12,$13}')"
}
