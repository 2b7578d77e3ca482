#!/usr/bin/env bash
# Starts m2m-auth-proxy for one benchmark row: renders a proxy.yaml from the environment that
# bench/lib.sh and the row set, and execs the binary.
#   * `log: {access: false}`: the anchors write no access log either (ours writes one JSON line
#     per request to stdout when on);
#   * `shutdown: {grace_period: 1s}`: the harness stops every row with SIGTERM and waits 5 s;
#   * `admin` on ADMIN_PORT (default LISTEN_PORT+1), checked free before starting;
#   * modes `mtls` (identity = URI SAN), `basic-*` (htpasswd HTPASSWD; BASIC_CACHE_ENTRIES),
#     `bearer` (tokens file TOKENS);
#   * WORKERS -> `threads` (1 like the anchors; 2 in the `-t2` rows);
#   * SESSION_TICKETS=1 writes `tls.session_tickets: true` (resumption rows only);
#   * LIMITS_IDLE=300s writes `limits.idle_timeout` (+ max_connections) for the memory rows;
#   * EGRESS_LISTEN + EGRESS_PEER add an egress route (`bench`) to that peer with the client
#     certificate EGRESS_CERT / EGRESS_KEY and the CA CLIENT_CA (the egress row).
# Environment: BENCH_MODE (mtls | basic-plain | basic-sha1 | basic-bcrypt5 | basic-bcrypt10 | bearer),
# LISTEN_ADDR, UPSTREAM_ADDR, TLS_CERT, TLS_KEY, CLIENT_CA, HTPASSWD, TOKENS, WORKERS, M2M_BIN.
set -eu
BIN=${M2M_BIN:-target/release/m2m-auth-proxy}
cfg=$(mktemp "${BENCH_RUN:-${TMPDIR:-/tmp}}/m2m-bench.XXXXXX.yaml")
admin_port=${ADMIN_PORT:-$(( ${LISTEN_PORT:-38443} + 1 ))}
if (exec 3<>"/dev/tcp/127.0.0.1/$admin_port") 2>/dev/null; then
  echo "project-proxy.sh: admin port $admin_port is busy; set ADMIN_PORT" >&2
  exit 3
fi

common() { # $1 = client_cert mode
  cat <<YAML
listen: "$LISTEN_ADDR"
threads: ${WORKERS:-1}
tls:
  cert: $TLS_CERT
  key: $TLS_KEY
YAML
  if [ "$1" != off ]; then
    echo "  client_ca: $CLIENT_CA"
  fi
  # resumption row only: the plain rows stay without resumption, like the anchors
  if [ "${SESSION_TICKETS:-0}" = 1 ]; then
    echo "  session_tickets: true"
  fi
  cat <<YAML
  client_cert: $1
upstream: "http://$UPSTREAM_ADDR"
admin: "127.0.0.1:$admin_port"
log:
  access: false
shutdown:
  grace_period: 1s
originator:
  mode: overwrite
YAML
  # memory rows hold thousands of idle connections for longer than the default idle timeout
  # allows (older binaries without a `limits` section: leave LIMITS_IDLE unset)
  if [ -n "${LIMITS_IDLE:-}" ]; then
    printf 'limits:\n  idle_timeout: %s\n  max_connections: %s\n' "$LIMITS_IDLE" "${LIMITS_MAX_CONNS:-20000}"
  fi
  if [ -n "${EGRESS_LISTEN:-}" ]; then
    cat <<YAML
egress:
  - name: bench
    listen: "$EGRESS_LISTEN"
    peer: "$EGRESS_PEER"
    tls:
      ca: $CLIENT_CA
      cert: $EGRESS_CERT
      key: $EGRESS_KEY
YAML
  fi
}

case "$BENCH_MODE" in
  mtls)
    { common required
      cat <<YAML
auth:
  methods: [mtls]
  mtls:
    identity: [uri]
  anonymous: deny
YAML
    } > "$cfg"
    ;;
  basic-*)
    insecure=false; [ "$BENCH_MODE" = basic-plain ] && insecure=true
    { common off
      cat <<YAML
auth:
  methods: [basic]
  basic:
    htpasswd: $HTPASSWD
    allow_insecure_hashes: $insecure
    cache:
      max_entries: ${BASIC_CACHE_ENTRIES:-10000}
      ttl: 5m
  anonymous: deny
YAML
    } > "$cfg"
    ;;
  bearer)
    { common off
      cat <<YAML
auth:
  methods: [bearer]
  bearer:
    tokens: $TOKENS
  anonymous: deny
YAML
    } > "$cfg"
    ;;
  *) echo "unknown BENCH_MODE $BENCH_MODE" >&2; exit 2 ;;
esac
exec "$BIN" --config "$cfg"
