#!/usr/bin/env python3
"""Rewrites every credential, certificate and rule file of the soak's proxies on a schedule and
probes that each new version is the one in force (bench/soak.sh; standard library only).

    soak_rotate.py --work DIR --proxy NAME:ADDR:ADMIN:CSE_NAME:ROUTE ... --until T [--every 2]

Every --every seconds one (proxy, kind) pair, in turn, is flipped between its base and its
alternative version; the step waits for m2m_auth_proxy_reloads_total{file=KIND,
result="success"} to count the reload (10 s at most), then probes:

| kind | alternative version | probe (fresh TLS connection) |
|---|---|---|
| htpasswd | + user Csoak-revoked | its Basic credentials admitted / refused 401 |
| tokens | + token of Csoak-revtok | its Bearer token admitted / refused 401 |
| jwks | + key kx | a JWT signed with kx admitted / refused 401 |
| client_ca | + CA 2 | a client certificate of CA 2 admitted / refused in the handshake or 401 |
| config | + rule soak-toggle | GET <cse>/toggle/probe refused 403 by soak-toggle / forwarded |
| server_cert | the other of two certificates and keys (`..data` symlink swap) | the handshake serves it |
| egress_client_cert | the other of two client certificates (`..data` swap) | /metrics notAfter of `egress_client:ROUTE` is its notAfter |
| egress_ca | + CA 2 | /metrics has 2 (else 1) `egress_ca:ROUTE` certificates |

Files: DIR/<NAME>/variants/<kind>.base and .extra (whole files), DIR/<NAME>/tls/..v1, ..v2 and
DIR/<NAME>/egress/id/..v1, ..v2 (directories the `..data` symlink points at); live files as
bench/soak.sh lays them out. "Admitted" is 200, or 502/504 while an upstream restarts.
One line per step to DIR/probe.log: `time proxy kind present outcome detail`, outcome one of
correct, wrong_allow, wrong_refusal, mismatch (certificate not the one written),
reload_timeout, reload_failed, probe_error.
"""

import argparse
import base64
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request

from soak_client import Client, tls_context

KINDS = ["htpasswd", "tokens", "jwks", "client_ca", "config", "server_cert",
         "egress_client_cert", "egress_ca"]
LIVE = {  # kind -> live file under DIR/<NAME>/
    "htpasswd": "creds/htpasswd",
    "tokens": "creds/tokens.yaml",
    "jwks": "creds/jwks.json",
    "client_ca": "creds/client_ca.pem",
    "config": "proxy.yaml",
    "egress_ca": "egress/ca.pem",
}
SWAPPED = {"server_cert": ("tls", "server.pem"), "egress_client_cert": ("egress/id", "client.pem")}


def metrics(admin):
    return urllib.request.urlopen(f"http://{admin}/metrics", timeout=5).read().decode()


def reload_counts(text, kind):
    ok = bad = 0.0
    for line in text.splitlines():
        if line.startswith("m2m_auth_proxy_reloads_total{") and f'file="{kind}"' in line:
            value = float(line.rsplit(" ", 1)[1])
            if 'result="success"' in line:
                ok = value
            else:
                bad = value
    return ok, bad


def cert_series(text, kind):
    """Values of m2m_auth_proxy_certificate_not_after_timestamp_seconds{kind=KIND}."""
    out = []
    for line in text.splitlines():
        if (line.startswith("m2m_auth_proxy_certificate_not_after_timestamp_seconds{")
                and f'kind="{kind}"' in line):
            out.append(float(line.rsplit(" ", 1)[1]))
    return out


def not_after(pem_path):
    out = subprocess.run(["openssl", "x509", "-in", pem_path, "-noout", "-enddate"],
                         capture_output=True, text=True, check=True).stdout
    return ssl.cert_time_to_seconds(out.strip().split("=", 1)[1])


def write_atomic(path, text):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def swap(directory, version):
    tmp = os.path.join(directory, "..data.tmp")
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    os.symlink(version, tmp)
    os.replace(tmp, os.path.join(directory, "..data"))


class Proxy:
    """NAME:HOST:PORT:HOST:PORT:CSE_NAME:ROUTE (name, public address, admin address, ...)."""

    def __init__(self, work, spec):
        parts = spec.split(":")
        self.name, self.addr, self.admin = parts[0], f"{parts[1]}:{parts[2]}", f"{parts[3]}:{parts[4]}"
        self.cse, self.route = parts[5], parts[6]
        self.dir = os.path.join(work, self.name)
        self.present = {k: False for k in KINDS}


def admitted(status):
    return status in (200, 502, 504)


class Prober:
    def __init__(self, work):
        self.work = work
        w = lambda f: os.path.join(work, f)  # noqa: E731
        self.ca = w("ca.pem")
        self.plain = tls_context(self.ca)
        self.probe_cert = tls_context(self.ca, w("probe.pem"), w("probe.key"))
        self.ca2_cert = tls_context(self.ca, w("ca2-client.pem"), w("ca2-client.key"))
        self.basic = "Basic " + base64.b64encode(b"Csoak-revoked:pw-revoked").decode()
        self.token = "Bearer " + open(w("token.extra")).read().strip()
        self.jwt = "Bearer " + open(w("jwt.extra")).read().strip()

    def get(self, p, ctx, path, auth=None):
        client = Client(p.addr, ctx, timeout=5)
        headers = {"X-M2M-RI": "probe"}
        if auth:
            headers["Authorization"] = auth
        try:
            status, _, body, _ = client.request("GET", path, headers)
            return status, body.decode("utf-8", "replace")
        finally:
            client.close()

    def probe(self, p, kind, present, text):
        """(outcome, detail)"""
        app = f"/{p.cse}/app/probe"
        if kind in ("htpasswd", "tokens", "jwks"):
            auth = {"htpasswd": self.basic, "tokens": self.token, "jwks": self.jwt}[kind]
            status, _ = self.get(p, self.plain, app, auth)
            return self.judge(present, admitted(status), status == 401, status)
        if kind == "client_ca":
            try:
                status, _ = self.get(p, self.ca2_cert, app)
            except ssl.SSLError as e:
                if "alert" not in str(e):
                    raise
                return self.judge(present, False, True, f"handshake: {e.reason}")
            return self.judge(present, admitted(status), status == 401, status)
        if kind == "config":
            status, body = self.get(p, self.probe_cert, f"/{p.cse}/toggle/probe")
            # present: the rule refuses; absent: the request is forwarded
            refused = status == 403 and "denied by rule soak-toggle" in body
            return self.judge(not present, admitted(status), refused, status)
        if kind == "server_cert":
            want = ssl.PEM_cert_to_DER_cert(open(self.variant_file(p, kind, present)).read())
            host, port = p.addr.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=5) as raw:
                with self.plain.wrap_socket(raw, server_hostname=host) as s:
                    got = s.getpeercert(binary_form=True)
            return ("correct", "") if got == want else ("mismatch", "served the other cert")
        if kind == "egress_client_cert":
            want = not_after(self.variant_file(p, kind, present))
            got = cert_series(text, f"egress_client:{p.route}")
            return ("correct", "") if got == [want] else ("mismatch", f"{got} != {want}")
        if kind == "egress_ca":
            got = len(cert_series(text, f"egress_ca:{p.route}"))
            want = 2 if present else 1
            return ("correct", "") if got == want else ("mismatch", f"{got} CA(s), {want} written")
        raise ValueError(kind)

    @staticmethod
    def judge(should_admit, was_admitted, was_refused, detail):
        if should_admit:
            return ("correct" if was_admitted else
                    "wrong_refusal" if was_refused else "probe_error"), str(detail)
        return ("correct" if was_refused else
                "wrong_allow" if was_admitted else "probe_error"), str(detail)

    def variant_file(self, p, kind, present):
        d, f = SWAPPED[kind]
        return os.path.join(p.dir, d, "..v2" if present else "..v1", f)


def write(p, kind, present):
    if kind in SWAPPED:
        swap(os.path.join(p.dir, SWAPPED[kind][0]), "..v2" if present else "..v1")
        return
    variant = os.path.join(p.dir, "variants", f"{kind}.{'extra' if present else 'base'}")
    write_atomic(os.path.join(p.dir, LIVE[kind]), open(variant).read())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--proxy", action="append", required=True)
    ap.add_argument("--until", type=float, required=True)
    ap.add_argument("--every", type=float, default=2.0)
    ap.add_argument("--reload-wait", type=float, default=10.0)
    a = ap.parse_args()
    proxies = [Proxy(a.work, s) for s in a.proxy]
    prober = Prober(a.work)
    out = open(os.path.join(a.work, "probe.log"), "a", buffering=1)
    steps = [(p, k) for k in KINDS for p in proxies]
    i = 0
    next_step = time.time()
    while True:
        time.sleep(max(0.0, next_step - time.time()))
        if time.time() + a.reload_wait + 5 >= a.until:
            break  # a step must finish before the clients stop
        next_step += a.every
        p, kind = steps[i % len(steps)]
        i += 1
        present = not p.present[kind]
        try:
            before = reload_counts(metrics(p.admin), kind)
        except Exception as e:
            out.write(f"{time.time():.6f} {p.name} {kind} {int(present)} probe_error "
                      f"metrics: {e!r}\n")
            continue
        write(p, kind, present)
        p.present[kind] = present
        deadline = time.time() + a.reload_wait
        outcome, detail = "reload_timeout", f"{a.reload_wait:.0f}s"
        text = ""
        while time.time() < deadline:
            try:
                text = metrics(p.admin)
                ok, bad = reload_counts(text, kind)
            except Exception:
                time.sleep(0.05)
                continue
            if bad > before[1]:
                outcome, detail = "reload_failed", f"failures {before[1]:.0f} -> {bad:.0f}"
                break
            if ok > before[0]:
                outcome = None
                break
            time.sleep(0.05)
        if outcome is None:
            try:
                outcome, detail = prober.probe(p, kind, present, text)
            except Exception as e:
                outcome, detail = "probe_error", repr(e)
        out.write(f"{time.time():.6f} {p.name} {kind} {int(present)} {outcome} "
                  f"{detail}\n".replace("\n", " ").rstrip() + "\n")
        if outcome != "correct":
            print(f"rotate: {p.name} {kind} present={present}: {outcome} {detail}",
                  file=sys.stderr)
    out.close()


if __name__ == "__main__":
    main()
