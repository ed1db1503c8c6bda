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

from simulator.core.configs import ClientConfig
from simulator.core.messages import Kind
from simulator.workloads import config_from_argv, peer_name, report

SOURCE = "client"


def configure_keepalive(sock: socket.socket, mode: str, idle: int | None, interval: int | None,
                        count: int | None, user_timeout_ms: int | None = None) -> str:
    """The socket's keepalive, and ``TCP_USER_TIMEOUT`` (which bounds unacknowledged data
    and, with keepalive on, replaces the probe count: see ``tcp_keepalive_timer``)."""
    user = ""
    if user_timeout_ms is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, user_timeout_ms)
        user = f"; TCP_USER_TIMEOUT={user_timeout_ms} ms"
    if mode == "off":
        return "keepalive off (no SO_KEEPALIVE)" + user
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if mode == "os":
        return "SO_KEEPALIVE on, timing from the namespace's sysctls" + user
    assert idle is not None and interval is not None and count is not None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
    return (f"SO_KEEPALIVE on, TCP_KEEPIDLE={idle} TCP_KEEPINTVL={interval} "
            f"TCP_KEEPCNT={count}{user}")


EAI_NAMES = {socket.EAI_AGAIN: "EAI_AGAIN", socket.EAI_NONAME: "EAI_NONAME"}
DOTNET = {"EAI_AGAIN": "Resource temporarily unavailable"}
"""How .NET words the same failure (seed 002's error message)."""


def _resolve(host: str) -> tuple[str | None, str]:
    """The server's address, or None and the error's name (``EAI_AGAIN``...).

    Either family: the resolver's first answer, which for a host with only an IPv6
    address is the IPv6 one (RFC 6724's sort puts a destination it has no source for last).
    """
    try:
        found = socket.getaddrinfo(host, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
        return str(found[0][4][0]), ""
    except socket.gaierror as exc:
        code = exc.errno or 0
        return None, EAI_NAMES.get(code, f"EAI {code}") + f": {exc.strerror}"


def connect(host: str, port: int,
            keepalive: tuple[str, int | None, int | None, int | None, int | None],
            retries: int = 0, backoff: float = 1.0, resolve: str = "each"
            ) -> tuple[socket.socket, str] | None:
    """Connect, trying ``1 + retries`` times at ``backoff * (2**i - 1)`` wall seconds from
    the start; with ``resolve: once`` the name is looked up at the first attempt only and
    that answer (or failure) is kept, as a client that sets up its networking once does."""
    start = time.monotonic()
    cached: tuple[str | None, str] | None = None
    for attempt in range(retries + 1):
        time.sleep(max(0.0, start + backoff * (2 ** attempt - 1) - time.monotonic()))
        label = f"attempt {attempt + 1} of {retries + 1}: " if retries else ""
        if cached is None or resolve == "each":
            cached = _resolve(host)
        address, error = cached
        if address is None:
            name = error.split(":")[0]
            said = f" (.NET: '{DOTNET[name]}')" if name in DOTNET else ""
            report(SOURCE, Kind.CONNECT_FAILED, f"{label}resolving {host} failed: {error}"
                   f"{said}" + (" (kept from the first lookup)" if resolve == "once"
                               and attempt else ""), error=name, attempt=attempt + 1)
            continue
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        how = configure_keepalive(sock, *keepalive)
        sock.settimeout(10.0)
        try:
            sock.connect((address, port))
        except OSError as exc:
            sock.close()
            name = errno.errorcode.get(exc.errno or 0, "error")
            report(SOURCE, Kind.CONNECT_FAILED, f"{label}connect to {host}:{port} failed: "
                   f"{exc.strerror} ({name})", error=name, attempt=attempt + 1)
            continue
        return sock, how
    return None


def run(host: str, port: int, request: str, timeout: float, keepalive: str,
        idle: int | None, interval: int | None, count: int | None, retries: int = 0,
        backoff: float = 1.0, resolve: str = "each", user_timeout_ms: int | None = None
        ) -> str:
    connected = connect(host, port, (keepalive, idle, interval, count, user_timeout_ms),
                        retries, backoff, resolve)
    if connected is None:
        return "connect_failed"
    sock, how = connected
    local = sock.getsockname()
    report(SOURCE, Kind.CONNECTED, f"connected from {peer_name(local)} to {host}:{port}; {how}")
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
                report(SOURCE, Kind.CLOSED, "the connection was closed (FIN) without an answer")
                break
            received += chunk
        else:
            outcome = "answer"
            report(SOURCE, Kind.ANSWER, f"answer received: {received.decode(errors='replace')!r}",
                   waited=time.monotonic() - started)
    except TimeoutError as exc:
        # The kernel's ETIMEDOUT (keepalive probes unanswered) is a TimeoutError too in
        # Python (PEP 3151); only the socket's own timeout has no errno.
        if exc.errno == errno.ETIMEDOUT:
            outcome = "keepalive_failed"
            report(SOURCE, Kind.KEEPALIVE_FAILED, "the kernel gave up the connection "
                   "(ETIMEDOUT): keepalive probes went unanswered",
                   waited=time.monotonic() - started)
        else:
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
    cfg = config_from_argv("natsim-client", __doc__, argv, ClientConfig)
    report(SOURCE, Kind.READY, "client started")
    outcome = run(cfg.host, cfg.port, cfg.request, cfg.timeout, cfg.keepalive, cfg.idle,
                  cfg.interval, cfg.count, cfg.retries, cfg.backoff, cfg.resolve,
                  cfg.user_timeout_ms)
    report(SOURCE, Kind.OUTCOME, outcome, outcome=outcome)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
