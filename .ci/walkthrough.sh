#!/usr/bin/env bash
# Runs docs/walkthrough.md: the ```sh walkthrough blocks of the document, extracted from it and
# run in order in one bash (errexit, pipefail) in a scratch directory, on loopback ports that
# were free a moment ago, with `m2m-auth-proxy echo` as the two CSEs (the document starts them).
# So the walkthrough stays true. Bounded: the whole run is stopped after WALKTHROUGH_TIMEOUT
# seconds (default 180). The commands run in a process group of their own, which is ended
# (SIGTERM, then SIGKILL) on exit, so every process they started is gone afterwards.
#
# Environment: M2M_AUTH_PROXY_BIN (default $CARGO_TARGET_DIR or target, /debug/m2m-auth-proxy, built
# if missing),
# WALKTHROUGH_WORK (scratch directory, default a new /tmp/m2m-walkthrough.XXXXXX, kept).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
say() { echo "walkthrough: $*"; }

BIN=${M2M_AUTH_PROXY_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/m2m-auth-proxy}
if [ ! -x "$BIN" ]; then
  say "building $BIN"
  cargo build --quiet
fi
for tool in openssl curl python3 setsid; do
  command -v "$tool" >/dev/null || { say "FAIL: $tool not found"; exit 1; }
done

WORK=${WALKTHROUGH_WORK:-$(mktemp -d /tmp/m2m-walkthrough.XXXXXX)}
mkdir -p "$WORK/bin"
ln -sf "$BIN" "$WORK/bin/m2m-auth-proxy"

# The blocks, in document order; an empty line between blocks.
awk '
  /^```sh walkthrough[ \t]*$/ { on = 1; n++; print "# --- block " n; next }
  /^```/ { if (on) { on = 0; print "" } ; next }
  on { print }
' docs/walkthrough.md >"$WORK/walkthrough.sh"
blocks=$(grep -c '^# --- block ' "$WORK/walkthrough.sh" || true)
[ "$blocks" -gt 0 ] || { say "FAIL: no \`\`\`sh walkthrough block in docs/walkthrough.md"; exit 1; }
say "$blocks blocks from docs/walkthrough.md -> $WORK/walkthrough.sh"

# Eight distinct loopback ports, free a moment ago.
read -r IN_PORT IN_ADMIN IN_CSE IN_EGRESS MN_PORT MN_ADMIN MN_CSE MN_EGRESS < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(8)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
')
export IN_PORT IN_ADMIN IN_CSE IN_EGRESS MN_PORT MN_ADMIN MN_CSE MN_EGRESS
export IN_NAME=127.0.0.1 MN_NAME=127.0.0.1 LISTEN_IP=127.0.0.1

# Run in a new session: its process group id is the pid, and holds everything it starts.
(cd "$WORK" && PATH="$WORK/bin:$PATH" exec setsid bash -euo pipefail walkthrough.sh >run.log 2>&1) &
group=$!
stop_group() {
  kill -TERM -- "-$group" 2>/dev/null || true
  for _ in $(seq 20); do
    kill -0 -- "-$group" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL -- "-$group" 2>/dev/null || true
}
trap stop_group EXIT

deadline=$((SECONDS + ${WALKTHROUGH_TIMEOUT:-180}))
while kill -0 "$group" 2>/dev/null; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    say "FAIL: still running after ${WALKTHROUGH_TIMEOUT:-180} s"
    stop_group
    break
  fi
  sleep 0.2
done
status=0
wait "$group" || status=$?
if [ "$status" -ne 0 ]; then
  say "FAIL (exit $status); output of $WORK/walkthrough.sh:"
  sed 's/^/  | /' "$WORK/run.log"
  for log in "$WORK"/in/*.log "$WORK"/mn/*.log; do
    [ -f "$log" ] || continue
    echo "--- $log (last 20 lines)"
    tail -n 20 "$log" | sed 's/^/  | /'
  done
  exit 1
fi
say "OK ($blocks blocks; work directory $WORK)"
