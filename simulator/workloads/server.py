"""The built-in server: accept one connection, read the request, answer after a delay.

After sending, it watches its own socket to learn the answer's fate: delivered once the send
queue is empty (``SIOCOUTQ`` is 0: the client's kernel acknowledged every byte), reset if the
socket reports ``ECONNRESET``, unacknowledged if neither happens before its wait limit (a
silently dropped answer is retransmitted by the kernel, whose timers are not compressed).
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import struct
import time

from simulator.core.configs import ServerConfig
from simulator.core.messages import Kind
from simulator.workloads import config_from_argv, peer_name, report

SOURCE = "server"
SIOCOUTQ = 0x5411


TCP_ESTABLISHED, TCP_CLOSE_WAIT = 1, 8


def unacked_bytes(sock: socket.socket) -> int:
    raw = fcntl.ioctl(sock.fileno(), SIOCOUTQ, struct.pack("i", 0))
    return int(struct.unpack("i", raw)[0])


def tcp_state(sock: socket.socket) -> int:
    """The kernel's TCP state (``tcpi_state``, the first byte of ``TCP_INFO``)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


def client_left(conn: socket.socket) -> bool:
    """Whether the client has already closed its side (a FIN is waiting to be read); a
    reset waiting there is left for the send and the watch to find."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        return bool(readable) and conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return False


def watch_answer(conn: socket.socket, limit: float, left_before: bool = False) -> str:
    """Wait until the answer is acknowledged, reset, or ``limit`` wall seconds pass.

    The client's FIN ends the watch as ``unacknowledged`` when it comes while the answer is
    outstanding: the client left without it. When the client had left *before* the answer
    was sent (``left_before``), the answer goes to its closed socket, and the watch waits
    for what comes back: the RST of that socket (or an acknowledgement, from a client that
    only shut down its sending side).
    """
    deadline = time.monotonic() + limit
    delivered = False
    if left_before:
        report(SOURCE, Kind.CLIENT_CLOSED, "the client had closed the connection before the "
               "answer")
    while time.monotonic() < deadline:
        try:
            closed_now = False
            if left_before:
                time.sleep(0.005)
            else:
                readable, _, _ = select.select([conn], [], [], 0.005)
                closed_now = bool(readable) and not conn.recv(65536)
            # The send queue is only meaningful on a live connection: after a reset it is
            # purged, and an empty queue would look like a delivery.
            if (not delivered and tcp_state(conn) in (TCP_ESTABLISHED, TCP_CLOSE_WAIT)
                    and unacked_bytes(conn) == 0):
                delivered = True
                report(SOURCE, Kind.DELIVERED, "answer acknowledged by the client's kernel")
            if closed_now or (left_before and delivered):
                if closed_now:
                    report(SOURCE, Kind.CLIENT_CLOSED, "the client closed the connection")
                return "delivered" if delivered else "unacknowledged"
            if left_before:
                error = conn.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    raise OSError(error, os.strerror(error))
        except OSError as exc:
            if exc.errno in (errno.ECONNRESET, errno.EPIPE):  # an RST (EPIPE: after a FIN)
                name = errno.errorcode[exc.errno]
                report(SOURCE, Kind.RESET, f"connection reset ({name}) after sending the answer")
                return "reset"
            report(SOURCE, Kind.ERROR, f"socket error after sending the answer: {exc}")
            return "error"
    if delivered:
        return "delivered"
    report(SOURCE, Kind.UNACKNOWLEDGED, "the answer was never acknowledged (still retransmitting)")
    return "unacknowledged"


def run(port: int, delay: float, answer: str, wait_limit: float, delay_label: str = "",
        accept_limit: float | None = None, ipv6: bool = False) -> str:
    listener = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("::" if ipv6 else "0.0.0.0", port))
    listener.listen(16)
    report(SOURCE, Kind.READY, f"listening on port {port}")
    # a client that retries may connect late (its last attempt): wait for that one
    listener.settimeout(accept_limit if accept_limit is not None else wait_limit)
    try:
        conn, peer = listener.accept()
    except TimeoutError:
        report(SOURCE, Kind.NO_CLIENT, "no client connected")
        return "no_client"
    report(SOURCE, Kind.ACCEPTED, f"accepted a connection from {peer_name(peer)}")
    conn.settimeout(wait_limit)
    request = b""
    while not request.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            report(SOURCE, Kind.CLOSED, "the client closed before sending a request")
            return "no_request"
        request += chunk
    received = time.monotonic()
    report(SOURCE, Kind.REQUEST_RECEIVED,
           f"request received; working for {delay_label} before answering")
    time.sleep(max(0.0, received + delay - time.monotonic()))
    left = client_left(conn)
    try:
        conn.sendall(answer.encode() + b"\n")
    except OSError as exc:
        report(SOURCE, Kind.SEND_FAILED, f"sending the answer failed at once: {exc}")
        return "reset" if exc.errno in (errno.ECONNRESET, errno.EPIPE) else "error"
    report(SOURCE, Kind.ANSWER_SENT, "answer sent")
    outcome = watch_answer(conn, wait_limit, left_before=left)
    conn.close()
    listener.close()
    return outcome


def main(argv: list[str] | None = None) -> int:
    cfg = config_from_argv("natsim-server", __doc__, argv, ServerConfig)
    outcome = run(cfg.port, cfg.delay, cfg.answer, cfg.wait_limit, cfg.delay_label,
                  cfg.accept_limit, cfg.ipv6)
    report(SOURCE, Kind.OUTCOME, outcome, outcome=outcome)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
