"""The load generator and its server: many real TCP connections, opened at a rate and held.

The client opens ``connections`` sockets to one destination at ``rate`` per wall second,
spread over the client's addresses (one address has at most 64,512 source ports), waits at
most ``connect_timeout`` for each handshake (a SYN the appliance drops would otherwise be
retried by the kernel for two minutes), holds every established connection for ``hold``
seconds and closes them. It reports how many were established, timed out, or failed.
The server accepts and holds whatever arrives. Both raise their file-descriptor limit,
since 65,000 sockets is far past the usual 1,024.

Sockets are plain non-blocking sockets driven by asyncio's ``sock_connect``/``sock_accept``:
a stream object per connection would cost several kilobytes each. The client binds each
socket to a source port it picks itself, in order, rather than letting ``connect`` choose:
the kernel's ephemeral-port search towards one destination walks past every port already
in use, and at 30,000 held connections that search took most of the client's CPU (system
time three times the user time) and the run fell behind its schedule. A process may be capped
at far fewer descriptors than that (here: 20,000, and no CAP_SYS_RESOURCE to raise it), so
both sides split the work over forked worker processes of at most ``PER_PROCESS``
connections each: the client's workers open their shares at the same time, and the server's
listeners share the port with SO_REUSEPORT.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.queues
import os
import resource
import socket
import time
from collections.abc import Callable

from simulator.core.configs import LoadClientConfig, LoadServerConfig
from simulator.core.messages import Kind
from simulator.support.interrupts import die_with_parent
from simulator.workloads import report, role_and_config

FIRST_PORT = 1024
PER_PROCESS = int(os.environ.get("NATSIM_LOAD_PER_PROCESS", "12000"))
"""Connections per worker process (the environment variable lets tests force several)."""


def raise_fd_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, wanted)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(hard, target)))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _workers(total: int) -> int:
    return max(1, -(-total // PER_PROCESS))


def _in_workers(count: int, job: Callable[[int], dict[str, int]]) -> list[dict[str, int]]:
    """Run ``job(worker index)`` in ``count`` forked processes; their results, in order."""
    if count == 1:
        return [job(0)]
    context = multiprocessing.get_context("fork")  # fork: ``job`` may be a closure
    results: multiprocessing.queues.Queue[tuple[int, dict[str, int]]] = context.Queue()

    parent = os.getpid()

    def run(w: int) -> None:
        # a worker ends with the process that forked it (stopped with SIGTERM, or killed):
        # left behind, a server worker would keep its listener in a world that lives on
        die_with_parent()
        if os.getppid() != parent:  # the parent was gone before the line above
            os._exit(1)
        results.put((w, job(w)))

    procs = [context.Process(target=run, args=(w,)) for w in range(count)]
    for proc in procs:
        proc.start()
    collected = dict(results.get() for _ in procs)
    for proc in procs:
        proc.join()
    return [collected[w] for w in range(count)]


def client(host: str, port: int, connections: int, rate: float, hold: float,
           connect_timeout: float, addresses: list[str]) -> dict[str, int]:
    workers = _workers(connections)
    report("client", Kind.LOAD_START, f"opening {connections} connections to {host}:{port} at "
           f"{rate:g}/wall s from {len(addresses)} address(es) in {workers} process(es)")
    shares = [len(range(w, connections, workers)) for w in range(workers)]

    def job(w: int) -> dict[str, int]:
        mine = [source(i, addresses) for i in range(w, connections, workers)]
        return asyncio.run(_client_share(host, port, mine, rate / workers, hold,
                                         connect_timeout, w == 0))

    results = _in_workers(workers, job)
    assert sum(shares) == connections
    return {key: sum(r[key] for r in results) for key in results[0]}


def source(i: int, addresses: list[str]) -> tuple[str, int]:
    """The source (address, port) of connection ``i``: addresses in turn, ports in order."""
    return addresses[i % len(addresses)], FIRST_PORT + i // len(addresses)


async def _client_share(host: str, port: int, sources: list[tuple[str, int]], rate: float,
                        hold: float, connect_timeout: float, talk: bool) -> dict[str, int]:
    connections = len(sources)
    raise_fd_limit(connections + 1024)
    loop = asyncio.get_running_loop()
    target = socket.gethostbyname(host)
    held: list[socket.socket] = []
    counts = {"established": 0, "timed_out": 0, "failed": 0}

    async def one(i: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.bind(sources[i])
            await asyncio.wait_for(loop.sock_connect(sock, (target, port)), connect_timeout)
        except TimeoutError:
            counts["timed_out"] += 1
            sock.close()
            return
        except OSError:
            counts["failed"] += 1
            sock.close()
            return
        counts["established"] += 1
        held.append(sock)

    started = time.monotonic()
    tasks = []
    last_report = started
    for i in range(connections):
        due = started + i / rate
        if (delay := due - time.monotonic()) > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(i)))
        if talk and time.monotonic() - last_report >= 2.0:
            last_report = time.monotonic()
            report("client", Kind.LOAD_PROGRESS, f"worker 0: {i + 1} connection attempts "
                   f"started; {counts['established']} established, {counts['timed_out']} "
                   "timed out")
    await asyncio.gather(*tasks)
    if talk:
        report("client", Kind.LOAD_OPENED, f"worker 0: {counts['established']} established, "
               f"{counts['timed_out']} timed out, {counts['failed']} failed; holding them "
               f"for {hold:g} wall s")
    await asyncio.sleep(hold)
    for sock in held:
        sock.close()
    return counts


def server(port: int, duration: float, expected: int) -> int:
    workers = _workers(expected) + 1  # SO_REUSEPORT spreads unevenly: one to spare
    listeners = []
    for _ in range(workers):  # bound before forking, so every one is listening at once
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("0.0.0.0", port))
        listener.listen(65535)
        listener.setblocking(False)
        listeners.append(listener)
    report("server", Kind.READY, f"holding every connection on port {port} "
           f"({workers} listening process(es))")

    def job(w: int) -> dict[str, int]:
        for i, other in enumerate(listeners):
            if i != w:
                other.close()
        return {"accepted": asyncio.run(_hold(listeners[w], duration))}

    return sum(r["accepted"] for r in _in_workers(workers, job))


async def _hold(listener: socket.socket, duration: float) -> int:
    raise_fd_limit(PER_PROCESS * 2)
    loop = asyncio.get_running_loop()
    held: list[socket.socket] = []

    async def accept_all() -> None:
        while True:
            conn, _ = await loop.sock_accept(listener)
            held.append(conn)

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(accept_all(), duration)
    count = len(held)
    for conn in held:
        conn.close()
    listener.close()
    return count


def main(argv: list[str] | None = None) -> int:
    _role, cfg = role_and_config("natsim-load", __doc__, argv,
                                 {"client": LoadClientConfig, "server": LoadServerConfig})
    if isinstance(cfg, LoadClientConfig):
        counts = client(cfg.host, cfg.port, cfg.connections, cfg.rate, cfg.hold,
                        cfg.connect_timeout, list(cfg.addresses))
        outcome = " ".join(f"{k}={v}" for k, v in counts.items())
        report("client", Kind.OUTCOME, outcome, outcome=outcome, **counts)
    else:
        assert isinstance(cfg, LoadServerConfig)
        accepted = server(cfg.port, cfg.duration, cfg.expected)
        report("server", Kind.OUTCOME, f"accepted={accepted}", outcome=f"accepted={accepted}",
               accepted=accepted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
