"""The built-in pool server: every connection, every request answered after a delay.

The scripted client (:mod:`simulator.workloads.pool_client`) keeps connections and opens new
ones after a reset, so this server accepts any number, reads request lines on each, and
answers each after ``delay``. It watches every answer it sent as the one-request server does
(:func:`~simulator.workloads.server.watch_answer`'s rules): ``delivered`` once the client's
kernel acknowledged every byte, ``reset`` on ``ECONNRESET``/``EPIPE``, ``unacknowledged``
if neither happened when it stops. It serves until asked to stop (SIGTERM: the run stops it
once the client has finished) or until its own limit; its outcome is its answers' fates in
the order it sent them (``delivered, delivered``), or ``no_request``. A ``PING`` line (a
pool's keepalive or check) is answered ``PONG`` at once and is not one of the answers.
"""

from __future__ import annotations

import errno
import selectors
import signal
import socket
import time
from dataclasses import dataclass, field
from types import FrameType

from simulator.core.configs import PoolServerConfig
from simulator.core.messages import Kind
from simulator.workloads import config_from_argv, report
from simulator.workloads.server import TCP_CLOSE_WAIT, TCP_ESTABLISHED, tcp_state, unacked_bytes

SOURCE = "server"
TICK = 0.005


@dataclass
class Connection:
    sock: socket.socket
    peer: str
    buffer: bytes = b""
    due: list[float] = field(default_factory=list)
    """When each request read so far is to be answered (wall, monotonic)."""
    watching: list[int] = field(default_factory=list)
    """Indexes (into the server's fates) of answers sent and not yet settled."""
    open: bool = True


class PoolServer:
    def __init__(self, cfg: PoolServerConfig) -> None:
        self.cfg = cfg
        self.fates: list[str] = []
        self.stopping = False
        self.selector = selectors.DefaultSelector()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("0.0.0.0", cfg.port))
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.connections: list[Connection] = []

    def stop(self, _signum: int, _frame: FrameType | None) -> None:
        self.stopping = True

    def _accept(self) -> None:
        sock, peer = self.listener.accept()
        sock.setblocking(False)
        conn = Connection(sock, f"{peer[0]}:{peer[1]}")
        self.connections.append(conn)
        self.selector.register(sock, selectors.EVENT_READ, conn)
        report(SOURCE, Kind.ACCEPTED, f"accepted a connection from {conn.peer}")

    def _read(self, conn: Connection) -> None:
        try:
            chunk = conn.sock.recv(65536)
        except OSError as exc:
            self._settle(conn, "reset" if exc.errno in (errno.ECONNRESET, errno.EPIPE)
                         else "error")
            return
        if not chunk:
            self._watch(conn)  # its acknowledgement came before its FIN
            report(SOURCE, Kind.CLIENT_CLOSED, f"{conn.peer} closed the connection")
            self._close(conn)
            return
        conn.buffer += chunk
        while b"\n" in conn.buffer:
            line, conn.buffer = conn.buffer.split(b"\n", 1)
            if line == b"PING":  # a pool's ping: answered at once, not one of the answers
                try:
                    conn.sock.sendall(b"PONG\n")
                except OSError:
                    self._settle(conn, "reset")
                    return
                continue
            conn.due.append(time.monotonic() + self.cfg.delay)
            report(SOURCE, Kind.REQUEST_RECEIVED, f"request {line.decode(errors='replace')!r}"
                   f" from {conn.peer}; answering after {self.cfg.delay_label}")

    def _answer_due(self, conn: Connection, now: float) -> None:
        while conn.open and conn.due and conn.due[0] <= now:
            conn.due.pop(0)
            try:
                conn.sock.sendall(self.cfg.answer.encode() + b"\n")
            except OSError as exc:
                report(SOURCE, Kind.SEND_FAILED, f"sending the answer to {conn.peer} failed: "
                       f"{exc}")
                self.fates.append("reset" if exc.errno in (errno.ECONNRESET, errno.EPIPE)
                                  else "error")
                self._close(conn)
                return
            conn.watching.append(len(self.fates))
            self.fates.append("unacknowledged")
            report(SOURCE, Kind.ANSWER_SENT, f"answer sent to {conn.peer}")

    def _watch(self, conn: Connection) -> None:
        if not conn.watching:
            return
        try:
            state = tcp_state(conn.sock)
            if state in (TCP_ESTABLISHED, TCP_CLOSE_WAIT) and unacked_bytes(conn.sock) == 0:
                for index in conn.watching:
                    self.fates[index] = "delivered"
                conn.watching.clear()
                report(SOURCE, Kind.DELIVERED, f"answer acknowledged by {conn.peer}'s kernel")
        except OSError:
            return

    def _settle(self, conn: Connection, fate: str) -> None:
        for index in conn.watching:
            self.fates[index] = fate
        if conn.watching and fate == "reset":
            report(SOURCE, Kind.RESET, f"connection from {conn.peer} reset after the answer")
        conn.watching.clear()
        self._close(conn)

    def _close(self, conn: Connection) -> None:
        if conn.open:
            conn.open = False
            self.selector.unregister(conn.sock)
            conn.sock.close()

    def serve(self) -> str:
        report(SOURCE, Kind.READY, f"listening on port {self.cfg.port}")
        deadline = time.monotonic() + self.cfg.limit
        while not self.stopping and time.monotonic() < deadline:
            for key, _ in self.selector.select(TICK):
                if key.data is None:
                    self._accept()
                else:
                    self._read(key.data)
            now = time.monotonic()
            for conn in self.connections:
                if conn.open:
                    self._answer_due(conn, now)
                    self._watch(conn)
        for conn in self.connections:  # a last look: acknowledgements already in
            if conn.open:
                self._watch(conn)
        if self.stopping is False:
            report(SOURCE, Kind.ERROR, "stopped by its own limit, not by the run")
        for fate in self.fates:
            if fate == "unacknowledged":
                report(SOURCE, Kind.UNACKNOWLEDGED, "an answer was never acknowledged")
                break
        return ", ".join(self.fates) or "no_request"


def main(argv: list[str] | None = None) -> int:
    cfg = config_from_argv("natsim-pool-server", __doc__, argv, PoolServerConfig)
    server = PoolServer(cfg)
    signal.signal(signal.SIGTERM, server.stop)
    outcome = server.serve()
    report(SOURCE, Kind.OUTCOME, outcome, outcome=outcome)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
