"""The built-in scripted client: requests at given times on kept connections, as a pool does.

A connection pool (an HTTP keep-alive pool, a database pool) opens a connection for its
first request and keeps it for the next. This client does the same with ``pool``
connections used in turn: each request goes on its connection at its time (or when the
request before it is done), and waits for its answer. What ends the wait is the request's
outcome:

* ``answer``: the answer line came back;
* ``reset``: ``ECONNRESET`` or ``EPIPE``, on the send or the read (an RST came back, or
  had come earlier and reset the idle socket);
* ``retransmit_timeout``: ``ETIMEDOUT`` while the request was still unacknowledged: the
  kernel retransmitted it until ``tcp_retries2`` or ``TCP_USER_TIMEOUT`` made it give up;
* ``keepalive_failed``: ``ETIMEDOUT`` with nothing unacknowledged (keepalive probes);
* ``timeout``: our own timeout; ``closed``: a FIN instead of an answer.

With ``retry`` N, a request that met a reset is sent again on a new connection, up to N
times: a pool's "stale connection" retry. Each attempt's outcome is kept: ``reset+answer``.
The pool's own habits, each optional: ``discard_after`` closes a connection idle that long
when it is next needed (httpx's keep-alive expiry); ``ping_every`` sends a ``PING`` line,
which the server answers at once, on a connection idle that long (HikariCP's keepalive, AMQP
heartbeats); ``validate`` checks a connection idle over ``validate_bypass`` with a ping
before the request, and a failed check (its outcome is the request's first attempt) makes
the request go on a new connection (HikariCP's ``isValid``).
"""

from __future__ import annotations

import errno
import select
import socket
import time

from simulator.core.configs import PoolClientConfig
from simulator.core.messages import Kind
from simulator.workloads import config_from_argv, report
from simulator.workloads.client import configure_keepalive
from simulator.workloads.server import unacked_bytes

SOURCE = "client"
POLL = 0.01
"""Wall seconds between two looks at the send queue while waiting (to tell a
retransmission give-up from a keepalive one)."""
RESET_ERRORS = (errno.ECONNRESET, errno.EPIPE)


class Pool:
    def __init__(self, cfg: PoolClientConfig) -> None:
        self.cfg = cfg
        self.sockets: list[socket.socket | None] = [None] * cfg.pool

    def connection(self, slot: int) -> socket.socket | None:
        """The slot's connection, opened if it has none (None: the connect failed)."""
        sock = self.sockets[slot]
        if sock is not None:
            return sock
        cfg = self.cfg
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        how = configure_keepalive(sock, cfg.keepalive, cfg.idle, cfg.interval, cfg.count,
                                  cfg.user_timeout_ms)
        sock.settimeout(10.0)
        try:
            sock.connect((cfg.host, cfg.port))
        except OSError as exc:
            sock.close()
            name = errno.errorcode.get(exc.errno or 0, "error")
            report(SOURCE, Kind.CONNECT_FAILED, f"connection {slot + 1}: connect failed: "
                   f"{exc.strerror} ({name})", error=name)
            return None
        local = sock.getsockname()
        report(SOURCE, Kind.CONNECTED, f"connection {slot + 1} opened from {local[0]}:"
               f"{local[1]}; {how}", connection=slot + 1)
        self.sockets[slot] = sock
        return sock

    def drop(self, slot: int) -> None:
        sock = self.sockets[slot]
        if sock is not None:
            sock.close()
        self.sockets[slot] = None

    def close(self) -> None:
        for slot in range(len(self.sockets)):
            self.drop(slot)


def exchange(sock: socket.socket, request: bytes, timeout: float) -> str:
    """Send one request and wait for its answer: the outcome (see the module docstring)."""
    started = time.monotonic()
    acknowledged = False
    received = b""
    try:
        sock.sendall(request)
        while not received.endswith(b"\n"):
            remaining = started + timeout - time.monotonic()
            if remaining <= 0:
                return "timeout"
            readable, _, _ = select.select([sock], [], [], min(remaining, POLL))
            if not acknowledged and unacked_bytes(sock) == 0:
                acknowledged = True
            if readable:
                chunk = sock.recv(65536)
                if not chunk:
                    return "closed"
                received += chunk
        return "answer"
    except OSError as exc:
        if exc.errno in RESET_ERRORS:
            return "reset"
        if exc.errno == errno.ETIMEDOUT:
            return "keepalive_failed" if acknowledged else "retransmit_timeout"
        return "error"


WORDS = {
    "answer": (Kind.ANSWER, "answer received"),
    "reset": (Kind.RESET, "connection reset (ECONNRESET/EPIPE)"),
    "retransmit_timeout": (Kind.RETRANSMIT_TIMEOUT, "the kernel gave up retransmitting the "
                           "request (ETIMEDOUT)"),
    "keepalive_failed": (Kind.KEEPALIVE_FAILED, "the kernel gave up the connection "
                         "(ETIMEDOUT): keepalive probes went unanswered"),
    "timeout": (Kind.TIMEOUT, "gave up waiting: client timeout reached, no answer"),
    "closed": (Kind.CLOSED, "the connection was closed (FIN) without an answer"),
    "error": (Kind.ERROR, "socket error"),
    "connect_failed": (Kind.CONNECT_FAILED, "no connection"),
}


class Script:
    """The client's walk through its requests, with the pool's own habits: closing a
    connection idle too long, pinging idle ones, checking one before handing it out."""

    def __init__(self, cfg: PoolClientConfig) -> None:
        self.cfg = cfg
        self.pool = Pool(cfg)
        self.last_use: list[float] = [0.0] * cfg.pool

    def idle_until(self, deadline: float) -> None:
        """Wait until ``deadline``, pinging every connection idle ``ping_every``."""
        cfg = self.cfg
        while True:
            now = time.monotonic()
            due = deadline
            if cfg.ping_every is not None:
                for slot, sock in enumerate(self.pool.sockets):
                    if sock is None:
                        continue
                    if now - self.last_use[slot] >= cfg.ping_every:
                        self.ping(slot, sock, "keepalive ping")
                    due = min(due, self.last_use[slot] + cfg.ping_every)
            if now >= deadline:
                return
            time.sleep(max(0.0, min(due, deadline) - time.monotonic()))

    def ping(self, slot: int, sock: socket.socket, what: str) -> str:
        """A ping on an idle connection (data the server answers at once); a failed one
        costs the pool the connection."""
        outcome = exchange(sock, b"PING\n", self.cfg.validate or self.cfg.timeout)
        report(SOURCE, Kind.PING, f"connection {slot + 1}: {what}: {outcome}",
               connection=slot + 1, outcome=outcome)
        if outcome == "answer":
            self.last_use[slot] = time.monotonic()
        else:
            self.pool.drop(slot)
        return outcome

    def checkout(self, slot: int, label: str) -> tuple[socket.socket | None, str | None]:
        """The slot's connection as the pool hands it out, and the outcome of a check that
        failed on the way (None: no check failed)."""
        cfg, now = self.cfg, time.monotonic()
        sock = self.pool.sockets[slot]
        idle = now - self.last_use[slot]
        if sock is not None and cfg.discard_after is not None and idle >= cfg.discard_after:
            report(SOURCE, Kind.CLIENT_CLOSED, f"{label}: the pool closes connection "
                   f"{slot + 1}, idle longer than it keeps connections", connection=slot + 1)
            self.pool.drop(slot)
            sock = None
        failed = None
        if sock is not None and cfg.validate is not None and idle > cfg.validate_bypass:
            outcome = self.ping(slot, sock, "the pool checks it before use")
            if outcome != "answer":
                failed, sock = outcome, None
        return sock or self.pool.connection(slot), failed

    def request(self, i: int) -> str:
        """Request ``i`` with its attempts: ``reset+answer``..."""
        cfg, slot = self.cfg, i % self.cfg.pool
        attempts: list[str] = []
        retries = 0
        while True:
            again = f" (retry {len(attempts)})" if attempts else ""
            fresh = self.pool.sockets[slot] is None
            sock, failed = self.checkout(slot, f"request {i + 1}{again}")
            if failed is not None:
                attempts.append(failed)
                fresh = True
            if sock is None:
                attempts.append("connect_failed")
                break
            sent = time.monotonic()
            planned = cfg.model_at[i] if i < len(cfg.model_at) else cfg.at[i]
            report(SOURCE, Kind.REQUEST_SENT, f"request {i + 1}{again} on connection "
                   f"{slot + 1} ({'new' if fresh else 'reused'}), planned at {planned:g} s",
                   request=i + 1, attempt=len(attempts) + 1, connection=slot + 1,
                   reused=not fresh)
            outcome = exchange(sock, f"{cfg.request} #{i + 1}\n".encode(), cfg.timeout)
            kind, words = WORDS[outcome]
            report(SOURCE, kind, f"request {i + 1}{again}: {words}", request=i + 1,
                   attempt=len(attempts) + 1, outcome=outcome, waited=time.monotonic() - sent)
            attempts.append(outcome)
            if outcome == "answer":
                self.last_use[slot] = time.monotonic()
            else:
                self.pool.drop(slot)  # a pool discards a connection that failed
            if outcome != "reset" or retries == cfg.retry:
                break
            retries += 1
        return "+".join(attempts)


def run(cfg: PoolClientConfig) -> str:
    script = Script(cfg)
    outcomes: list[str] = []
    start = time.monotonic()
    try:
        for i, at in enumerate(cfg.at):
            script.idle_until(start + at)
            outcomes.append(script.request(i))
    finally:
        script.pool.close()
    return ", ".join(outcomes)


def main(argv: list[str] | None = None) -> int:
    cfg = config_from_argv("natsim-pool-client", __doc__, argv, PoolClientConfig)
    report(SOURCE, Kind.READY, "client started")
    outcome = run(cfg)
    report(SOURCE, Kind.OUTCOME, outcome, outcome=outcome)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
