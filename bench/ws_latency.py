#!/usr/bin/env python3
"""Added latency of the WebSocket gate per oneM2M message (issue 8).

Round trips of one request primitive at a time, over one connection, against a WebSocket echo
"CSE" on 127.0.0.1: first straight to it (plain TCP), then through m2m-auth-proxy (TLS with
the dev client certificate, `fr` rewritten in overwrite mode). Both clients are this same
Python code, so the difference of the medians is what the proxy adds (TLS record work
included). Stdlib only.

    bench/ws_latency.py [--bin target/release/m2m-auth-proxy] [--messages 5000] [--cbor]
    bench/ws_latency.py --opaque   # same traffic as an uninspected WebSocket (allow_opaque):
                                   # the difference to the default run is the gate's own cost

Prints one table row per path and the added latency; nothing is written to disk except a
temporary config.
"""

import argparse
import base64
import json
import os
import signal
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import hashlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return buf


def read_head(sock):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(1)
        if not chunk:
            raise EOFError("connection closed in the head")
        buf += chunk
    return buf.decode("latin-1")


def frame(opcode, payload, mask):
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


def read_frame(sock):
    b0, b1 = read_exact(sock, 2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack(">H", read_exact(sock, 2))[0]
    elif n == 127:
        n = struct.unpack(">Q", read_exact(sock, 8))[0]
    key = read_exact(sock, 4) if b1 & 0x80 else None
    payload = read_exact(sock, n)
    if key:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return b0 & 0x0F, payload


def echo_upstream(listener):
    """Accepts connections forever; echoes each data frame back (one thread per connection)."""

    def serve(conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            head = read_head(conn)
            key = protocol = None
            for line in head.split("\r\n"):
                name, _, value = line.partition(":")
                if name.lower() == "sec-websocket-key":
                    key = value.strip()
                if name.lower() == "sec-websocket-protocol":
                    protocol = value.split(",")[0].strip()
            accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
            resp = (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
            )
            if protocol:
                resp += f"Sec-WebSocket-Protocol: {protocol}\r\n"
            conn.sendall((resp + "\r\n").encode())
            while True:
                opcode, payload = read_frame(conn)
                if opcode == 8:
                    conn.sendall(frame(8, payload, False))
                    return
                conn.sendall(frame(opcode, payload, False))
        except (EOFError, OSError):
            pass
        finally:
            conn.close()

    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def upgrade(sock, protocol):
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
        ).encode()
    )
    head = read_head(sock)
    if not head.startswith("HTTP/1.1 101"):
        raise SystemExit(f"upgrade refused: {head.splitlines()[0]}")


def round_trips(sock, messages, payload, opcode):
    times = []
    for _ in range(messages):
        t0 = time.perf_counter()
        sock.sendall(frame(opcode, payload, True))
        got, _ = read_frame(sock)
        times.append(time.perf_counter() - t0)
        if got != opcode:
            raise SystemExit(f"unexpected opcode {got}")
    return times


def cbor_primitive(d):
    """A tiny CBOR encoder for a flat map of text keys to text/int values."""

    def head(major, n):
        if n < 24:
            return bytes([major << 5 | n])
        if n < 256:
            return bytes([major << 5 | 24, n])
        return bytes([major << 5 | 25]) + struct.pack(">H", n)

    out = head(5, len(d))
    for k, v in d.items():
        kb = k.encode()
        out += head(3, len(kb)) + kb
        if isinstance(v, int):
            out += head(0, v)
        else:
            vb = v.encode()
            out += head(3, len(vb)) + vb
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/m2m-auth-proxy"))
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--cbor", action="store_true")
    ap.add_argument("--opaque", action="store_true")
    args = ap.parse_args()

    primitive = {
        "op": 2,
        "to": "/id-in/cse-in/Cae-sensor1/temperature/la",
        "fr": "CAdmin",
        "rqi": "bench-0001",
        "rvi": "3",
    }
    if args.cbor:
        protocol, opcode, payload = "oneM2M.cbor", 2, cbor_primitive(primitive)
    else:
        protocol, opcode, payload = "oneM2M.json", 1, json.dumps(primitive).encode()
    if args.opaque:
        protocol = "x-uninspected"

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    upstream_port = listener.getsockname()[1]
    threading.Thread(target=echo_upstream, args=(listener,), daemon=True).start()

    listen, admin = free_port(), free_port()
    certs = os.path.join(ROOT, "certs/dev")
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "proxy.yaml")
        with open(config, "w") as f:
            f.write(
                f'listen: "127.0.0.1:{listen}"\nadmin: "127.0.0.1:{admin}"\nthreads: 1\n'
                f'upstream: "http://127.0.0.1:{upstream_port}"\n'
                f"tls:\n  cert: {certs}/server.pem\n  key: {certs}/server.key\n"
                f"  client_ca: {certs}/ca.pem\n  client_cert: required\n"
                "auth:\n  methods: [mtls]\n  mtls:\n    identity: [uri]\n"
                "originator:\n  mode: overwrite\nlog:\n  access: false\n"
                "shutdown:\n  grace_period: 1s\n"
                + ("websocket:\n  allow_opaque: true\n" if args.opaque else "")
            )
        proxy = subprocess.Popen(
            [args.bin, "--config", config], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            deadline = time.time() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", listen), timeout=1).close()
                    break
                except OSError:
                    if time.time() > deadline or proxy.poll() is not None:
                        raise SystemExit("proxy did not start")
                    time.sleep(0.05)

            direct = socket.create_connection(("127.0.0.1", upstream_port))
            direct.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            upgrade(direct, protocol)

            ctx = ssl.create_default_context(cafile=f"{certs}/ca.pem")
            ctx.load_cert_chain(f"{certs}/client-Cae-sensor1.pem", f"{certs}/client-Cae-sensor1.key")
            raw = socket.create_connection(("127.0.0.1", listen))
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            proxied = ctx.wrap_socket(raw, server_hostname="localhost")
            upgrade(proxied, protocol)

            warm = min(500, args.messages)
            round_trips(direct, warm, payload, opcode)
            round_trips(proxied, warm, payload, opcode)
            rows = []
            for name, sock in (("direct (plain TCP)", direct), ("through the proxy (TLS)", proxied)):
                t = sorted(round_trips(sock, args.messages, payload, opcode))
                rows.append((name, statistics.median(t), t[int(len(t) * 0.99) - 1]))
            print(f"WebSocket round trip, {protocol}, {len(payload)}-byte primitive, "
                  f"{args.messages} messages one at a time")
            print(f"{'path':<26} {'median µs':>10} {'p99 µs':>10}")
            for name, med, p99 in rows:
                print(f"{name:<26} {med * 1e6:>10.1f} {p99 * 1e6:>10.1f}")
            added = (rows[1][1] - rows[0][1]) * 1e6
            print(f"added by the proxy (median): {added:.1f} µs per message round trip")
        finally:
            proxy.send_signal(signal.SIGTERM)
            try:
                proxy.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proxy.kill()
            listener.close()


if __name__ == "__main__":
    sys.exit(main())
