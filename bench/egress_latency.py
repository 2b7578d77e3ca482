#!/usr/bin/env python3
"""What an egress route costs per request (issue 12).

Two m2m-auth-proxy processes on 127.0.0.1, as two sidecars: A fronts "the IN-CSE" (a small
keep-alive HTTP/1.1 upstream in this script), B fronts "the MN" and has an egress route to A
with a client certificate (SAN URI /id-mn). Sequential requests over one keep-alive
connection, in three paths, in the same run:

  direct   client -> upstream                                  (plain HTTP)
  ingress  client -(mTLS)-> A -> upstream                      (what a device pays today)
  egress   client -> B egress -(mTLS, pooled)-> A -> upstream  (what the MN pays per Mcc request)

Prints p50/p99 latency per path, what each path adds to `direct`, and the CPU time of each
proxy process per request (utime+stime from /proc, so the client's and upstream's CPU are not
counted). Certificates are made with the openssl CLI in a temp dir. Stdlib only.

    bench/egress_latency.py [--bin target/release/m2m-auth-proxy] [--requests 5000] [--poa]

--poa: the upstream answers a CSEBase with a poa (JSON, application/json), so B rewrites every
response on the way back (and A's ingress inspects it): the cost of poa rewriting.
"""

import argparse
import http.client
import json
import os
import re
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def pki(d):
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key", cwd=d)
    openssl("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=bench CA", "-days", "2",
            "-out", "ca.pem", cwd=d)

    def leaf(name, san, eku):
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key", cwd=d)
        openssl("req", "-new", "-key", f"{name}.key", "-subj", f"/CN={name}", "-out", f"{name}.csr", cwd=d)
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(f"subjectAltName={san}\nextendedKeyUsage={eku}\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)

    leaf("server", "IP:127.0.0.1,DNS:localhost", "serverAuth")
    leaf("mn", "URI:/id-mn", "clientAuth")
    leaf("dev", "URI:Cae-bench", "clientAuth")


def read_request(conn, buf=b""):
    """One request from `conn`, `buf` being what was read of it already: (head, body, bytes
    after it), the body read to its Content-Length; None if the peer closes first."""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buf += chunk
    head, buf = buf.split(b"\r\n\r\n", 1)
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    need = int(m.group(1)) if m else 0
    while len(buf) < need:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buf += chunk
    return head, buf[:need], buf[need:]


def upstream(port, body, content_type, last_head=None):
    """A keep-alive HTTP/1.1 server answering every request with `body`; `last_head`, a
    one-element list, gets the head of the last request read."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(64)

    def serve(conn):
        buf = b""
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nX-M2M-RSC: 2000\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        with conn:
            while True:
                request = read_request(conn, buf)
                if request is None:
                    return
                seen, _, buf = request
                if last_head is not None:
                    last_head[0] = seen
                conn.sendall(head)

    def accept():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return srv


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def wait_ready(admin, proc, log):
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"proxy exited: {open(log).read()[-2000:]}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", admin, timeout=1)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit("proxy not ready")


# what `run` sends: GET /cse-in, or (bench/request_costs.py --post) a oneM2M create
REQUEST = {"method": "GET", "body": None}


def run(conn, n, headers):
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        conn.request(REQUEST["method"], "/cse-in", body=REQUEST["body"], headers=headers)
        r = conn.getresponse()
        r.read()
        lat.append(time.perf_counter() - t)
        if r.status != 200:
            sys.exit(f"status {r.status}")
    return lat


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/m2m-auth-proxy"))
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--poa", action="store_true")
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="egress-bench-")
    pki(d)
    up_port, a_port, a_admin, b_port, b_admin, b_egress = (free_port() for _ in range(6))
    if args.poa:
        body = json.dumps({"m2m:cb": {"rn": "cse-in", "csi": "/id-in", "poa": [f"https://127.0.0.1:{a_port}"],
                                      "srt": [1, 2, 3, 4, 5, 9, 14, 15, 16, 23, 28, 29, 30, 48]}}).encode()
    else:
        body = json.dumps({"m2m:cb": {"rn": "cse-in", "csi": "/id-in", "srt": [1, 2, 3, 4, 5]}}).encode()
    srv = upstream(up_port, body, "application/json")

    def config(listen, admin, egress):
        return (f'listen: "127.0.0.1:{listen}"\nthreads: 1\nadmin: "127.0.0.1:{admin}"\n'
                f'upstream: "http://127.0.0.1:{up_port}"\n'
                f"tls:\n  cert: {d}/server.pem\n  key: {d}/server.key\n  client_ca: {d}/ca.pem\n"
                f"auth:\n  methods: [mtls]\n  mtls:\n    identity: [uri]\n"
                f"originator:\n  mode: verify\n  cse_namespace: true\nlog:\n  access: false\n{egress}")

    route = (f'egress:\n  - name: registrar\n    listen: "127.0.0.1:{b_egress}"\n'
             f'    peer: "https://127.0.0.1:{a_port}"\n    tls:\n      ca: {d}/ca.pem\n'
             f"      cert: {d}/mn.pem\n      key: {d}/mn.key\n")
    procs = []
    for name, text in (("a", config(a_port, a_admin, "")), ("b", config(b_port, b_admin, route))):
        path = os.path.join(d, f"{name}.yaml")
        with open(path, "w") as f:
            f.write(text)
        log = os.path.join(d, f"{name}.log")
        procs.append((subprocess.Popen([args.bin, "--config", path], stdout=subprocess.DEVNULL,
                                       stderr=open(log, "w")), log))
    try:
        for (proc, log), admin in zip(procs, (a_admin, b_admin)):
            wait_ready(admin, proc, log)
        ctx = ssl.create_default_context(cafile=f"{d}/ca.pem")
        ctx.load_cert_chain(f"{d}/dev.pem", f"{d}/dev.key")
        paths = {
            "direct": (http.client.HTTPConnection("127.0.0.1", up_port), {}),
            "ingress": (http.client.HTTPSConnection("127.0.0.1", a_port, context=ctx), {}),
            "egress": (http.client.HTTPConnection("127.0.0.1", b_egress), {"X-M2M-Origin": "/id-mn"}),
        }
        warm = max(200, args.requests // 10)
        rows = {}
        for name, (conn, headers) in paths.items():
            run(conn, warm, headers)
            before = [cpu_seconds(p.pid) for p, _ in procs]
            lat = run(conn, args.requests, headers)
            after = [cpu_seconds(p.pid) for p, _ in procs]
            cpu = [(a - b) / args.requests * 1e6 for a, b in zip(after, before)]
            lat.sort()
            rows[name] = (statistics.median(lat) * 1e6, lat[int(len(lat) * 0.99) - 1] * 1e6, cpu)
        base = rows["direct"][0]
        print(f"egress latency, {args.requests} sequential keep-alive requests per path"
              f"{' (poa rewritten in every response)' if args.poa else ''}, binary {args.bin}")
        print("| path | p50 µs | p99 µs | added p50 µs | proxy A CPU µs/req | proxy B CPU µs/req |")
        print("|---|---|---|---|---|---|")
        for name, (p50, p99, cpu) in rows.items():
            print(f"| {name} | {p50:.0f} | {p99:.0f} | {p50 - base:.0f} | {cpu[0]:.0f} | {cpu[1]:.0f} |")
    finally:
        for p, _ in procs:
            p.terminate()
        for p, _ in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        srv.close()


if __name__ == "__main__":
    main()
