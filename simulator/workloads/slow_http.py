"""A slow HTTP server for live worlds: answers every request after a delay (wall seconds).

``natsim exec server -- python3 -m simulator.workloads.slow_http --delay 15`` stands in for a
Lambda function URL or an API that thinks for a long time, so that a real HTTP client
(curl, a browser, your SDK) can be put behind the appliance.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_handler(delay: float) -> type[BaseHTTPRequestHandler]:
    class SlowHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def handle(self) -> None:
            try:
                super().handle()
            except ConnectionResetError:  # what the appliance does to idle connections
                self.log_message("connection reset by peer")

        def do_GET(self) -> None:
            self._answer(f"the slow answer, after {delay:g} s\n".encode(), "text/plain")

        def do_POST(self) -> None:
            """An API call (an SDK's): the body is read, the answer is a JSON object."""
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._answer(b'{"answer": "the slow answer"}', "application/json")

        def _answer(self, body: bytes, content_type: str) -> None:
            time.sleep(delay)
            try:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError as exc:  # the appliance reset the connection: say so
                self.log_message("could not answer: %s", exc)

        def log_message(self, format: str, *args: object) -> None:
            print(f"slow_http: {self.address_string()} {format % args}", flush=True)

    return SlowHandler


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slow_http", description=__doc__)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--delay", type=float, default=15.0, help="wall seconds to think")
    parser.add_argument("--bind", default="0.0.0.0",
                        help="address to listen on (:: for an IPv6-only host)")
    args = parser.parse_args(argv)
    server_class = _IPv6Server if ":" in args.bind else ThreadingHTTPServer
    server = server_class((args.bind, args.port), make_handler(args.delay))
    print(f"slow_http: listening on port {args.port}, answering after {args.delay:g} s",
          flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
