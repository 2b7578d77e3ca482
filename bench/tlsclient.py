#!/usr/bin/env python3
"""Small mTLS HTTP/1.1 client for memory.sh and extras.sh (Python ssl module, client cert).

  tlsclient.py hold -n N [--rate R] [--hold S] ...
      Opens N TLS connections at about R new connections/s, sends one keep-alive request
      on each and reads the full response, keeps every connection open (idle), prints
      "READY ..." (one line, flushed) and then holds them until --hold seconds have passed
      or SIGTERM/SIGINT arrives, then reports how many were still open, closes all, exits.
  tlsclient.py loop --duration S [--mode full|resume] [--tls 1.2|1.3] [--threads T] ...
      Each thread: new TCP+TLS connection, one request, close, again, until S seconds have
      passed. --mode resume offers the session of the thread's previous connection
      (ssl.SSLSession, refreshed after each connection = newest ticket); --mode full never
      offers one. Prints one JSON line: connections, resumed count, errors, wrong origins.
  tlsclient.py burst [--slow 300] [--silent 300] [--hold S] [--drip S]
      An attacker's burst: --silent TCP connections that send nothing (no ClientHello) and
      --slow slow-loris connections (mTLS handshake, then a request head that never ends: one
      header line every --drip seconds). Prints "READY ..." once all are open, keeps them until
      --hold seconds have passed (or SIGTERM), counting those the server closed meanwhile,
      prints "CLOSED ...", closes the rest and exits.

Every response must be 200 and (unless --expect-origin '') contain "origin":"EXPECT" (the
upstream echoes the X-M2M-Origin it received; requests carry a spoofed one).
Only 127.0.0.1 is contacted.
"""
import argparse
import json
import os
import signal
import socket
import ssl
import sys
import threading
import time

PKI = os.environ.get("PKI", os.path.join(os.environ.get("WORK", "/tmp/proxybench"), "pki"))


def make_ctx(a):
    ctx = ssl.create_default_context(cafile=a.cacert)
    if a.cert:
        ctx.load_cert_chain(a.cert, a.key)
    if a.tls == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif a.tls == "1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def request_bytes(a):
    return ("GET %s HTTP/1.1\r\nHost: localhost:%d\r\nX-M2M-Origin: spoofed-by-client\r\n"
            "X-M2M-RI: bench-1\r\nAccept: */*\r\n\r\n" % (a.path, a.port)).encode()


def read_response(s):
    """Read one HTTP/1.1 response with Content-Length; return (status, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(16384)
        if not d:
            raise ConnectionError("EOF in headers")
        buf += d
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    clen = 0
    for ln in lines[1:]:
        k, _, v = ln.partition(b":")
        if k.strip().lower() == b"content-length":
            clen = int(v.strip())
    while len(body) < clen:
        d = s.recv(16384)
        if not d:
            raise ConnectionError("EOF in body")
        body += d
    return status, body


def one_conn(ctx, a, req, session=None):
    raw = socket.create_connection(("127.0.0.1", a.port), timeout=a.timeout)
    # no Nagle: a TLS 1.2 abbreviated handshake ends with the client's Finished, and the
    # request written right after it would otherwise wait for the server's delayed ACK (40 ms)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        s = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
    except Exception:
        raw.close()
        raise
    try:
        s.sendall(req)
        status, body = read_response(s)
    except Exception:
        s.close()
        raise
    ok = status == 200 and (not a.expect_origin or
                            ('"origin":"%s"' % a.expect_origin).encode() in body)
    return s, ok, status


def cmd_hold(a):
    ctx = make_ctx(a)
    req = request_bytes(a)
    conns, bad, errs, first_err = [], 0, 0, ""
    t0 = time.monotonic()
    for i in range(a.n):
        due = t0 + i / a.rate
        d = due - time.monotonic()
        if d > 0:
            time.sleep(d)
        try:
            s, ok, status = one_conn(ctx, a, req)
            s.settimeout(None)
            conns.append(s)
            if not ok:
                bad += 1
                first_err = first_err or "status/origin %d" % status
        except Exception as e:  # count and go on
            errs += 1
            first_err = first_err or repr(e)[:120]
        if time.monotonic() - t0 > a.open_timeout:
            first_err = first_err or "open_timeout"
            break
    t1 = time.monotonic()
    print("READY open=%d bad=%d errors=%d secs=%.1f rate=%.0f first_err=%s" % (
        len(conns), bad, errs, t1 - t0, len(conns) / max(t1 - t0, 1e-9), first_err or "-"),
        flush=True)
    # hold: until --hold seconds have passed or SIGTERM/SIGINT (the driver's release)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    end = time.monotonic() + a.hold
    while not stop and time.monotonic() < end:
        time.sleep(0.1)
    alive = 0
    for s in conns:   # still open = no EOF/error pending from the server side
        try:
            s.setblocking(False)
            try:
                alive += 1 if s.recv(1) else 0
            except (ssl.SSLWantReadError, BlockingIOError):
                alive += 1
            except Exception:
                pass
        finally:
            s.close()
    print("CLOSED still_open_at_end=%d of %d" % (alive, len(conns)), flush=True)


def cmd_loop(a):
    ctx = make_ctx(a)
    req = request_bytes(a)
    end = time.monotonic() + a.duration
    lock = threading.Lock()
    tot = {"conns": 0, "resumed": 0, "errors": 0, "bad": 0, "first_err": "", "versions": {}}

    def worker():
        sess = None
        c = r = e = b = 0
        vers = {}
        ferr = ""
        while time.monotonic() < end:
            try:
                s, ok, status = one_conn(ctx, a, req, session=sess if a.mode == "resume" else None)
            except Exception as ex:
                e += 1
                ferr = ferr or repr(ex)[:160]
                sess = None
                continue
            c += 1
            r += 1 if s.session_reused else 0
            vers[s.version()] = vers.get(s.version(), 0) + 1
            if not ok:
                b += 1
                ferr = ferr or "status/origin %d" % status
            if a.mode == "resume":
                sess = s.session       # newest session/ticket (TLS 1.3: arrives after the handshake)
            s.close()
        with lock:
            tot["conns"] += c; tot["resumed"] += r; tot["errors"] += e; tot["bad"] += b
            tot["first_err"] = tot["first_err"] or ferr
            for k, v in vers.items():
                tot["versions"][k] = tot["versions"].get(k, 0) + v

    t0 = time.monotonic()
    ths = [threading.Thread(target=worker) for _ in range(a.threads)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    tot["secs"] = round(time.monotonic() - t0, 3)
    tot["mode"], tot["tls"], tot["threads"] = a.mode, a.tls, a.threads
    print(json.dumps(tot), flush=True)


def cmd_burst(a):
    ctx = make_ctx(a)
    silent, slow, errs, first_err = [], [], 0, ""
    head = ("GET %s HTTP/1.1\r\nHost: localhost:%d\r\n" % (a.path, a.port)).encode()
    t0 = time.monotonic()
    for i in range(max(a.silent, a.slow)):    # interleaved: both kinds are open at once
        try:
            if i < a.silent:
                silent.append(socket.create_connection(("127.0.0.1", a.port), timeout=a.timeout))
            if i < a.slow:
                raw = socket.create_connection(("127.0.0.1", a.port), timeout=a.timeout)
                s = ctx.wrap_socket(raw, server_hostname="localhost")
                s.sendall(head)
                slow.append(s)
        except Exception as e:  # count and go on
            errs += 1
            first_err = first_err or repr(e)[:120]
    print("READY silent=%d slow=%d errors=%d secs=%.1f first_err=%s" % (
        len(silent), len(slow), errs, time.monotonic() - t0, first_err or "-"), flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    end = time.monotonic() + a.hold
    closed_slow, closed_silent = set(), set()
    n = 0
    while not stop and time.monotonic() < end:
        n += 1
        for i, s in enumerate(slow):
            if i in closed_slow:
                continue
            try:
                s.sendall(b"X-Drip-%d: x\r\n" % n)
            except Exception:
                closed_slow.add(i)
        for i, s in enumerate(silent):
            if i in closed_silent:
                continue
            s.setblocking(False)
            try:
                if not s.recv(1):
                    closed_silent.add(i)
            except BlockingIOError:
                pass
            except Exception:
                closed_silent.add(i)
        time.sleep(min(a.drip, max(0.0, end - time.monotonic())))
    print("CLOSED silent_closed_by_server=%d of %d slow_closed_by_server=%d of %d" % (
        len(closed_silent), len(silent), len(closed_slow), len(slow)), flush=True)
    for s in silent + slow:
        s.close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=["hold", "loop", "burst"])
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", 38443)))
    p.add_argument("--path", default="/m2m/cse-bench/cnt-1/la")
    p.add_argument("--cacert", default=os.path.join(PKI, "ca.crt"))
    p.add_argument("--cert", default=os.path.join(PKI, "client.crt"))
    p.add_argument("--key", default=os.path.join(PKI, "client.key"))
    p.add_argument("--tls", choices=["any", "1.2", "1.3"], default="any")
    p.add_argument("--expect-origin", default="urn:m2m:Cae-sensor1")
    p.add_argument("--timeout", type=float, default=10.0, help="socket timeout per connection")
    # hold
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("--rate", type=float, default=400.0, help="new connections per second")
    p.add_argument("--hold", type=float, default=60.0, help="max seconds to hold after READY")
    p.add_argument("--open-timeout", type=float, default=120.0, help="max seconds for opening")
    # loop
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--mode", choices=["full", "resume"], default="full")
    p.add_argument("--threads", type=int, default=1)
    # burst
    p.add_argument("--silent", type=int, default=300)
    p.add_argument("--slow", type=int, default=300)
    p.add_argument("--drip", type=float, default=1.0, help="seconds between slow-loris header lines")
    a = p.parse_args()
    if a.cert == "":
        a.cert = None
    {"hold": cmd_hold, "loop": cmd_loop, "burst": cmd_burst}[a.cmd](a)


if __name__ == "__main__":
    main()
