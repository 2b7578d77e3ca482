#!/usr/bin/env bash
# Check the Grafana dashboard deploy/grafana/m2m-auth-proxy.json against the real proxy:
#   1. the JSON parses and has panels with queries, and every metric selector in a panel query
#      filters instance=~"$instance";
#   2. start the built proxy on loopback (dev PKI from certs/dev, an upstream nobody listens on:
#      no request is made) and fetch its admin /metrics;
#   3. every m2m_auth_proxy_* name in the dashboard's queries (panel `expr` fields and template
#      variable queries) must be exported there. Histograms are exported as <name>_bucket,
#      <name>_sum and <name>_count, and the queries must use those names;
#   4. if promtool is installed, every panel query must parse as PromQL (Grafana's variables
#      replaced by sample values).
# Fails naming every metric the proxy does not export. The proxy started here is stopped on
# every exit.
#
# Environment: DASHBOARD (default deploy/grafana/m2m-auth-proxy.json), M2M_AUTH_PROXY_BIN
# (default target/debug/m2m-auth-proxy, then target/release/m2m-auth-proxy), PYTHON (python3).
set -euo pipefail

# Paths given relative to the caller's directory stay valid after the cd below.
abs() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
[ -z "${DASHBOARD:-}" ] || DASHBOARD=$(abs "$DASHBOARD")
[ -z "${M2M_AUTH_PROXY_BIN:-}" ] || M2M_AUTH_PROXY_BIN=$(abs "$M2M_AUTH_PROXY_BIN")
cd "$(dirname "$0")/.."
root=$PWD

DASHBOARD=${DASHBOARD:-$root/deploy/grafana/m2m-auth-proxy.json}
PY=${PYTHON:-python3}
say() { echo "check-dashboard: $*"; }
fail() { echo "check-dashboard: FAIL: $*" >&2; exit 1; }

command -v "$PY" >/dev/null || fail "$PY not found"
command -v curl >/dev/null || fail "curl not found"
[ -f "$DASHBOARD" ] || fail "$DASHBOARD: no such file"

bin=${M2M_AUTH_PROXY_BIN:-}
if [ -z "$bin" ]; then
  for b in target/debug/m2m-auth-proxy target/release/m2m-auth-proxy; do
    if [ -x "$b" ]; then bin=$root/$b; break; fi
  done
fi
[ -n "$bin" ] || fail "no built proxy (target/debug or target/release): run cargo build or set M2M_AUTH_PROXY_BIN"
[ -x "$bin" ] || fail "$bin is not an executable"

tmp=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  [ -z "$pid" ] || wait "$pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- 1. the dashboard --------------------------------------------------------------------------
# Writes queries.tsv (panel id, refId, panel title, expr) and names.tsv (metric, where).
"$PY" - "$DASHBOARD" "$tmp" <<'PYEOF'
import json, os, re, sys

path, out = sys.argv[1], sys.argv[2]
try:
    with open(path) as f:
        dash = json.load(f)
except (OSError, ValueError) as e:
    sys.exit(f"check-dashboard: FAIL: {path} is not valid JSON: {e}")
if not isinstance(dash, dict):
    sys.exit(f"check-dashboard: FAIL: {path}: not a dashboard object")

NAME = re.compile(r"m2m_auth_proxy_[a-z0-9_]+")
SELECTOR = re.compile(r"(m2m_auth_proxy_[a-z0-9_]+)(\{[^}]*\})?")
INSTANCE = 'instance=~"$instance"'


def walk(panels):
    for p in panels or []:
        if not isinstance(p, dict):
            continue
        yield p
        yield from walk(p.get("panels"))  # rows hold their panels when collapsed


panels = [p for p in walk(dash.get("panels")) if p.get("type") != "row"]
if not panels:
    sys.exit(f"check-dashboard: FAIL: {path} has no panels")

queries, names, errors = [], [], []
for p in panels:
    title = p.get("title") or f"panel {p.get('id')}"
    for t in p.get("targets") or []:
        expr = t.get("expr")
        if not expr:
            continue
        queries.append((str(p.get("id")), str(t.get("refId", "")), title, expr))
        for m in SELECTOR.finditer(expr):
            names.append((m.group(1), f'panel "{title}"'))
            if INSTANCE not in (m.group(2) or ""):
                errors.append(f'panel "{title}" ({t.get("refId")}): {m.group(1)} does not filter {INSTANCE}')
        if not NAME.search(expr):
            errors.append(f'panel "{title}" ({t.get("refId")}): query names no m2m_auth_proxy_ metric: {expr}')
for v in (dash.get("templating") or {}).get("list") or []:
    q = v.get("query")
    q = q.get("query", "") if isinstance(q, dict) else q
    if v.get("type") == "query" and isinstance(q, str):
        for n in NAME.findall(q):
            names.append((n, f'variable "{v.get("name")}"'))
if not queries:
    sys.exit(f"check-dashboard: FAIL: {path}: {len(panels)} panels, but no query (expr) in any of them")
for e in errors:
    print(f"check-dashboard: FAIL: {e}", file=sys.stderr)
if errors:
    sys.exit(1)
with open(os.path.join(out, "queries.tsv"), "w") as f:
    for q in queries:
        f.write("\t".join(x.replace("\t", " ").replace("\n", " ") for x in q) + "\n")
with open(os.path.join(out, "names.tsv"), "w") as f:
    for n, where in names:
        f.write(f"{n}\t{where}\n")
print(f"check-dashboard: {path}: {len(panels)} panels, {len(queries)} queries, "
      f"{len({n for n, _ in names})} distinct metrics")
PYEOF

# ---- 2. the running proxy ----------------------------------------------------------------------
# Three free loopback ports, bound at once so that they differ: listener, admin, and an upstream
# that nobody listens on.
ports=$("$PY" -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
')
read -r listen_port admin_port upstream_port <<<"$ports"
[ -n "${upstream_port:-}" ] || fail "could not find free ports"

dev=$root/certs/dev
for f in server.pem server.key ca.pem htpasswd tokens.yaml; do
  [ -f "$dev/$f" ] || fail "$dev/$f missing (the committed dev PKI)"
done
cat >"$tmp/proxy.yaml" <<EOF
# written by .ci/check-dashboard.sh: loopback only, INSECURE dev PKI
listen: "127.0.0.1:$listen_port"
admin: "127.0.0.1:$admin_port"
threads: 1
tls:
  cert: $dev/server.pem
  key: $dev/server.key
  client_ca: $dev/ca.pem
  client_cert: optional
upstream: "http://127.0.0.1:$upstream_port"
auth:
  methods: [mtls, bearer, basic]
  basic:
    htpasswd: $dev/htpasswd
  bearer:
    tokens: $dev/tokens.yaml
reload:
  watch: false
log:
  access: false
shutdown:
  grace_period: 0s
# the committed dev PKI is published: refused unless allowed (loopback, CI only)
allow_example_credentials: true
EOF

"$bin" --config "$tmp/proxy.yaml" >"$tmp/proxy.log" 2>&1 &
pid=$!
url="http://127.0.0.1:$admin_port/metrics"
up=
for _ in $(seq 100); do
  if curl -fsS --noproxy '*' --max-time 1 -o "$tmp/metrics" "$url" 2>/dev/null; then
    up=1
    break
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    tail -n 20 "$tmp/proxy.log" >&2
    fail "$bin exited before serving $url"
  fi
  sleep 0.1
done
if [ -z "$up" ]; then
  tail -n 20 "$tmp/proxy.log" >&2
  fail "$url did not answer within 10 s"
fi
say "fetched $url from $bin (pid $pid)"

# ---- 3. every queried metric is exported -------------------------------------------------------
"$PY" - "$tmp/names.tsv" "$tmp/metrics" "$DASHBOARD" <<'PYEOF'
import re, sys

names_file, metrics_file, dashboard = sys.argv[1:4]
exported = set()
with open(metrics_file) as f:
    for line in f:
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", line)
        if m and not line.startswith("#"):
            exported.add(m.group(1))
wanted = {}
with open(names_file) as f:
    for line in f:
        name, where = line.rstrip("\n").split("\t", 1)
        wanted.setdefault(name, []).append(where)
missing = sorted(n for n in wanted if n not in exported)
for n in missing:
    places = sorted(set(wanted[n]))
    print(f"check-dashboard: FAIL: {n} is not exported by the running proxy "
          f"(used in {', '.join(places)})", file=sys.stderr)
if missing:
    print(f"check-dashboard: {len(missing)} of {len(wanted)} metrics in {dashboard} are missing "
          "from /metrics", file=sys.stderr)
    sys.exit(1)
print(f"check-dashboard: all {len(wanted)} metrics are exported ({len(exported)} sample names in /metrics)")
PYEOF

# ---- 4. PromQL syntax --------------------------------------------------------------------------
promql="skipped (no promtool)"
if command -v promtool >/dev/null; then
  # A rules file (JSON is YAML) with one recording rule per panel query.
  "$PY" - "$tmp/queries.tsv" "$tmp/rules.json" <<'PYEOF'
import json, re, sys

rules = []
with open(sys.argv[1]) as f:
    for line in f:
        pid, ref, title, expr = line.rstrip("\n").split("\t", 3)
        expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
        expr = re.sub(r"\$\{?\w+\}?", ".*", expr)  # $instance sits inside a regex matcher
        rules.append({"record": f"dashboard:panel_{pid}_{ref}", "expr": expr})
with open(sys.argv[2], "w") as f:
    json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f, indent=1)
PYEOF
  if ! promtool check rules "$tmp/rules.json" >"$tmp/promtool.out" 2>&1; then
    cat "$tmp/promtool.out" >&2
    fail "a dashboard query is not valid PromQL (rule dashboard:panel_<panel id>_<refId>)"
  fi
  promql="promtool parsed all of them"
fi

queries=$(wc -l <"$tmp/queries.tsv")
metrics=$(cut -f1 "$tmp/names.tsv" | sort -u | wc -l)
say "OK: $metrics metrics in $queries queries of $(basename "$DASHBOARD") exported by the running proxy; PromQL: $promql"
