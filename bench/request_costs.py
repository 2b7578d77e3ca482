#!/usr/bin/env python3
"""Load-independent costs of the one request path (issue 20.5), for a shared machine where CPU
time means nothing: per keep-alive mTLS request, the system calls (`strace -f -c` attached over N
requests, counts / N) and the context switches (voluntary + involuntary over every thread of the
process, from /proc/PID/task/*/status, before and after N requests); memory (VmRSS): idle after
one request, with HELD idle keep-alive mTLS connections (each did one request), and around the
burst of bench/memory.sh (300 silent TCP + 300 slow-loris mTLS connections, held 15 s; the
highest while open, then BURST_AFTER s after they are gone).

  bench/request_costs.py --bin target/release/m2m-auth-proxy [--haproxy] [--only calls,memory,burst]
                         [--post]

`--post`: the calls rows send a oneM2M create (`POST /cse-in`, 26-byte JSON body) instead of a GET.

`--haproxy`: the same calls and switches rows for HAProxy (bench/conf/haproxy-mtls.cfg, 1 thread)
in front of the same upstream. Instructions per request: bench/request_paths.py --callgrind.
Everything on 127.0.0.1; the upstream is the small Python keep-alive server of egress_latency.py.
"""

import argparse
import glob
import http.client
import os
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from egress_latency import REQUEST, ROOT, free_port, pki, run, upstream  # noqa: E402
from request_paths import LAST_HEAD, check_origin, config, wait_port  # noqa: E402

BENCH = os.path.dirname(os.path.abspath(__file__))
HEADERS = {"X-M2M-RI": "b1"}


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def switches(pid):
    vol = invol = 0
    for st in glob.glob(f"/proc/{pid}/task/*/status"):
        try:
            text = open(st).read()
        except OSError:
            continue
        vol += int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", text, re.M).group(1))
        invol += int(re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", text, re.M).group(1))
    return vol, invol


def start_ours(binary, d, up_port, extra=""):
    port, admin = free_port(), free_port()
    path = os.path.join(d, f"ours-{port}.yaml")
    with open(path, "w") as f:
        f.write(config(d, port, admin, up_port) + extra)
    log = os.path.join(d, f"ours-{port}.log")
    proc = subprocess.Popen([binary, "--config", path], stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    wait_port(port, proc, log)
    return proc, port


def start_haproxy(d, up_port):
    port = free_port()
    with open(f"{d}/server-haproxy.pem", "w") as f:
        f.write(open(f"{d}/server.pem").read() + open(f"{d}/server.key").read())
    tpl = open(os.path.join(BENCH, "conf/haproxy-mtls.cfg")).read()
    cfg = (tpl.replace("@NBTHREAD@", "1").replace("@CONF@", os.path.join(BENCH, "conf"))
           .replace("@PORT@", str(port)).replace("@UPORT@", str(up_port))
           .replace("@PKI@/server.pem", f"{d}/server-haproxy.pem").replace("@PKI@/ca.crt", f"{d}/ca.pem"))
    path = os.path.join(d, "haproxy.cfg")
    open(path, "w").write(cfg)
    log = os.path.join(d, "haproxy.log")
    proc = subprocess.Popen(["haproxy", "-db", "-f", path], stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    wait_port(port, proc, log)
    return proc, port


def stop(proc):
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def calls_row(name, proc, port, ctx, n, d):
    """Syscalls and context switches per keep-alive request."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=60)
    run(conn, 300, HEADERS)
    v0, i0 = switches(proc.pid)
    run(conn, n, HEADERS)
    v1, i1 = switches(proc.pid)
    out = os.path.join(d, f"strace-{name}.txt")
    tracer = subprocess.Popen(["strace", "-f", "-c", "-o", out, "-p", str(proc.pid)],
                              stderr=subprocess.DEVNULL)
    time.sleep(2)  # attached to every thread
    run(conn, n, HEADERS)
    tracer.send_signal(signal.SIGINT)
    tracer.wait(timeout=30)
    conn.close()
    calls = {}
    for line in open(out):
        parts = line.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and not line.startswith("100.00"):
            name_ = parts[-1]
            calls[name_] = int(parts[3])
    total = sum(calls.values())
    top = sorted(calls.items(), key=lambda kv: -kv[1])
    detail = ", ".join(f"{k} {v / n:.2f}" for k, v in top if v / n >= 0.05)
    print(f"| {name} | {total / n:.2f} | {detail} | {(v1 - v0) / n:.2f} | {(i1 - i0) / n:.2f} |", flush=True)


def memory_rows(binary, d, up_port, ctx, held):
    proc, port = start_ours(binary, d, up_port, "limits:\n  idle_timeout: 300s\n  max_connections: 20000\n")
    try:
        time.sleep(1)
        idle0 = rss_kb(proc.pid)
        check_origin(ctx, port)
        time.sleep(1)
        idle1 = rss_kb(proc.pid)
        cl = subprocess.Popen([sys.executable, os.path.join(BENCH, "tlsclient.py"), "hold", "--port", str(port),
                               "-n", str(held), "--rate", "400", "--hold", "300", "--path", "/cse-in",
                               "--cacert", f"{d}/ca.pem", "--cert", f"{d}/dev.pem", "--key", f"{d}/dev.key",
                               "--expect-origin", ""], stdout=subprocess.PIPE, text=True)
        ready = cl.stdout.readline().strip()
        time.sleep(3)
        rh = rss_kb(proc.pid)
        cl.send_signal(signal.SIGTERM)
        cl.communicate(timeout=60)
        time.sleep(3)
        rc = rss_kb(proc.pid)
        print(f"| idle after start | {idle0 / 1024:.1f} MiB |\n| idle after one request | {idle1 / 1024:.1f} MiB |\n"
              f"| {held} idle connections held ({ready}) | {rh / 1024:.1f} MiB: "
              f"{(rh - idle1) / held:.1f} KiB per connection |\n| 3 s after they closed | {rc / 1024:.1f} MiB |",
              flush=True)
    finally:
        stop(proc)


def burst_row(binary, d, up_port, ctx, after):
    proc, port = start_ours(binary, d, up_port)
    try:
        time.sleep(1)
        check_origin(ctx, port)
        time.sleep(1)
        idle1 = rss_kb(proc.pid)
        cl = subprocess.Popen([sys.executable, os.path.join(BENCH, "tlsclient.py"), "burst", "--port", str(port),
                               "--silent", "300", "--slow", "300", "--hold", "15", "--path", "/cse-in",
                               "--cacert", f"{d}/ca.pem", "--cert", f"{d}/dev.pem", "--key", f"{d}/dev.key"],
                              stdout=subprocess.PIPE, text=True)
        peak = idle1
        while cl.poll() is None:
            peak = max(peak, rss_kb(proc.pid))
            time.sleep(0.5)
        lines = cl.stdout.read().strip().replace("\n", "; ")
        samples = []
        for _ in range(after):
            time.sleep(1)
            samples.append(rss_kb(proc.pid))
        print(f"| burst ({lines}) | idle {idle1 / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, "
              f"1 s after {samples[0] / 1024:.1f}, 10 s after {samples[min(9, after - 1)] / 1024:.1f}, "
              f"{after} s after {samples[-1] / 1024:.1f} MiB |", flush=True)
    finally:
        stop(proc)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR", "target"),
                                                  "release/m2m-auth-proxy"))
    ap.add_argument("--haproxy", action="store_true")
    ap.add_argument("--only", default="calls,memory,burst")
    ap.add_argument("-n", type=int, default=2000, help="requests per calls row")
    ap.add_argument("--held", type=int, default=1000)
    ap.add_argument("--after", type=int, default=30)
    ap.add_argument("--post", action="store_true", help="calls rows: POST a oneM2M create")
    a = ap.parse_args()
    if a.post:
        REQUEST.update(method="POST", body=b'{"m2m:cin":{"con":"21.5"}}')
        HEADERS["Content-Type"] = "application/json;ty=4"

    only = a.only.split(",")
    d = tempfile.mkdtemp(prefix="request-costs-")
    pki(d)
    up_port = free_port()
    srv = upstream(up_port, b'{"m2m:cin":{"con":"21.5"}}', "application/json", LAST_HEAD)
    ctx = ssl.create_default_context(cafile=f"{d}/ca.pem")
    ctx.load_cert_chain(f"{d}/dev.pem", f"{d}/dev.key")
    try:
        if "calls" in only:
            print(f"\n{a.n} sequential keep-alive mTLS requests ({REQUEST['method']} /cse-in), one connection")
            print("| proxy | syscalls/req | of which (≥ 0.05/req) | voluntary switches/req | involuntary/req |")
            print("|---|---|---|---|---|")
            rows = [("ours", lambda: start_ours(a.bin, d, up_port))]
            if a.haproxy:
                rows.append(("haproxy", lambda: start_haproxy(d, up_port)))
            for name, starter in rows:
                proc, port = starter()
                try:
                    if name == "ours":
                        check_origin(ctx, port)
                    calls_row(name, proc, port, ctx, a.n, d)
                finally:
                    stop(proc)
        if "memory" in only or "burst" in only:
            print(f"\nmemory of {a.bin} (VmRSS, threads: 1)")
            print("| state | RSS |")
            print("|---|---|")
        if "memory" in only:
            memory_rows(a.bin, d, up_port, ctx, a.held)
        if "burst" in only:
            burst_row(a.bin, d, up_port, ctx, a.after)
    finally:
        srv.close()


if __name__ == "__main__":
    main()
