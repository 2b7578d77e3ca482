#!/usr/bin/env python3
"""Proxy CPU per keep-alive mTLS request of two binaries (or two configs) in the same run,
or their instructions per request under callgrind: the evidence behind BENCHMARKS.md's issue-13
sections ("why 43 % fewer instructions give 21 % less CPU").

The small keep-alive upstream, the openssl-CLI PKI and the sequential http.client requests of
bench/egress_latency.py. Three paths, measured in interleaved rounds (the box may be noisy):

  direct  client -> upstream                    (plain HTTP, no proxy)
  old     client -(mTLS)-> --old binary, config + --old-extra
  new     client -(mTLS)-> --new binary, config + --new-extra

(mtls, overwrite, threads 1, no access log.) Each round opens a new keep-alive connection per
path, warms it up, then sends --requests sequential GETs. Prints p50/p99 and the proxy's CPU
per request (utime+stime from /proc) per path and round, and the median over rounds.

    bench/request_paths.py [--old BIN] [--new BIN] [--requests 20000] [--rounds 3]

--callgrind N: instead, run each under valgrind --tool=callgrind, send 200 warm-up requests and
N measured ones (callgrind_control -z / -d around them), and print instructions per request
(Ir of the whole process over the measured requests). Inspect a dump with
`callgrind_annotate --inclusive=yes --auto=no <dump>`.
--path NAME=LINES (repeatable, with --callgrind): measure these configs of --new instead of old
and new, one after the other in this order; `{sink}` in LINES is the URL of an OTLP/HTTP sink
started here (answers every POST 200, counts the bytes), for `tracing:` (BENCHMARKS.md, issue 23;
`{sink}` works in --old-extra/--new-extra of the CPU rows too):

    bench/request_paths.py --callgrind 2000 --path absent= \
        --path off=$'tracing:\n  enabled: false\n  endpoint: "{sink}"\n' \
        --path on=$'tracing:\n  endpoint: "{sink}"\n  sampler_ratio: 1.0\n'
The CPU split at 32 connections (user vs kernel, with HAProxy) is bench/cpu_split.sh.
"""

import argparse
import glob
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
from egress_latency import (REQUEST, ROOT, cpu_seconds, free_port, pki, read_request, run,  # noqa: E402
                            upstream, wait_ready)

LAST_HEAD = [b""]


# config lines per side (--old-extra, --new-extra)
EXTRA = {}


def config(d, port, admin, up_port, name=""):
    return (f'listen: "127.0.0.1:{port}"\nthreads: 1\nadmin: "127.0.0.1:{admin}"\n'
            f'upstream: "http://127.0.0.1:{up_port}"\n'
            f"tls:\n  cert: {d}/server.pem\n  key: {d}/server.key\n  client_ca: {d}/ca.pem\n"
            f"auth:\n  methods: [mtls]\n  mtls:\n    identity: [uri]\n"
            f"originator:\n  mode: overwrite\nlog:\n  access: false\nshutdown:\n  grace_period: 1s\n"
            + EXTRA.get(name, ""))


def wait_port(port, proc, log, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"process exited: {open(log).read()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"port {port} not ready")


def start(cmd, d, name, up_port, prefix=()):
    port, admin = free_port(), free_port()
    path = os.path.join(d, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(config(d, port, admin, up_port, name))
    log = os.path.join(d, f"{name}.log")
    proc = subprocess.Popen([*prefix, cmd, "--config", path], stdout=subprocess.DEVNULL,
                            stderr=open(log, "w"))
    return proc, port, admin, log


def check_origin(ctx, port):
    """One request with a forged X-M2M-Origin: the upstream must see only the certificate's."""
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
    c.request("GET", "/cse-in", headers={"X-M2M-RI": "o1", "X-M2M-Origin": "Cforged"})
    r = c.getresponse()
    r.read()
    c.close()
    origins = [line.split(b":", 1)[1].strip() for line in LAST_HEAD[0].split(b"\r\n")[1:]
               if line.lower().startswith(b"x-m2m-origin:")]
    if r.status != 200 or origins != [b"Cae-bench"]:
        sys.exit(f"port {port}: status {r.status}, upstream saw X-M2M-Origin {origins}")


def main():
    ap = argparse.ArgumentParser()
    target = os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR", "target"))
    binary = os.path.join(target, "release/m2m-auth-proxy")
    ap.add_argument("--old", default=binary)
    ap.add_argument("--new", default=binary)
    ap.add_argument("--old-extra", default="", help="config lines for old")
    ap.add_argument("--new-extra", default="", help="config lines for new")
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--callgrind", type=int, default=0)
    ap.add_argument("--path", action="append", default=[], help="NAME=config lines (callgrind)")
    ap.add_argument("--post", action="store_true", help="POST a oneM2M create instead of GET /cse-in")
    args = ap.parse_args()
    EXTRA.update(old=args.old_extra, new=args.new_extra)
    if not args.callgrind and "{sink}" in args.old_extra + args.new_extra:
        # an OTLP sink for `tracing:` in the CPU rows too (it lives until the process ends)
        sink_port = free_port()
        otlp_sink(sink_port, [0, 0])
        for name in ("old", "new"):
            EXTRA[name] = EXTRA[name].replace("{sink}", f"http://127.0.0.1:{sink_port}")
    d = tempfile.mkdtemp(prefix="request-paths-")
    pki(d)
    up_port = free_port()
    srv = upstream(up_port, b'{"m2m:cin":{"con":"21.5"}}', "application/json", LAST_HEAD)
    ctx = ssl.create_default_context(cafile=f"{d}/ca.pem")
    ctx.load_cert_chain(f"{d}/dev.pem", f"{d}/dev.key")
    headers = {"X-M2M-RI": "b1"}
    if args.post:
        REQUEST.update(method="POST", body=b'{"m2m:cin":{"con":"21.5"}}')
        headers["Content-Type"] = "application/json;ty=4"
    if args.callgrind:
        return callgrind(args, d, up_port, ctx, headers, srv)
    procs = {}
    try:
        procs["old"] = start(args.old, d, "old", up_port)
        procs["new"] = start(args.new, d, "new", up_port)
        for name in ("old", "new"):
            wait_ready(procs[name][2], procs[name][0], procs[name][3])
        for name in ("old", "new"):
            check_origin(ctx, procs[name][1])
        rows = {name: [] for name in ("direct", "old", "new")}
        warm = max(200, args.requests // 10)
        for rnd in range(args.rounds):
            for name in ("direct", "old", "new"):
                if name == "direct":
                    conn, pid = http.client.HTTPConnection("127.0.0.1", up_port), None
                else:
                    proc, port, _, _ = procs[name]
                    conn, pid = http.client.HTTPSConnection("127.0.0.1", port, context=ctx), proc.pid
                run(conn, warm, headers)
                before = cpu_seconds(pid) if pid else 0
                lat = run(conn, args.requests, headers)
                cpu = (cpu_seconds(pid) - before) / args.requests * 1e6 if pid else float("nan")
                conn.close()
                lat.sort()
                rows[name].append((statistics.median(lat) * 1e6, lat[int(len(lat) * 0.99) - 1] * 1e6, cpu))
                print(f"round {rnd + 1} {name}: p50 {rows[name][-1][0]:.0f} µs, p99 {rows[name][-1][1]:.0f} µs,"
                      f" CPU {cpu:.1f} µs/req", file=sys.stderr, flush=True)
        print(f"\nold ({args.old_extra.strip()}) vs new ({args.new_extra.strip()}), {args.requests} sequential keep-alive mTLS requests (GET /cse-in) "
              f"per path and round, {args.rounds} rounds interleaved")
        print("| path | round | p50 µs | p99 µs | proxy CPU µs/req |")
        print("|---|---|---|---|---|")
        for name, rs in rows.items():
            for i, (p50, p99, cpu) in enumerate(rs):
                print(f"| {name} | {i + 1} | {p50:.0f} | {p99:.0f} | {cpu:.1f} |")
            med = [statistics.median(x) for x in zip(*rs)]
            print(f"| {name} | median | {med[0]:.0f} | {med[1]:.0f} | {med[2]:.1f} |")
        p = statistics.median(r[2] for r in rows["old"])
        lcpu = statistics.median(r[2] for r in rows["new"])
        print(f"\nnew / old CPU per request (medians): {lcpu / p:.2f} ({(1 - lcpu / p) * 100:.0f} % less)")
    finally:
        for proc, *_ in procs.values():
            proc.terminate()
            proc.wait(timeout=10)
        srv.close()


def otlp_sink(port, received):
    """An OTLP/HTTP stand-in: reads each POST whole and answers 200 with an empty body."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(16)

    def serve(conn):
        with conn:
            request = read_request(conn)
            if request is None:
                return
            body = request[1]
            received[0] += 1
            received[1] += len(body)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    def accept():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return srv


def callgrind(args, d, up_port, ctx, headers, srv):
    out = {}
    runs = (("old", args.old), ("new", args.new))
    sink, received = None, [0, 0]
    if args.path:
        sink_port = free_port()
        sink = otlp_sink(sink_port, received)
        runs = []
        for spec in args.path:
            name, _, lines = spec.partition("=")
            EXTRA[name] = lines.replace("{sink}", f"http://127.0.0.1:{sink_port}")
            runs.append((name, args.new))
    try:
        for name, cmd in runs:
            cg = os.path.join(d, f"cg-{name}.out")
            proc, port, admin, log = start(cmd, d, name, up_port,
                                           prefix=("valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}",
                                                   "--dump-instr=no", "--collect-atstart=yes"))
            try:
                wait_port(port, proc, log, timeout=300)
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=60)
                run(conn, 200, headers)
                subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True)
                run(conn, args.callgrind, headers)
                subprocess.run(["callgrind_control", "-d", f"measured-{name}", str(proc.pid)], check=True,
                               capture_output=True)
                conn.close()
                time.sleep(0.5)
                dumps = [f for f in glob.glob(cg + "*") if "measured" in open(f, errors="replace").read(4096)]
                total = 0
                for f in dumps:
                    for line in open(f, errors="replace"):
                        if line.startswith("summary:") or line.startswith("totals:"):
                            total += int(line.split()[1])
                            break
                out[name] = (total / args.callgrind, dumps)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
        print(f"callgrind, {args.callgrind} sequential keep-alive mTLS requests after 200 warm-up")
        print("| path | instructions per request (Ir, whole process) |")
        print("|---|---|")
        for name, (ir, _) in out.items():
            print(f"| {name} | {ir:,.0f} |")
        for name, (_, dumps) in out.items():
            print(f"{name} dumps: {' '.join(dumps)}")
        if sink:
            print(f"OTLP sink: {received[0]} exports, {received[1]} bytes")
    finally:
        srv.close()
        if sink:
            sink.close()


if __name__ == "__main__":
    main()
