#!/usr/bin/env python3
"""The attacks of issue 28 against one proxy binary, measured from outside (stdlib only).

guesses: N concurrent wrong Basic guesses (bcrypt cost 10) from one address, each on its own
  TLS connection, released together; then the right password. Meanwhile a probe makes a new
  mTLS connection and one request every 100 ms. Prints the statuses, the password checks the
  proxy ran (m2m_auth_proxy_verifications_total when the binary has it), the proxy's CPU
  seconds (utime+stime from /proc: work done, not wall time), its peak thread count, and the
  probe's latencies. The machine may be shared: the probe's latency includes waiting for a CPU.

ws: N authenticated (mTLS) oneM2M WebSocket connections each sending a frame of SIZE bytes
  minus one (the last byte never comes), held for --hold seconds, then closed. Prints the
  proxy's RSS idle, peak, while held, and 1/10/30 s after the connections closed, and how many
  connections the proxy closed (1013) instead of buffering. --env KEY=VALUE sets environment
  variables of the proxy (e.g. MALLOC_MMAP_THRESHOLD_=131072, to compare allocator settings).

    bench/bounded.py guesses --bin target/release/m2m-auth-proxy [--guesses 500]
    bench/bounded.py ws --bin target/release/m2m-auth-proxy [--conns 1000] [--size 1048576]
"""

import argparse
import base64
import hashlib
import http.client
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from egress_latency import cpu_seconds, free_port, pki, wait_ready  # noqa: E402

PASSWORD = "correct horse"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def threads(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def metric(admin, name):
    try:
        c = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
    except OSError:
        return None
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
            seen = True
    return total if seen else None


def start(binary, d, extra, env_extra):
    port, admin = free_port(), free_port()
    yaml = (f'listen: "127.0.0.1:{port}"\nthreads: 2\nadmin: "127.0.0.1:{admin}"\n'
            f'upstream: "http://127.0.0.1:{extra["upstream"]}"\n'
            f"tls:\n  cert: {d}/server.pem\n  key: {d}/server.key\n  client_ca: {d}/ca.pem\n"
            f"  client_cert: optional\n"
            f"auth:\n  methods: [mtls, basic]\n  mtls:\n    identity: [uri]\n"
            f"  basic:\n    htpasswd: {d}/htpasswd\n"
            f"originator:\n  mode: overwrite\nlog:\n  access: false\nshutdown:\n  grace_period: 1s\n"
            # the attack's connections are all opened before they send: no header timeout then
            f"limits:\n  header_timeout: 300s\n"
            + extra.get("yaml", ""))
    with open(os.path.join(d, "proxy.yaml"), "w") as f:
        f.write(yaml)
    log = os.path.join(d, "proxy.log")
    env = dict(os.environ, **env_extra)
    proc = subprocess.Popen([binary, "--config", os.path.join(d, "proxy.yaml")],
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"), env=env)
    wait_ready(admin, proc, log)
    return proc, port, admin


def ctx(d, cert=True):
    c = ssl.create_default_context(cafile=os.path.join(d, "ca.pem"))
    if cert:
        c.load_cert_chain(os.path.join(d, "dev.pem"), os.path.join(d, "dev.key"))
    return c


def request(sock, head):
    sock.sendall(head)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return 0
        data += chunk
    return int(data.split(b" ", 2)[1])


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def http_upstream(port):
    """Answers every request 200 with an empty body, keep-alive."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(1024)

    def serve(conn):
        with conn:
            buf = b""
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
                while b"\r\n\r\n" in buf:
                    _, buf = buf.split(b"\r\n\r\n", 1)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    def accept():
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


def guesses(args):
    d = tempfile.mkdtemp(prefix="bounded-")
    pki(d)
    line = subprocess.run(["htpasswd", "-nbB", "-C", "10", "Cuser", PASSWORD],
                          capture_output=True, check=True, text=True).stdout.strip()
    with open(os.path.join(d, "htpasswd"), "w") as f:
        f.write(line + "\n")
    up = free_port()
    http_upstream(up)
    proc, port, admin = start(args.bin, d, {"upstream": up}, {})
    try:
        plain = ctx(d, cert=False)
        wrong = (f"GET /x HTTP/1.1\r\nHost: x\r\nAuthorization: {basic('Cuser', 'guess')}\r\n\r\n").encode()
        socks = []
        for _ in range(args.guesses):
            s = plain.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
            s.settimeout(300)
            socks.append(s)
        cpu0 = cpu_seconds(proc.pid)
        statuses, go, done = [], threading.Barrier(args.guesses + 1), threading.Event()
        lock = threading.Lock()

        def guess(s):
            go.wait()
            code = request(s, wrong)
            with lock:
                statuses.append(code)

        probe_lat, peak_threads = [], [0]

        def probe():
            mtls = ctx(d)
            while not done.is_set():
                t = time.perf_counter()
                try:
                    with mtls.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=60),
                                          server_hostname="localhost") as s:
                        code = request(s, b"GET /probe HTTP/1.1\r\nHost: x\r\n\r\n")
                except OSError:
                    code = 0
                probe_lat.append((time.perf_counter() - t, code))
                peak_threads[0] = max(peak_threads[0], threads(proc.pid))
                time.sleep(0.1)

        workers = [threading.Thread(target=guess, args=(s,)) for s in socks]
        for w in workers:
            w.start()
        prober = threading.Thread(target=probe)
        prober.start()
        t0 = time.time()
        go.wait()
        for w in workers:
            w.join()
        attack_s = time.time() - t0
        with plain.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost") as s:
            right = request(s, f"GET /x HTTP/1.1\r\nHost: x\r\nAuthorization: {basic('Cuser', PASSWORD)}\r\n\r\n".encode())
        done.set()
        prober.join()
        time.sleep(0.5)
        cpu = cpu_seconds(proc.pid) - cpu0
        counts = {c: statuses.count(c) for c in sorted(set(statuses))}
        lat = sorted(l for l, _ in probe_lat)
        print(f"binary {args.bin}")
        print(f"{args.guesses} concurrent wrong guesses: statuses {counts}, all answered in {attack_s:.1f} s")
        print(f"right password afterwards: {right}")
        checks = metric(admin, 'm2m_auth_proxy_verifications_total{queue="password"}')
        print(f"password checks run (verifications_total): {checks}")
        print(f"proxy CPU during the attack: {cpu:.2f} s (utime+stime); peak threads {peak_threads[0]}")
        if lat:
            print(f"mTLS probe (new connection + request, every 100 ms, {len(lat)} probes): "
                  f"p50 {statistics.median(lat) * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms, "
                  f"failed {sum(1 for _, c in probe_lat if c != 200)}")
        for s in socks:
            s.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def ws_upstream(port, reads=True):
    """Accepts oneM2M WebSocket upgrades and reads (and drops) whatever comes; with
    `reads=False` it never reads after the 101 (a stuck CSE)."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(4096)

    def serve(conn):
        with conn:
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            key = [l.split(b":", 1)[1].strip() for l in buf.split(b"\r\n")
                   if l.lower().startswith(b"sec-websocket-key:")][0]
            accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\nSec-WebSocket-Protocol: oneM2M.json\r\n\r\n")
            if not reads:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                time.sleep(3600)
            while conn.recv(65536):
                pass

    def accept():
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


def ws(args):
    d = tempfile.mkdtemp(prefix="bounded-")
    pki(d)
    with open(os.path.join(d, "htpasswd"), "w") as f:
        f.write("Cuser:{SHA}" + base64.b64encode(hashlib.sha1(b"x").digest()).decode() + "\n")
    up = free_port()
    ws_upstream(up)
    env = dict(e.split("=", 1) for e in args.env)
    extra = {"upstream": up, "yaml": "".join(f"{y}\n" for y in args.yaml)}
    proc, port, admin = start(args.bin, d, extra, env)
    try:
        mtls = ctx(d)
        time.sleep(1)
        idle = rss_kib(proc.pid)
        payload_len = args.size
        # frame header for a masked text frame of payload_len bytes
        head = bytes([0x81, 0x80 | 127]) + payload_len.to_bytes(8, "big") + b"\x01\x02\x03\x04"
        body = bytes([b ^ (1, 2, 3, 4)[i % 4] for i, b in enumerate(b'{"op":2,"to":"/x","fr":"Cae-bench","rqi":"1","rvi":"3","pc":"')])
        filler = bytes(payload_len - len(body) - 1)  # all but the last byte
        upgrade = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                   b"Sec-WebSocket-Protocol: oneM2M.json\r\n\r\n")
        peak, stop = [idle], threading.Event()

        def watch():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_kib(proc.pid))
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        socks, lock, closed_by_proxy, failed = [], threading.Lock(), [0], [0]

        def one():
            try:
                s = mtls.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=120),
                                     server_hostname="localhost")
                if request(s, upgrade) != 101:
                    failed[0] += 1
                    return
                s.sendall(head + body + filler)
                with lock:
                    socks.append(s)
            except OSError:
                with lock:
                    failed[0] += 1

        t0 = time.time()
        workers = [threading.Thread(target=one) for _ in range(args.conns)]
        for i, w in enumerate(workers):
            w.start()
            if i % 50 == 49:
                time.sleep(0.05)  # stay under limits.header_timeout for the handshakes
        for w in workers:
            w.join()
        sent_s = time.time() - t0
        time.sleep(args.hold)
        held = rss_kib(proc.pid)
        buffered = metric(admin, "m2m_auth_proxy_buffered_bytes")
        refused = metric(admin, 'm2m_auth_proxy_websocket_closed_by_proxy_total{code="1013"}')
        for s in socks:
            try:
                s.setblocking(False)
                data = s.recv(65536)
                if data[:1] == b"\x88":
                    closed_by_proxy[0] += 1
            except (OSError, ssl.SSLError):
                pass
            s.close()
        closed_at = time.time()
        after = {}
        for mark in (1, 10, 30):
            time.sleep(max(0, closed_at + mark - time.time()))
            after[mark] = rss_kib(proc.pid)
        stop.set()
        watcher.join()
        mib = lambda k: f"{k / 1024:.0f} MiB"
        print(f"binary {args.bin} env {env} yaml {args.yaml}")
        print(f"{args.conns} WebSockets x {payload_len - 1} bytes of a {payload_len}-byte frame, sent in {sent_s:.1f} s; "
              f"{len(socks)} connected, {failed[0]} failed before or during the send")
        print(f"RSS idle {mib(idle)}, peak {mib(peak[0])}, held {args.hold} s {mib(held)} "
              f"(buffered_bytes {buffered}, closed 1013: {refused})")
        print("RSS after close: " + ", ".join(f"{k} s {mib(v)}" for k, v in after.items()))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def ws_stall(args):
    """--conns clients each send --messages complete messages of --size bytes to a CSE that
    does not read, then abort after --hold s: peak RSS, and how long the proxy keeps their
    connections (m2m_auth_proxy_open_connections back to 0)."""
    d = tempfile.mkdtemp(prefix="bounded-")
    pki(d)
    with open(os.path.join(d, "htpasswd"), "w") as f:
        f.write("Cuser:{SHA}" + base64.b64encode(hashlib.sha1(b"x").digest()).decode() + "\n")
    up = free_port()
    ws_upstream(up, reads=False)
    extra = {"upstream": up, "yaml": "".join(f"{y}\n" for y in args.yaml)}
    proc, port, admin = start(args.bin, d, extra, {})
    try:
        mtls = ctx(d)
        idle = rss_kib(proc.pid)
        n = args.size
        prefix = b'{"op":2,"to":"/x","fr":"Cae-bench","rqi":"1","rvi":"3","pc":"'
        payload = prefix + b"x" * (n - len(prefix) - 2) + b'"}'
        frame = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big") + b"\0\0\0\0" + payload
        upgrade = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                   b"Sec-WebSocket-Protocol: oneM2M.json\r\n\r\n")
        peak, stop, socks, lock = [idle], threading.Event(), [], threading.Lock()

        def watch():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_kib(proc.pid))
                time.sleep(0.05)

        def one():
            try:
                s = mtls.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                                     server_hostname="localhost")
                with lock:
                    socks.append(s)
                if request(s, upgrade) != 101:
                    return
                for _ in range(args.messages):
                    s.sendall(frame)
            except OSError:
                pass

        watcher = threading.Thread(target=watch)
        watcher.start()
        workers = [threading.Thread(target=one) for _ in range(args.conns)]
        for w in workers:
            w.start()
        time.sleep(args.hold)
        held = rss_kib(proc.pid)
        opened = metric(admin, "m2m_auth_proxy_open_connections")
        for s in socks:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                s.close()  # abort: RST
            except OSError:
                pass
        aborted = time.time()
        gone = None
        while time.time() - aborted < args.wait:
            if (metric(admin, "m2m_auth_proxy_open_connections") or 0) == 0:
                gone = time.time() - aborted
                break
            time.sleep(0.5)
        after = rss_kib(proc.pid)
        stop.set()
        watcher.join()
        mib = lambda k: f"{k / 1024:.0f} MiB"
        print(f"binary {args.bin} yaml {args.yaml}")
        print(f"{args.conns} clients x {args.messages} messages of {n} bytes to a CSE that does not read; "
              f"RSS idle {mib(idle)}, peak {mib(peak[0])}, after {args.hold} s {mib(held)} ({opened} connections open)")
        print(f"clients aborted: connections gone after "
              f"{'%.1f s' % gone if gone is not None else f'more than {args.wait} s'}; RSS then {mib(after)}")
        for w in workers:
            w.join(timeout=1)
    finally:
        proc.kill()
        proc.wait(timeout=30)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("guesses")
    g.add_argument("--bin", required=True)
    g.add_argument("--guesses", type=int, default=500)
    w = sub.add_parser("ws")
    w.add_argument("--bin", required=True)
    w.add_argument("--conns", type=int, default=1000)
    w.add_argument("--size", type=int, default=1024 * 1024)
    w.add_argument("--hold", type=float, default=5)
    w.add_argument("--env", action="append", default=[])
    w.add_argument("--yaml", action="append", default=[], help="extra top-level config line")
    st = sub.add_parser("ws-stall")
    st.add_argument("--bin", required=True)
    st.add_argument("--conns", type=int, default=100)
    st.add_argument("--messages", type=int, default=3)
    st.add_argument("--size", type=int, default=1024 * 1024)
    st.add_argument("--hold", type=float, default=10)
    st.add_argument("--wait", type=float, default=180)
    st.add_argument("--yaml", action="append", default=[], help="extra top-level config line")
    args = p.parse_args()
    {"guesses": guesses, "ws": ws, "ws-stall": ws_stall}[args.cmd](args)


if __name__ == "__main__":
    main()
