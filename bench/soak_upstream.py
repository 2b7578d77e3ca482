#!/usr/bin/env python3
"""Echo "CSE" for bench/soak.sh: HTTP/1.1 keep-alive on 127.0.0.1:PORT.

Every request is answered 200 with X-M2M-RSC 2000, the request's X-M2M-RI echoed, and a JSON
body naming what it received: {"origins": [every X-M2M-Origin], "method", "path", "body_len"}.
The soak clients check that exactly one originator, the proven one, arrived.

    soak_upstream.py PORT
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # head and body are two writes: without this, Nagle + delayed ACK add 40 ms to each answer
    disable_nagle_algorithm = True
    server_version = "soak-echo"
    sys_version = ""

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        out = json.dumps(
            {
                "origins": self.headers.get_all("X-M2M-Origin") or [],
                "method": self.command,
                "path": self.path,
                "body_len": len(body),
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

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args):  # quiet
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


def main():
    port = int(sys.argv[1])
    Server(("127.0.0.1", port), Echo).serve_forever()


if __name__ == "__main__":
    main()
