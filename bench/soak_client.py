#!/usr/bin/env python3
"""Clients of bench/soak.sh (python3 standard library only; JWTs signed with the openssl CLI).

    soak_client.py load  --addr H:P --ca CA --until T --log FILE --kind K --cse-id ID
                         --cse-name NAME --expect ORIGINATOR [--cert C --key K | --auth 'Basic ...']
                         [--rate R] [--reconnect N]
    soak_client.py ws    (same arguments): oneM2M WebSocket client (oneM2M.json, masked frames)
    soak_client.py jwt   --key PEM --kid KID --sub S --exp T [--roles r1,r2]   prints an RS256 JWT
    soak_client.py jwks  PEM:KID ...                                          prints a JWKS

load: keep-alive TLS connection (a new one every --reconnect requests), --rate requests per
second through a fixed plan of requests (`http_plan`), each one either to be forwarded or to
be refused by a named authorization rule; each forwarded request's echo must show the proven
originator (and nothing else), the method and the path as sent.
ws: the same over a oneM2M WebSocket (`ws_plan`): one request primitive at a time, the
response primitive from the echo CSE or the proxy's 4103 refusal.

Every request writes one line `start end status outcome` to --log (see `classify`):
ok, refused (both as planned), wrong_refusal, wrong_allow, wrong_reason (refused by another
rule than planned), bad_echo (the CSE received another originator, method, path or poa),
http_<status>, timeout, conn_error, ws_error (failures), stale_retry (information: a reused
connection the server had closed was replaced, as HTTP clients do).
"""

import argparse
import base64
import hashlib
import http.client
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import time

STALE = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
    ConnectionAbortedError,
)
ALLOW = None  # the plan's expectation: forwarded; else the name of the refusing rule ("" = any)
REFUSAL_STATUSES = (401, 403, 429)


def tls_context(ca, cert=None, key=None):
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


class Client:
    """One keep-alive HTTP/1.1 connection (TLS when ctx is given), replaced when it breaks."""

    def __init__(self, addr, ctx=None, timeout=10):
        self.host, port = addr.rsplit(":", 1)
        self.port = int(port)
        self.ctx = ctx
        self.timeout = timeout
        self.conn = None
        self.used = False

    def _new(self):
        self.close()
        if self.ctx is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        else:
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
        """(status, response headers, body bytes, retried) or raises."""
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
                return resp.status, resp.headers, data, retried
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


class Log:
    """Appends `start end status outcome` lines, flushed at least every half second."""

    def __init__(self, path):
        self.f = open(path, "a", buffering=1 << 16)
        self.last_flush = time.time()

    def write(self, start, end, status, outcome):
        self.f.write(f"{start:.6f} {end:.6f} {status} {outcome}\n")
        if outcome not in ("ok", "refused") or end - self.last_flush > 0.5:
            self.f.flush()
            self.last_flush = end

    def close(self):
        self.f.close()


def classify(expect, status, rsc, text, echo_ok):
    """Outcome of one answered request. expect: ALLOW or the refusing rule's name ("" = any
    refusal in oneM2M form, e.g. by the originator policy)."""
    refused = status in REFUSAL_STATUSES
    if expect is ALLOW:
        if refused:
            return "wrong_refusal"
        if status == 200:
            return "ok" if echo_ok() else "bad_echo"
        return f"http_{status}"
    if refused:
        if status != 403 or rsc != "4103":
            return "wrong_reason"
        if expect and f"denied by rule {expect}" not in text:
            return "wrong_reason"
        return "refused"
    if status in (200, 502, 504):  # forwarded (or tried to be): the CSE was asked
        return "wrong_allow"
    return f"http_{status}"


def pace(rate):
    """Yields once per 1/rate seconds (no catching up after a stall)."""
    step = 1.0 / rate if rate > 0 else 0.0
    nxt = time.time()
    while True:
        now = time.time()
        if nxt > now:
            time.sleep(nxt - now)
        else:
            nxt = now
        nxt += step
        yield


# --- the plans --------------------------------------------------------------------------------
# The soak's rules (bench/soak.sh): no-deletes-locked (deletes under <cse>/locked), secret-needs-
# reader (anything under <cse>/secret unless the identity holds role reader: the JWT clients
# do), basic-no-containers (Basic users create no containers), peer-no-private (the peer CSE
# does nothing under <cse>/private), soak-toggle (added and removed by soak_rotate.py).


def http_plan(kind, cse_id, cse, name):
    sp = f"/~{cse_id}/{cse}"
    ab = f"/_/soak.example{cse_id}/{cse}"
    app = f"/{cse}/app"
    return [
        ("GET", f"{app}/{name}", None, None, ALLOW),
        ("POST", app, "application/json;ty=4", {"m2m:cin": {"con": "1"}}, ALLOW),
        ("PUT", f"{sp}/app/{name}", "application/json", {"m2m:cnt": {"lbl": ["x"]}}, ALLOW),
        ("DELETE", f"{app}/{name}/old", None, None, ALLOW),
        ("DELETE", f"/{cse}/locked/{name}", None, None, "no-deletes-locked"),
        ("GET", f"/{cse}/secret/{name}", None, None,
         ALLOW if kind == "jwt" else "secret-needs-reader"),
        ("POST", app, "application/json;ty=3", {"m2m:cnt": {"rn": name}},
         "basic-no-containers" if kind == "basic" else ALLOW),
        ("GET", f"{ab}/app/{name}", None, None, ALLOW),
        ("DELETE", f"{sp}/locked/{name}", None, None, "no-deletes-locked"),
        ("GET", f"{sp}/secret/{name}", None, None,
         ALLOW if kind == "jwt" else "secret-needs-reader"),
    ]


def ws_plan(kind, cse_id, cse, name):
    return [
        ({"op": 2, "to": f"{cse_id}/{cse}/app/{name}"}, ALLOW),
        ({"op": 1, "to": f"{cse}/app", "ty": 4, "pc": {"m2m:cin": {"con": "1"}}}, ALLOW),
        ({"op": 4, "to": f"{cse}/locked/{name}"}, "no-deletes-locked"),
        ({"op": 2, "to": f"{cse_id}/{cse}/secret/{name}"},
         ALLOW if kind == "jwt" else "secret-needs-reader"),
        ({"op": 3, "to": f"{cse}/app/{name}", "pc": {"m2m:cnt": {"lbl": ["x"]}}}, ALLOW),
        ({"op": 4, "to": f"{cse_id}/{cse}/locked/{name}"}, "no-deletes-locked"),
    ]


def cmd_load(a):
    ctx = tls_context(a.ca, a.cert, a.key)
    client = Client(a.addr, ctx)
    log = Log(a.log)
    plan = http_plan(a.kind, a.cse_id, a.cse_name, a.name)
    seq = 0
    for _ in pace(a.rate):
        if time.time() >= a.until:
            break
        method, path, ctype, body, expect = plan[seq % len(plan)]
        seq += 1
        if a.reconnect and seq % a.reconnect == 0:
            client.close()
        headers = {"X-M2M-RI": f"{a.name}-{seq}", "X-M2M-Origin": "CAdmin"}  # spoofed
        if ctype:
            headers["Content-Type"] = ctype
        if a.auth:
            headers["Authorization"] = a.auth
        data = json.dumps(body).encode() if body is not None else None
        start = time.time()
        status = 0
        try:
            status, rh, resp, retried = client.request(method, path, headers, data)
            if retried:
                log.write(start, start, 0, "stale_retry")

            def echo_ok():
                try:
                    e = json.loads(resp)
                except ValueError:
                    return False
                good = (e.get("origins") == [a.expect] and e.get("method") == method
                        and e.get("path") == path)
                if not good:
                    print(f"BAD ECHO {method} {path}: {e}", file=sys.stderr)
                return good

            outcome = classify(expect, status, rh.get("X-M2M-RSC"),
                               resp.decode("utf-8", "replace"), echo_ok)
            if outcome.startswith("wrong"):
                print(f"{outcome}: {method} {path} planned {expect or 'allow'}: {status} "
                      f"{resp[:200]!r}", file=sys.stderr)
        except socket.timeout:
            outcome = "timeout"
        except (OSError, ssl.SSLError, http.client.HTTPException):
            outcome = "conn_error"
        end = time.time()
        log.write(start, end, status, outcome)
        if outcome in ("conn_error", "timeout"):
            time.sleep(0.05)
    client.close()
    log.close()


# --- WebSocket (RFC 6455), client side -------------------------------------------------------
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Conn:
    """A socket with a read buffer, for heads and frames."""

    def __init__(self, sock, recv=None):
        self.sock = sock
        self.recv = recv or sock.recv  # recv(n): at most n bytes, b"" at the end
        self.buf = b""

    def _fill(self):
        chunk = self.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self):
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 65536:
                raise EOFError("head too long")
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        return head.decode("latin-1")

    def sendall(self, data):
        self.sock.sendall(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def ws_frame(opcode, payload, mask):
    head = bytes([0x80 | opcode])
    m = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head += bytes([m | n])
    elif n <= 0xFFFF:
        head += bytes([m | 126]) + struct.pack(">H", n)
    else:
        head += bytes([m | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def ws_read(conn):
    """One whole message: (opcode, payload); control frames are returned as they come."""
    parts, first = [], None
    while True:
        b0, b1 = conn.read_exact(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", conn.read_exact(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", conn.read_exact(8))[0]
        key = conn.read_exact(4) if b1 & 0x80 else None
        payload = conn.read_exact(n)
        if key:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        opcode = b0 & 0x0F
        if opcode >= 8:
            return opcode, payload
        if first is None:
            first = opcode
        parts.append(payload)
        if b0 & 0x80:
            return first, b"".join(parts)


def ws_accept(key):
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def ws_connect(addr, ctx, auth, timeout=10):
    host, port = addr.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=timeout)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = Conn(ctx.wrap_socket(raw, server_hostname=host))
    key = base64.b64encode(os.urandom(16)).decode()
    head = (f"GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: oneM2M.json\r\n")
    if auth:
        head += f"Authorization: {auth}\r\n"
    conn.sendall((head + "\r\n").encode())
    resp = conn.read_head()
    status = resp.split(" ", 2)[1] if " " in resp else "?"
    if status != "101" or ws_accept(key) not in resp:
        conn.close()
        raise ConnectionError(f"upgrade answered {resp.splitlines()[0] if resp else '?'}")
    return conn


def ws_close(conn):
    try:
        conn.sendall(ws_frame(8, struct.pack(">H", 1000), True))
        for _ in range(4):  # a response still in flight may come first
            op, _ = ws_read(conn)
            if op == 8:
                break
    except (OSError, EOFError, ssl.SSLError, ValueError):
        pass
    conn.close()


def cmd_ws(a):
    ctx = tls_context(a.ca, a.cert, a.key)
    log = Log(a.log)
    plan = ws_plan(a.kind, a.cse_id, a.cse_name, a.name)
    conn = None
    seq = 0
    for _ in pace(a.rate):
        if time.time() >= a.until:
            break
        prim, expect = plan[seq % len(plan)]
        seq += 1
        if conn is not None and a.reconnect and seq % a.reconnect == 0:
            ws_close(conn)
            conn = None
        rqi = f"{a.name}-{seq}"
        msg = dict(prim, fr="Cspoofed", rqi=rqi, rvi="3")
        start = time.time()
        status = 0
        try:
            if conn is None:
                conn = ws_connect(a.addr, ctx, a.auth)
            conn.sendall(ws_frame(1, json.dumps(msg).encode(), True))
            while True:
                op, payload = ws_read(conn)
                if op == 9:  # ping
                    conn.sendall(ws_frame(10, payload, True))
                    continue
                if op == 8:
                    raise EOFError(f"closed by the server: {payload[:2].hex()}")
                break
            resp = json.loads(payload)
            if resp.get("rqi") != rqi:
                raise ValueError(f"rqi {resp.get('rqi')!r}, expected {rqi!r}")
            rsc = resp.get("rsc")
            status = rsc
            pc = resp.get("pc") or {}
            if rsc == 4103:
                http_status, text = 403, json.dumps(pc)
            elif rsc in (2000, 2001, 2002, 2004):
                http_status, text = 200, ""
            else:
                http_status, text = 500, json.dumps(pc)

            def echo_ok():
                e = pc.get("soak") or {}
                good = (e.get("origins") == [a.expect] and e.get("op") == prim["op"]
                        and e.get("to") == prim["to"])
                if not good:
                    print(f"BAD ECHO {prim}: {resp}", file=sys.stderr)
                return good

            outcome = classify(expect, http_status, str(rsc), text, echo_ok)
            if outcome.startswith("http_"):
                outcome = f"rsc_{rsc}"
            if outcome.startswith("wrong"):
                print(f"{outcome}: {prim} planned {expect or 'allow'}: {resp}", file=sys.stderr)
        except socket.timeout:
            outcome = "timeout"
        except (OSError, EOFError, ssl.SSLError, ValueError, ConnectionError) as e:
            outcome = "ws_error"
            print(f"{time.time():.3f} ws_error: {e!r}", file=sys.stderr)
        end = time.time()
        if outcome in ("timeout", "ws_error") and conn is not None:
            conn.close()
            conn = None
        log.write(start, end, status, outcome)
        if outcome in ("timeout", "ws_error"):
            time.sleep(0.05)
    if conn is not None:
        ws_close(conn)
    log.close()


# --- JWT (RS256, signed by the openssl CLI) ---------------------------------------------------
def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint_jwt(key, kid, claims):
    header = {"alg": "RS256", "typ": "JWT", "kid": kid}
    signing_input = (b64u(json.dumps(header, separators=(",", ":")).encode()) + "."
                     + b64u(json.dumps(claims, separators=(",", ":")).encode()))
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key],
                         input=signing_input.encode(), capture_output=True, check=True).stdout
    return signing_input + "." + b64u(sig)


def jwk(key, kid):
    out = subprocess.run(["openssl", "rsa", "-in", key, "-noout", "-modulus"],
                         capture_output=True, check=True, text=True).stdout
    modulus = bytes.fromhex(out.strip().split("=", 1)[1])
    return {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64u(modulus),
            "e": "AQAB"}


def cmd_jwt(a):
    claims = {"iss": "soak-idp", "aud": "m2m-soak", "sub": a.sub, "exp": int(a.exp),
              "iat": int(time.time())}
    if a.roles:
        claims["roles"] = a.roles.split(",")
    print(mint_jwt(a.key, a.kid, claims))


def cmd_jwks(a):
    keys = [jwk(*spec.rsplit(":", 1)) for spec in a.keys]
    print(json.dumps({"keys": keys}, indent=1))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("load", "ws"):
        s = sub.add_parser(name)
        s.add_argument("--addr", required=True)
        s.add_argument("--ca", required=True)
        s.add_argument("--cert")
        s.add_argument("--key")
        s.add_argument("--auth")
        s.add_argument("--kind", required=True)
        s.add_argument("--cse-id", required=True)
        s.add_argument("--cse-name", required=True)
        s.add_argument("--expect", required=True)
        s.add_argument("--until", type=float, required=True)
        s.add_argument("--log", required=True)
        s.add_argument("--name", default="load")
        s.add_argument("--rate", type=float, default=20)
        s.add_argument("--reconnect", type=int, default=200)
    j = sub.add_parser("jwt")
    j.add_argument("--key", required=True)
    j.add_argument("--kid", required=True)
    j.add_argument("--sub", required=True)
    j.add_argument("--exp", type=float, required=True)
    j.add_argument("--roles")
    k = sub.add_parser("jwks")
    k.add_argument("keys", nargs="+")
    a = p.parse_args()
    {"load": cmd_load, "ws": cmd_ws, "jwt": cmd_jwt, "jwks": cmd_jwks}[a.cmd](a)


if __name__ == "__main__":
    main()
