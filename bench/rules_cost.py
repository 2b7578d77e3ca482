#!/usr/bin/env python3
"""What the authorization rules cost per request (issue 14), end to end.

One proxy on 127.0.0.1 (mTLS, keep-alive, `threads: 1`, access log off) in front of the small
upstream of bench/egress_latency.py, started three times in the same run: without rules, with
the three example rules of README/proxy.yaml.example, and with 100 rules that the request
matches none of (the worst case: every rule is evaluated, then the default decides). Prints
p50/p99 and the proxy's CPU per request (utime+stime from /proc) for each.

    bench/rules_cost.py [--bin target/release/m2m-auth-proxy] [--requests 5000]
"""

import argparse
import http.client
import os
import ssl
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from egress_latency import ROOT, cpu_seconds, free_port, pki, run, upstream, wait_ready  # noqa: E402

EXAMPLE = """authorization:
  default: allow
  rules:
    - name: operators-only-admin
      originators: ["^CAdmin$"]
      unless_roles: [sysop]
      effect: deny
    - name: only-cses-register-cses
      operations: [create]
      resource_types: [remoteCSE]
      unless_roles: [cse]
      effect: deny
    - name: no-cse-base-delete
      operations: [delete]
      targets: ["/cse-in", "/~/id-in/cse-in"]
      effect: deny
"""


def hundred():
    rules = ["authorization:\n  default: allow\n  rules:\n"]
    for i in range(30):
        rules.append(f'    - name: orig-{i}\n      originators: ["^Cgw-{i}-[a-z]+$"]\n      effect: deny\n')
    for i in range(30):
        rules.append(f'    - name: tgt-{i}\n      targets: ["/cse-in/area-{i}/**"]\n      effect: deny\n')
    for i in range(20):
        rules.append(f'    - name: who-{i}\n      identities: ["Cae-other-{i}"]\n      roles: [r{i}]\n      effect: deny\n')
    for i in range(20):
        rules.append(f"    - name: op-{i}\n      operations: [create]\n      resource_types: [{i + 1}]\n      effect: deny\n")
    return "".join(rules)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/m2m-auth-proxy"))
    ap.add_argument("--requests", type=int, default=5000)
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="rules-bench-")
    pki(d)
    up_port = free_port()
    srv = upstream(up_port, b'{"m2m:cin":{"con":"21.5"}}', "application/json")
    ctx = ssl.create_default_context(cafile=f"{d}/ca.pem")
    ctx.load_cert_chain(f"{d}/dev.pem", f"{d}/dev.key")
    rows = []
    try:
        for name, rules in (("no rules", ""), ("3 example rules", EXAMPLE), ("100 rules, none matches", hundred())):
            port, admin = free_port(), free_port()
            path = os.path.join(d, "p.yaml")
            with open(path, "w") as f:
                f.write(f'listen: "127.0.0.1:{port}"\nthreads: 1\nadmin: "127.0.0.1:{admin}"\n'
                        f'upstream: "http://127.0.0.1:{up_port}"\n'
                        f"tls:\n  cert: {d}/server.pem\n  key: {d}/server.key\n  client_ca: {d}/ca.pem\n"
                        f"auth:\n  methods: [mtls]\n  mtls:\n    identity: [uri]\nlog:\n  access: false\nshutdown:\n  grace_period: 1s\n{rules}")
            log = os.path.join(d, "p.log")
            proc = subprocess.Popen([args.bin, "--config", path], stdout=subprocess.DEVNULL,
                                    stderr=open(log, "w"))
            try:
                wait_ready(admin, proc, log)
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
                headers = {"X-M2M-RI": "b1"}
                run(conn, max(200, args.requests // 10), headers)
                before = cpu_seconds(proc.pid)
                lat = run(conn, args.requests, headers)
                cpu = (cpu_seconds(proc.pid) - before) / args.requests * 1e6
                lat.sort()
                rows.append((name, statistics.median(lat) * 1e6, lat[int(len(lat) * 0.99) - 1] * 1e6, cpu))
            finally:
                proc.terminate()
                proc.wait(timeout=10)
        print(f"rules cost, {args.requests} sequential keep-alive mTLS requests (GET /cse-in), binary {args.bin}")
        print("| rule set | p50 µs | p99 µs | proxy CPU µs/req |")
        print("|---|---|---|---|")
        for name, p50, p99, cpu in rows:
            print(f"| {name} | {p50:.0f} | {p99:.0f} | {cpu:.1f} |")
    finally:
        srv.close()


if __name__ == "__main__":
    main()
