"""The built-in client: connect, send one request, wait for the answer with a timeout.

Keepalive is configured exactly as an application would: ``SO_KEEPALIVE`` alone (the
namespace's ``net.ipv4.tcp_keepalive_*`` sysctls then decide the timing) or with
``TCP_KEEPIDLE``/``TCP_KEEPINTVL``/``TCP_KEEPCNT`` on the socket. The outcome is what ``recv``
returned: the answer, ``ECONNRESET``, ``ETIMEDOUT`` (the kernel gave up after unanswered
keepalive probes) or our own timeout.
"""

from __future__ import annotations

import errno
import socket
import time

from simulator.core.messages import Kind
from simulator.workloads import config_from_argv, report

SOURCE = "client"


def configure_keepalive(sock: socket.socket, mode: str, idle: int | None, interval: int | None,
                        count: int | None) -> str:
    if mode == "off":
        return "keepalive off (no SO_KEEPALIVE)"
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if mode == "os":
        return "SO_KEEPALIVE on, timing from the namespace's sysctls"
    assert idle is not None and interval is not None and count is not None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
    return f"SO_KEEPALIVE on, TCP_KEEPIDLE={idle} TCP_KEEPINTVL={interval} TCP_KEEPCNT={count}"


def run(host: str, port: int, request: str, timeout: float, keepalive: str,
        idle: int | None, interval: int | None, count: int | None) -> str:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    how = configure_keepalive(sock, keepalive, idle, interval, count)
    sock.settimeout(10.0)
    try:
        sock.connect((host, port))
    except OSError as exc:
        report(SOURCE, Kind.CONNECT_FAILED, f"connect to {host}:{port} failed: {exc}")
        return "connect_failed"
    local = sock.getsockname()
    report(SOURCE, Kind.CONNECTED, f"connected from {local[0]}:{local[1]} to {host}:{port}; {how}")
    sock.sendall(request.encode() + b"\n")
    started = time.monotonic()
    report(SOURCE, Kind.REQUEST_SENT, f"request sent: {request!r}; waiting for the answer")
    deadline = started + timeout
    received = b""
    outcome = "timeout"
    try:
        while not received.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                outcome = "closed"
                report(SOURCE, Kind.CLOSED, "the server closed the connection without an answer")
                break
            received += chunk
        else:
            outcome = "answer"
            report(SOURCE, Kind.ANSWER, f"answer received: {received.decode(errors='replace')!r}",
                   waited=time.monotonic() - started)
    except TimeoutError:
        report(SOURCE, Kind.TIMEOUT, "gave up waiting: client timeout reached, no answer",
               waited=time.monotonic() - started)
    except OSError as exc:
        if exc.errno == errno.ECONNRESET:
            outcome = "reset"
            report(SOURCE, Kind.RESET, "connection reset (ECONNRESET) while waiting for the answer",
                   waited=time.monotonic() - started)
        elif exc.errno == errno.ETIMEDOUT:
            outcome = "keepalive_failed"
            report(SOURCE, Kind.KEEPALIVE_FAILED, "the kernel gave up the connection (ETIMEDOUT): "
                   "keepalive probes went unanswered", waited=time.monotonic() - started)
        else:
            outcome = "error"
            report(SOURCE, Kind.ERROR, f"error while waiting: {exc}")
    finally:
        sock.close()
    return outcome


def main(argv: list[str] | None = None) -> int:
    cfg = config_from_argv("natsim-client", __doc__, argv)
    outcome = run(cfg["host"], int(cfg["port"]), cfg["request"], float(cfg["timeout"]),
                  cfg["keepalive"], cfg.get("idle"), cfg.get("interval"), cfg.get("count"))
    report(SOURCE, Kind.OUTCOME, outcome, outcome=outcome)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
