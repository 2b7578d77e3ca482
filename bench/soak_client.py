#!/usr/bin/env python3
"""Load, revocation probe and report for bench/soak.sh (python3 standard library only).

    soak_client.py load   --addr H:P --ca CA --until T --log FILE --expect ORIGINATOR
                          [--cert C --key K | --auth 'Basic ...' | --auth 'Bearer ...'] [--name N]
    soak_client.py probe  --addr H:P --ca CA --admin H:P --until T --log FILE --htpasswd F
                          --tokens F --base-htpasswd F --base-tokens F
    soak_client.py report --work DIR --proxy-pid PID --start T --duration S [--interval 10]
                          [--rss-growth-mb 50]

load: one keep-alive TLS connection, requests back to back (GET/POST/PUT/DELETE in turn, each
with a spoofed `X-M2M-Origin: CAdmin`); one line per request: `start end status kind`, kind one
of ok, origin_mismatch (the upstream saw another originator: fatal), http_<status>, timeout,
conn_error. A request that fails on a reused connection before any answer (the server closed it
while idle) is retried once on a new connection, as HTTP clients do; counted as `stale_retry`.

probe: every second rewrites the htpasswd and tokens files (atomically), alternately with and
without a temporary user and token, waits until /metrics shows both reloads
(m2m_auth_proxy_reloads_total), then checks that the temporary credentials are accepted
(present) or refused with 401 (removed). Lines: `time kind detail`, kind one of
revoked_refused, revoked_accepted (fatal), added_ok, added_refused, reload_timeout (fatal).

report: every interval prints throughput, errors by kind, p99 and max latency of the successful
requests (a request retried after a stale connection counts from its first attempt) and the
proxy's RSS; at
the end the verdict, exit status 1 on any lost valid request outside an upstream outage window
(DIR/outages: `stop_time answered_time` per restart; the window is [stop, answered + 1 s]),
any origin mismatch, any accepted revoked credential, any reload not seen, or RSS growth beyond
the bound over the RSS at the end of the first interval.
"""

import argparse
import base64
import glob
import http.client
import json
import os
import socket
import ssl
import sys
import time
import urllib.request

METHODS = ["GET", "POST", "PUT", "DELETE"]
STALE = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
    ConnectionAbortedError,
)


def tls_context(ca, cert=None, key=None):
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


class Client:
    def __init__(self, addr, ctx, timeout=10):
        self.host, port = addr.rsplit(":", 1)
        self.port = int(port)
        self.ctx = ctx
        self.timeout = timeout
        self.conn = None
        self.used = False

    def _new(self):
        self.close()
        self.conn = http.client.HTTPSConnection(
            self.host, self.port, context=self.ctx, timeout=self.timeout
        )
        self.used = False

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
        self.conn = None

    def request(self, method, path, headers, body=None):
        """(status, body bytes, retried) or raises."""
        retried = False
        for attempt in range(2):
            if self.conn is None:
                self._new()
            reused = self.used
            try:
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
                self.used = True
                if resp.will_close:
                    self.close()
                return resp.status, data, retried
            except STALE:
                self.close()
                if reused and attempt == 0:
                    retried = True
                    continue
                raise
            except Exception:
                self.close()
                raise
        raise RuntimeError("unreachable")


def cmd_load(a):
    ctx = tls_context(a.ca, a.cert, a.key)
    client = Client(a.addr, ctx)
    out = open(a.log, "a", buffering=1 << 16)
    last_flush = time.time()
    seq = 0
    while time.time() < a.until:
        seq += 1
        method = METHODS[seq % len(METHODS)]
        headers = {
            "X-M2M-RI": f"{a.name}-{seq}",
            "X-M2M-Origin": "CAdmin",
            "Content-Type": "application/json",
        }
        if a.auth:
            headers["Authorization"] = a.auth
        body = None
        if method in ("POST", "PUT"):
            body = json.dumps({"m2m:cin": {"con": str(seq)}}).encode()
        start = time.time()
        status, kind = 0, "ok"
        try:
            status, data, retried = client.request(method, f"/cse-in/soak/{a.name}", headers, body)
            if retried:
                out.write(f"{start:.6f} {start:.6f} 0 stale_retry\n")
            if status == 200:
                origins = json.loads(data).get("origins")
                if origins != [a.expect]:
                    kind = "origin_mismatch"
                    print(f"ORIGIN MISMATCH: expected {a.expect}, upstream saw {origins}",
                          file=sys.stderr)
            else:
                kind = f"http_{status}"
        except socket.timeout:
            kind = "timeout"
        except (OSError, ssl.SSLError, http.client.HTTPException):
            kind = "conn_error"
        end = time.time()
        out.write(f"{start:.6f} {end:.6f} {status} {kind}\n")
        if kind in ("conn_error", "timeout"):
            time.sleep(0.05)  # do not spin while the proxy is unreachable
        if kind != "ok" or end - last_flush > 0.5:
            out.flush()
            last_flush = end
    out.close()


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def reload_counts(admin):
    text = urllib.request.urlopen(f"http://{admin}/metrics", timeout=5).read().decode()
    counts = {}
    for line in text.splitlines():
        if line.startswith("m2m_auth_proxy_reloads_total{"):
            labels, value = line.rsplit(" ", 1)
            if 'result="success"' in labels:
                f = labels.split('file="', 1)[1].split('"', 1)[0]
                counts[f] = float(value)
    return counts.get("htpasswd", 0.0), counts.get("tokens", 0.0)


def write_atomic(path, text):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def cmd_probe(a):
    ctx = tls_context(a.ca)
    client = Client(a.addr, ctx, timeout=5)
    base_h = open(a.base_htpasswd).read()
    base_t = open(a.base_tokens).read()
    extra_h = open(a.extra_htpasswd).read()
    extra_t = open(a.extra_tokens).read()
    out = open(a.log, "a", buffering=1)
    user_auth = basic("Csoak-revoked", "pw-revoked")
    token_auth = "Bearer tok-revoked-0123456789"
    present = False
    next_round = time.time()
    while time.time() < a.until:
        time.sleep(max(0.0, next_round - time.time()))
        next_round += 1.0
        present = not present
        try:
            before = reload_counts(a.admin)
        except Exception as e:
            out.write(f"{time.time():.6f} metrics_error {e!r}\n")
            continue
        write_atomic(a.htpasswd, base_h + (extra_h if present else ""))
        write_atomic(a.tokens, base_t + (extra_t if present else ""))
        deadline = time.time() + 5
        seen = False
        while time.time() < deadline:
            try:
                now = reload_counts(a.admin)
                if now[0] > before[0] and now[1] > before[1]:
                    seen = True
                    break
            except Exception:
                pass
            time.sleep(0.05)
        if not seen:
            out.write(f"{time.time():.6f} reload_timeout present={present}\n")
            continue
        for what, auth in (("user", user_auth), ("token", token_auth)):
            try:
                status, _, _ = client.request(
                    "GET", "/cse-in/probe", {"Authorization": auth, "X-M2M-RI": "probe"}
                )
            except Exception as e:
                out.write(f"{time.time():.6f} probe_error {what} {e!r}\n")
                continue
            t = time.time()
            if present:
                # accepted: 200, or 502/504 while the upstream is being restarted
                kind = "added_ok" if status in (200, 502, 504) else "added_refused"
            else:
                kind = "revoked_refused" if status == 401 else "revoked_accepted"
            out.write(f"{t:.6f} {kind} {what} status={status}\n")
    out.close()


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def p99(values):
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * 0.99))]


class Tail:
    """Reads the lines appended to a file since the last call."""

    def __init__(self, path):
        self.path, self.offset, self.rest = path, 0, b""

    def lines(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
                self.offset += len(data)
        except OSError:
            return []
        data = self.rest + data
        parts = data.split(b"\n")
        self.rest = parts.pop()
        return [p.decode() for p in parts if p]


def outages(work):
    windows = []
    try:
        for line in open(os.path.join(work, "outages")):
            stop, answered = map(float, line.split())
            windows.append((stop, answered + 1.0))
    except OSError:
        pass
    try:  # an outage still open when the run ended
        stop = float(open(os.path.join(work, "outage.open")).read().split()[0])
        windows.append((stop, float("inf")))
    except (OSError, ValueError, IndexError):
        pass
    return windows


def cmd_report(a):
    loads = {}
    probe = Tail(os.path.join(a.work, "probe.log"))
    failures_lost = []  # (start, end, kind)
    totals = {}
    probe_totals = {}
    origin_mismatch = 0
    rss_first = None
    rss_max = 0
    end_time = a.start + a.duration
    interval = a.interval
    n = 0
    print(f"{'t(s)':>5} {'req/s':>7} {'ok/s':>7} {'p99 ms':>7} {'max ms':>7} {'RSS MB':>7}  "
          "errors | probes", flush=True)
    while True:
        n += 1
        tick = a.start + n * interval
        last = tick >= end_time
        if last:
            tick = end_time + 3  # let the clients finish and flush
        time.sleep(max(0.0, tick - time.time()))
        kinds, lat, total = {}, [], 0
        for path in glob.glob(os.path.join(a.work, "load-*.log")):
            loads.setdefault(path, Tail(path))
        for t in loads.values():
            for line in t.lines():
                start, end, status, kind = line.split()
                start, end = float(start), float(end)
                if kind == "stale_retry":
                    kinds[kind] = kinds.get(kind, 0) + 1
                    continue
                total += 1
                kinds[kind] = kinds.get(kind, 0) + 1
                if kind == "ok":
                    lat.append((end - start) * 1000)
                elif kind == "origin_mismatch":
                    origin_mismatch += 1
                else:
                    failures_lost.append((start, end, kind))
        pk = {}
        for line in probe.lines():
            kind = line.split()[1]
            pk[kind] = pk.get(kind, 0) + 1
        for k, v in kinds.items():
            totals[k] = totals.get(k, 0) + v
        for k, v in pk.items():
            probe_totals[k] = probe_totals.get(k, 0) + v
        rss = rss_kib(a.proxy_pid) / 1024
        if rss_first is None:
            rss_first = rss
        rss_max = max(rss_max, rss)
        span = interval if not last else max(1e-9, a.duration - (n - 1) * interval)
        errs = " ".join(f"{k}={v}" for k, v in sorted(kinds.items()) if k != "ok") or "-"
        probes = " ".join(f"{k}={v}" for k, v in sorted(pk.items())) or "-"
        print(f"{min(n * interval, a.duration):>5} {total / span:>7.0f} "
              f"{kinds.get('ok', 0) / span:>7.0f} {p99(lat):>7.1f} {max(lat, default=0):>7.0f} "
              f"{rss:>7.1f}  "
              f"{errs} | {probes}", flush=True)
        if last:
            break

    windows = outages(a.work)
    lost = [
        f for f in failures_lost
        if not any(f[0] <= w_end and f[1] >= w_start for w_start, w_end in windows)
    ]
    in_outage = len(failures_lost) - len(lost)
    growth = rss_max - (rss_first or 0)
    print("---")
    print(f"requests: {sum(v for k, v in totals.items() if k != 'stale_retry')} "
          f"ok={totals.get('ok', 0)} failed_in_outages={in_outage} lost={len(lost)} "
          f"origin_mismatch={origin_mismatch} stale_retry={totals.get('stale_retry', 0)}")
    print(f"upstream outages: {len(windows)} "
          + " ".join(f"{w[1] - 1 - w[0]:.2f}s" for w in windows if w[1] != float('inf')))
    print("probes: " + (" ".join(f"{k}={v}" for k, v in sorted(probe_totals.items())) or "-"))
    print(f"RSS: first interval {rss_first:.1f} MB, max {rss_max:.1f} MB, growth {growth:.1f} MB "
          f"(bound {a.rss_growth_mb} MB)")
    problems = []
    if lost:
        sample = ", ".join(f"{k}@{s - a.start:.2f}s" for s, _, k in lost[:10])
        problems.append(f"{len(lost)} valid request(s) lost outside upstream outages: {sample}")
    if origin_mismatch:
        problems.append(f"{origin_mismatch} request(s) reached the upstream with another originator")
    if probe_totals.get("revoked_accepted"):
        problems.append(f"{probe_totals['revoked_accepted']} revoked credential(s) accepted")
    if probe_totals.get("reload_timeout"):
        problems.append(f"{probe_totals['reload_timeout']} reload(s) not seen within 5 s")
    if not probe_totals.get("revoked_refused"):
        problems.append("no revocation was probed")
    if totals.get("ok", 0) == 0:
        problems.append("no request succeeded")
    if growth > a.rss_growth_mb:
        problems.append(f"RSS grew by {growth:.1f} MB (bound {a.rss_growth_mb} MB)")
    if problems:
        print("FAIL: " + "; ".join(problems))
        sys.exit(1)
    print("PASS")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    l = sub.add_parser("load")
    l.add_argument("--addr", required=True)
    l.add_argument("--ca", required=True)
    l.add_argument("--cert")
    l.add_argument("--key")
    l.add_argument("--auth")
    l.add_argument("--expect", required=True)
    l.add_argument("--until", type=float, required=True)
    l.add_argument("--log", required=True)
    l.add_argument("--name", default="load")
    pr = sub.add_parser("probe")
    for k in ("addr", "ca", "admin", "log", "htpasswd", "tokens", "base_htpasswd",
              "base_tokens", "extra_htpasswd", "extra_tokens"):
        pr.add_argument("--" + k.replace("_", "-"), dest=k, required=True)
    pr.add_argument("--until", type=float, required=True)
    r = sub.add_parser("report")
    r.add_argument("--work", required=True)
    r.add_argument("--proxy-pid", type=int, required=True)
    r.add_argument("--start", type=float, required=True)
    r.add_argument("--duration", type=float, required=True)
    r.add_argument("--interval", type=float, default=10)
    r.add_argument("--rss-growth-mb", type=float, default=50)
    a = p.parse_args()
    {"load": cmd_load, "probe": cmd_probe, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
