#!/usr/bin/env python3
"""Echo "CSE" of bench/soak.sh: HTTP/1.1 keep-alive and the oneM2M WebSocket binding on
127.0.0.1:PORT, and optionally the CSE's own outbound traffic through its sidecar's egress route.

HTTP: every request is answered 200 with X-M2M-RSC 2000, the request's X-M2M-RI echoed, and a
JSON body naming what it received: {"origins": [every X-M2M-Origin], "method", "path",
"body_len", "received_poa"} (received_poa: the `poa` of an m2m:csr body, under another key so
that no proxy rewrites it on the way back).
WebSocket (`Upgrade: websocket`, subprotocol oneM2M.json): each request primitive is answered
with {"rsc": 2000, "rqi", "rvi", "to": its fr, "fr": --cse-id, "pc": {"soak": {"origins": [fr],
"op", "to"}}}.

    soak_upstream.py PORT --cse-id /id-in
        [--egress H:P --peer-id /id-mn --peer-name cse-mn --public URL --expect-poa URL
         --egress-log FILE --schedule FILE --rate R]

With --egress, a thread sends the plan `egress_plan` to the sidecar's egress listener (plain
HTTP), as a CSE calling its peer: forwarded requests must come back with the peer CSE's echo
of the same originator and path (and the `poa` rewritten to the peer sidecar's egress URL);
refused ones with 403 / 4103 from one of the two sidecars. One line per request in the
soak_client.py log format.
"""

import argparse
import base64
import hashlib
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from soak_client import ALLOW, GUID, Client, Conn, Log, classify, pace, ws_frame, ws_read

CSE_ID = "/id-in"


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # head and body are two writes: without this, Nagle + delayed ACK add 40 ms to each answer
    disable_nagle_algorithm = True
    server_version = "soak-echo"
    sys_version = ""

    def _answer(self):
        if self.headers.get("Upgrade", "").lower() == "websocket":
            return self._websocket()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        poa = None
        if body:
            try:
                poa = (json.loads(body).get("m2m:csr") or {}).get("poa")
            except (ValueError, AttributeError):
                pass
        out = json.dumps(
            {
                "origins": self.headers.get_all("X-M2M-Origin") or [],
                "method": self.command,
                "path": self.path,
                "body_len": len(body),
                "received_poa": poa,
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.send_header("X-M2M-RSC", "2000")
        ri = self.headers.get("X-M2M-RI")
        if ri:
            self.send_header("X-M2M-RI", ri)
        self.end_headers()
        self.wfile.write(out)

    def _websocket(self):
        key = self.headers.get("Sec-WebSocket-Key", "")
        offered = [p.strip() for p in self.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        if "oneM2M.json" not in offered:
            self.send_error(400, "oneM2M.json expected")
            return
        accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        self.wfile.write(
            ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             f"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: oneM2M.json\r\n\r\n"
             ).encode()
        )
        self.wfile.flush()
        self.close_connection = True
        conn = Conn(self.connection, self.rfile.read1)  # rfile may hold bytes already
        try:
            while True:
                op, payload = ws_read(conn)
                if op == 8:
                    conn.sendall(ws_frame(8, payload[:2], False))
                    return
                if op == 9:
                    conn.sendall(ws_frame(10, payload, False))
                    continue
                if op != 1:
                    continue
                req = json.loads(payload)
                fr = req.get("fr")
                resp = {"rsc": 2000, "rqi": req.get("rqi"), "rvi": req.get("rvi", "3"),
                        "to": fr, "fr": CSE_ID,
                        "pc": {"soak": {"origins": [fr] if fr is not None else [],
                                        "op": req.get("op"), "to": req.get("to")}}}
                conn.sendall(ws_frame(1, json.dumps(resp).encode(), False))
        except EOFError:
            pass
        except (OSError, ValueError) as e:
            print(f"{time.time():.3f} websocket: {e!r}", file=sys.stderr)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args):  # quiet
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


def egress_plan(a):
    """(method, path, originator, content type, body, expectation, expected poa)."""
    base = f"/~{a.peer_id}/{a.peer_name}"
    me = a.cse_id
    return [
        ("GET", f"{base}/app/egress", me, None, None, ALLOW, None),
        ("GET", f"{base}/app/egress", f"{me}/Cae-soak", None, None, ALLOW, None),
        ("POST", base, f"{me}/{a.ae_prefix}soak", "application/json;ty=2",
         {"m2m:ae": {"rn": "soak", "api": "Nsoak", "rr": False, "srv": ["3"]}}, ALLOW, None),
        # an AE-ID outside the prefix the peer allows this CSE (cse_ae_ids)
        ("POST", base, f"{me}/Cbad", "application/json;ty=2",
         {"m2m:ae": {"rn": "bad", "api": "Nsoak", "rr": False, "srv": ["3"]}}, "", None),
        ("DELETE", f"{base}/private/egress", me, None, None, "peer-no-private", None),
        # outside the route's originators: refused by the local sidecar, nothing leaves
        ("GET", f"{base}/app/egress", "Cevil", None, None, "", None),
        ("POST", base, me, "application/json;ty=16",
         {"m2m:csr": {"rn": me[1:], "csi": me, "cb": me, "poa": [a.public], "rr": True}},
         ALLOW, [a.expect_poa]),
        ("PUT", f"{base}/app/egress", me, "application/json", {"m2m:cnt": {"lbl": ["e"]}},
         ALLOW, None),
    ]


def egress_load(a):
    while True:  # soak.sh writes "start until" once every process is up
        try:
            start, a.until = map(float, open(a.schedule).read().split())
            break
        except (OSError, ValueError):
            time.sleep(0.1)
    time.sleep(max(0.0, start - time.time()))
    client = Client(a.egress)
    log = Log(a.egress_log)
    plan = egress_plan(a)
    seq = 0
    for _ in pace(a.rate):
        if time.time() >= a.until:
            break
        method, path, origin, ctype, body, expect, poa = plan[seq % len(plan)]
        seq += 1
        headers = {"X-M2M-RI": f"egress{a.cse_id.replace('/', '-')}-{seq}",
                   "X-M2M-Origin": origin}
        if ctype:
            headers["Content-Type"] = ctype
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
                good = (e.get("origins") == [origin] and e.get("method") == method
                        and e.get("path") == path and e.get("received_poa") == poa)
                if not good:
                    print(f"BAD ECHO {method} {path} as {origin}: {e}", file=sys.stderr)
                return good

            outcome = classify(expect, status, rh.get("X-M2M-RSC"),
                               resp.decode("utf-8", "replace"), echo_ok)
            if outcome.startswith("wrong") or outcome.startswith("http_"):
                print(f"{time.time():.3f} {outcome}: {method} {path} as {origin} planned "
                      f"{expect or 'allow'}: {status} {resp[:300]!r}", file=sys.stderr)
        except socket.timeout:
            outcome = "timeout"
        except OSError:
            outcome = "conn_error"
        except Exception as e:  # http.client.HTTPException and the like
            outcome = "conn_error"
            print(f"{time.time():.3f} egress: {e!r}", file=sys.stderr)
        end = time.time()
        log.write(start, end, status, outcome)
        if outcome in ("conn_error", "timeout"):
            time.sleep(0.05)
    client.close()
    log.close()


def main():
    global CSE_ID
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("--cse-id", default="/id-in")
    p.add_argument("--egress")
    p.add_argument("--peer-id")
    p.add_argument("--peer-name")
    p.add_argument("--ae-prefix", default="C")
    p.add_argument("--public")
    p.add_argument("--expect-poa")
    p.add_argument("--egress-log")
    p.add_argument("--schedule", help='file with "start until" (Unix times) of the egress load')
    p.add_argument("--rate", type=float, default=20)
    a = p.parse_args()
    CSE_ID = a.cse_id
    server = Server(("127.0.0.1", a.port), Echo)
    if a.egress:
        threading.Thread(target=egress_load, args=(a,), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
