#!/usr/bin/env bash
# Memory rows, per proxy on a fresh start (RSS = VmRSS summed over the proxy's processes, Pss
# likewise; kernel socket buffers are not in it):
#   memory N   idle0 right after start; idle1 after one checked request (the baseline: one-time
#              allocations done); held with N idle keep-alive mTLS connections, each did one
#              request (tlsclient.py hold, RATE new connections/s); closed, 3 s after they closed.
#              Per connection = (held - idle1) / opened.
#   burst      (ours by default) the proxy with its default limits; idle1; then BURST_SILENT TCP
#              connections that send nothing and BURST_SLOW slow-loris connections (mTLS
#              handshake, then a request head that never ends), kept BURST_HOLD s (beyond the
#              default limits.header_timeout of 10 s, so the proxy's own timeouts close them);
#              RSS peak while they are open, and BURST_AFTER (30) s after they are all gone.
#
#   PROXIES="m2m=target/release/m2m-auth-proxy haproxy nginx" bench/memory.sh
# PROXIES: `nginx`, `haproxy` (the harness's mtls-san configs with only the connection limits
# raised: nginx worker_connections 12000, HAProxy maxconn 8000) or NAME=BINARY (ours, with
# limits.idle_timeout 300s so that the held connections stay). Knobs: NS ("1000 5000"),
# NS_ANCHORS (the anchors' N, default NS), RATE
# (400), SETTLE (3), BURST (the proxies that get the burst row; default the NAME=BINARY ones),
# BURST_SILENT (300), BURST_SLOW (300), BURST_HOLD (15), BURST_AFTER (30), OUT.
# Writes memory.tsv, burst.tsv and memory.md to OUT.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PROXIES=${PROXIES:-m2m=$M2M_BIN nginx haproxy}
NS=${NS:-1000 5000}
NS_ANCHORS=${NS_ANCHORS:-$NS}
RATE=${RATE:-400}
SETTLE=${SETTLE:-3}
BURST=${BURST-$(for p in $PROXIES; do [[ $p == *=* ]] && printf '%s ' "${p%%=*}"; done)}
BURST_SILENT=${BURST_SILENT:-300}
BURST_SLOW=${BURST_SLOW:-300}
BURST_HOLD=${BURST_HOLD:-15}
BURST_AFTER=${BURST_AFTER:-30}
RES=${OUT:-$WORK/results/memory-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$RES"
MEMTSV=$RES/memory.tsv BURSTTSV=$RES/burst.tsv
printf 'proxy\tN\topened\tbad\terrors\testab\tidle0_kb\tidle1_kb\theld_kb\tclosed_kb\tstill_open\tidle1_pss_kb\theld_pss_kb\n' > "$MEMTSV"
printf 'proxy\tsilent\tslow\terrors\tidle1_kb\tpeak_kb\tafter_kb\tafter_s\tclosed_by_proxy\tafter_max_kb\n' > "$BURSTTSV"

render_anchors
sed "s/worker_connections [0-9]*;/worker_connections 12000;/" "$RUN/nginx-mtls-san.conf" > "$RUN/mem-nginx-mtls-san.conf"
sed -e "s/^\(    maxconn\) [0-9]*/\1 8000/" -e "s/^defaults$/defaults\n    maxconn 8000/" \
  "$RUN/haproxy-mtls-san-t1.cfg" > "$RUN/mem-haproxy-mtls-san.cfg"

proxy_cmd() { # entry memory|burst -> NAME, CMD
  NAME=${1%%=*}
  case $1 in
    nginx) CMD=("$NGINX" -c "$RUN/mem-nginx-mtls-san.conf") ;;
    haproxy) CMD=("$HAPROXY" -db -f "$RUN/mem-haproxy-mtls-san.cfg") ;;
    *=*) if [ "$2" = memory ]; then
           CMD=(env BENCH_MODE=mtls LIMITS_IDLE=300s M2M_BIN="${1#*=}" bash "$BENCH/project-proxy.sh")
         else
           CMD=(env BENCH_MODE=mtls M2M_BIN="${1#*=}" bash "$BENCH/project-proxy.sh")
         fi ;;
    *) die "unknown proxy $1 (nginx, haproxy or NAME=BINARY)" ;;
  esac
}
# start, read idle0, one checked request, idle1 -> R0 R1 P1 (kB), CHK
start_measured() { # entry kind
  proxy_cmd "$1" "$2"
  wait_idle
  start_proxy "$NAME-$2" "$PROXY_CPUS" "${CMD[@]}" || return 1
  sleep 1
  read -r R0 _ _ < <(tree_mem "$PPID_")
  CHK=$(check mtls); [ "$CHK" = OK ] || log "  $NAME: check $CHK"
  sleep 1
  read -r R1 P1 _ < <(tree_mem "$PPID_")
}

log "memory: proxies '$PROXIES', N '$NS', burst '$BURST'; results $RES"
start_upstream 12000
for px in $PROXIES; do
  want "${px%%=*}-memory" || continue
  ns=$NS; [[ $px == *=* ]] || ns=$NS_ANCHORS
  for N in $ns; do
    start_measured "$px" memory || continue
    hold_s=$((N / RATE + 90))
    start "client-$NAME-$N" "$LOADGEN_CPUS" timeout -k 5 $((hold_s + 30)) "$PYTHON" "$BENCH/tlsclient.py" hold \
      --port "$PORT" -n "$N" --rate "$RATE" --hold "$hold_s" --expect-origin "$CLIENT_URI"
    cpid=$STARTED_PID
    for ((i = 0; i < (N / RATE + 60) * 10; i++)); do
      grep -q '^READY' "$RUN/client-$NAME-$N.out" 2>/dev/null && break
      kill -0 "$cpid" 2>/dev/null || break
      sleep 0.1
    done
    ready=$(grep '^READY' "$RUN/client-$NAME-$N.out")
    sleep "$SETTLE"
    read -r rh ph _ < <(tree_mem "$PPID_")
    ep=$(estab_sport "$PORT")
    opened=$(sed -n 's/^READY open=\([0-9]*\).*/\1/p' <<< "$ready")
    bad=$(sed -n 's/.* bad=\([0-9]*\).*/\1/p' <<< "$ready"); errs=$(sed -n 's/.* errors=\([0-9]*\).*/\1/p' <<< "$ready")
    kill -TERM -- "-$cpid" 2>/dev/null   # release: timeout forwards it to python
    for ((i = 0; i < 100; i++)); do kill -0 "$cpid" 2>/dev/null || break; sleep 0.1; done
    still=$(sed -n 's/^CLOSED still_open_at_end=\([0-9]*\).*/\1/p' "$RUN/client-$NAME-$N.out")
    stop "$cpid"; sleep 3
    read -r rc _ _ < <(tree_mem "$PPID_")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$NAME" "$N" "${opened:-0}" "${bad:-?}" "${errs:-?}" "$ep" \
      "$R0" "$R1" "$rh" "$rc" "${still:-?}" "$P1" "$ph" >> "$MEMTSV"
    log "$NAME memory N=$N (check $CHK): idle $R0 kB -> $R1 kB after 1 req, held $rh kB ($ready), closed $rc kB"
    stop "$PPID_"; sleep 1
  done
done

for px in $PROXIES; do
  [[ " $BURST " == *" ${px%%=*} "* ]] && want "${px%%=*}-burst" || continue
  start_measured "$px" burst || continue
  start "burst-$NAME" "$LOADGEN_CPUS" timeout -k 5 $((BURST_HOLD + 120)) "$PYTHON" "$BENCH/tlsclient.py" burst \
    --port "$PORT" --silent "$BURST_SILENT" --slow "$BURST_SLOW" --hold "$BURST_HOLD"
  cpid=$STARTED_PID peak=$R1
  while kill -0 "$cpid" 2>/dev/null; do   # RSS sampled every 0.5 s while the burst lasts
    read -r r _ _ < <(tree_mem "$PPID_")
    [ "${r:-0}" -gt "$peak" ] && peak=$r
    sleep 0.5
  done
  stop "$cpid"
  ready=$(grep '^READY' "$RUN/burst-$NAME.out"); closed=$(grep '^CLOSED' "$RUN/burst-$NAME.out")
  log "$NAME burst: $ready; $closed; peak $peak kB; waiting ${BURST_AFTER}s"
  amax=0 t_end=$((SECONDS + BURST_AFTER))
  while [ "$SECONDS" -lt "$t_end" ]; do   # sampled each second: the highest after the burst, too
    read -r r _ _ < <(tree_mem "$PPID_")
    [ "${r:-0}" -gt "$amax" ] && amax=$r
    sleep 1
  done
  read -r ra _ _ < <(tree_mem "$PPID_")
  silent=$(sed -n 's/.*silent=\([0-9]*\).*/\1/p' <<< "$ready"); slow=$(sed -n 's/.*slow=\([0-9]*\).*/\1/p' <<< "$ready")
  errs=$(sed -n 's/.* errors=\([0-9]*\).*/\1/p' <<< "$ready")
  byproxy=$(sed -n 's/.*silent_closed_by_server=\([0-9]*\) of [0-9]* slow_closed_by_server=\([0-9]*\).*/\1+\2/p' <<< "$closed")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$NAME" "${silent:-0}" "${slow:-0}" "${errs:-?}" "$R1" "$peak" "$ra" \
    "$BURST_AFTER" "${byproxy:-?}" "$amax" >> "$BURSTTSV"
  log "$NAME burst: idle $R1 kB, peak $peak kB while open, at most $amax kB after, ${BURST_AFTER}s after $ra kB"
  stop "$PPID_"; sleep 1
done
stop "$UPID"
"$PYTHON" "$BENCH/tables.py" memory "$MEMTSV" "$BURSTTSV" | tee "$RES/memory.md"
