#!/usr/bin/env bash
# Experiment: same harness layout; patched binary with env toggles (M2M_EXP_*).
set -uo pipefail
SHARED=/work/shared/bench; HERE=$SHARED; . $SHARED/lib.sh
BIN=${BIN:-/tmp/m2m-exp/target/release/m2m-auth-proxy}
OUT=${OUT:-/tmp/m2m-exp/out}; mkdir -p $OUT
D=${D:-8}
export ADMIN_PORT=38444 M2M_BIN=$BIN LISTEN_PORT=$PORT LISTEN_ADDR=$HOST:$PORT UPSTREAM_ADDR=$HOST:$UPORT \
  TLS_CERT=$PKI/server.crt TLS_KEY=$PKI/server.key CLIENT_CA=$PKI/ca.crt WORKERS=1 BENCH_MODE=mtls
URL="https://localhost:$PORT/m2m/cse-bench/cnt-1/la"
MT=(--cacert $PKI/ca.crt --cert $PKI/client.crt --key $PKI/client.key -H 'X-M2M-Origin: spoofed-by-client' -H 'X-M2M-RI: bench-1')
TSV=$OUT/exp.tsv
start_upstream 12000
binpid() { for p in $(tree_pids $1); do [ "$(readlink /proc/$p/exe)" = "$BIN" ] && echo $p; done | head -1; }
load() { # variant kind(ka|nc) pid
  local v=$1 k=$2 pid=$3 extra=(); [ $k = nc ] && extra=(--disable-keepalive)
  wait_idle
  taskset -c 1 oha --no-tui -w --worker-threads 1 -c 32 -z 2s "${MT[@]}" "${extra[@]}" $URL >/dev/null 2>&1
  local t0 t1; t0=$(tree_ticks $pid)
  taskset -c 1 oha --no-tui -w --worker-threads 1 -c 32 -z ${D}s --output-format json "${MT[@]}" "${extra[@]}" $URL > $OUT/$v.$k.json 2>/dev/null
  t1=$(tree_ticks $pid)
  python3 - $OUT/$v.$k.json $((t1-t0)) $HZ $v $k >> $TSV <<'PY'
import json,sys
f,t,hz,v,k=sys.argv[1:]
j=json.load(open(f)); ok=j["statusCodeDistribution"].get("200",0); tot=j["summary"]["total"]
rps=ok/tot; us=int(t)/float(hz)*1e6/max(ok,1)
print("%s\t%s\t%.0f\t%.0f\t%.2f"%(v,k,rps,us,(j["latencyPercentiles"]["p99"] or 0)*1000))
PY
  log "$v $k: $(tail -1 $TSV)"
}
mem() { # variant pid
  local v=$1 pid=$2 N=${N:-1000}
  sleep 0.5; read -r r1 _ _ < <(tree_mem $pid)
  start "c-$v" 1 timeout 120 python3 $SHARED/tlsclient.py hold --port $PORT -n $N --rate 400 --hold 60 --expect-origin urn:m2m:Cae-sensor1
  local c=$STARTED_PID
  for i in $(seq 600); do grep -q READY $RUN/c-$v.out 2>/dev/null && break; sleep 0.1; done
  sleep 3; read -r rh _ _ < <(tree_mem $pid)
  echo -e "$v\tmem$N\t$r1\t$rh\t$(( (rh - r1) * 1024 / N ))\t$(grep READY $RUN/c-$v.out | cut -c1-40)" >> $TSV
  log "$v mem: idle1 $r1 kB held $rh kB per-conn $(( (rh - r1) * 1024 / N )) B"
  stop $c
}
resume() { # variant pid
  local v=$1 pid=$2
  for mode in full resume; do
    local t0 t1 res; t0=$(tree_ticks $pid)
    res=$(taskset -c 1 python3 $SHARED/tlsclient.py loop --port $PORT --duration 4 --threads 4 --mode $mode --tls 1.3 --expect-origin urn:m2m:Cae-sensor1 | tail -1)
    t1=$(tree_ticks $pid)
    echo -e "$v\tloop-$mode\t$res\tproxy_us_per_conn=$(python3 -c "import json,sys; j=json.loads(sys.argv[1]); print(round(($2)/$HZ*1e6/max(1,j['conns'])))" "$res" $((t1-t0)))" >> $TSV
    log "$v loop-$mode: $(tail -1 $TSV | cut -c1-200)"
  done
}
run_variant() { # name what... -- env...
  local v=$1; shift; local what=(); while [ "$1" != -- ]; do what+=("$1"); shift; done; shift
  start "p-$v" 0 env "$@" bash /work/main/bench/project-proxy.sh; local p=$STARTED_PID
  wait_port $PORT 30 $p || { tail -5 $RUN/p-$v.out; die "no start $v"; }
  sleep 0.5; local b; b=$(binpid $p)
  read -r r0 _ _ < <(tree_mem $p)
  curl -s -o /dev/null --cacert $PKI/ca.crt --cert $PKI/client.crt --key $PKI/client.key https://localhost:$PORT/m2m/x
  sleep 0.5; read -r r1 _ _ < <(tree_mem $p)
  echo -e "$v\tidle\t$r0\t$r1" >> $TSV
  for w in "${what[@]}"; do case $w in ka|nc) load $v $w $p ;; mem) mem $v $p ;; resume) resume $v $p ;; esac; done
  stop $p; sleep 0.5
}
for r in ${ROUNDS:-1}; do
run_variant base ka nc mem -- X=1
run_variant mem-l4read0-ra ka mem -- M2M_EXP_RELEASE_BUFFERS=1 M2M_EXP_L4READ=0 M2M_EXP_READ_AHEAD=1
run_variant mem-l4read16k ka mem -- M2M_EXP_RELEASE_BUFFERS=1 M2M_EXP_L4READ=16896
run_variant rb-only mem -- M2M_EXP_RELEASE_BUFFERS=1
run_variant hdr ka -- M2M_EXP_HDR=1
run_variant groups-x25519-p256 nc -- M2M_EXP_GROUPS=X25519:P-256
run_variant resume-stateful nc resume -- M2M_EXP_RESUME=stateful
run_variant resume-tickets nc resume -- M2M_EXP_RESUME=tickets
run_variant cafile -- M2M_EXP_CAFILE=$PKI/ca.crt
run_variant all ka nc mem -- M2M_EXP_RELEASE_BUFFERS=1 M2M_EXP_L4READ=16896 M2M_EXP_GROUPS=X25519:P-256 M2M_EXP_HDR=1 M2M_EXP_CAFILE=$PKI/ca.crt
done
stop $UPID
