"""The built-in UDP request/response workloads (asyncio-dgram), client and server.

UDP has no connection, so an appliance's UDP "flow" is only a mapping that the datagrams
keep warm. The client sends a request and waits for the answer, optionally sending an
application-level heartbeat every ``heartbeat`` seconds (what QUIC, DNS-over-UDP tunnels or
game clients do instead of TCP keepalive); the server answers after ``delay`` seconds of
silence. A datagram that arrives after the mapping expired is dropped without a word, so the
server can only ever report that it answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import asyncio_dgram

from simulator.core.configs import UdpClientConfig, UdpServerConfig
from simulator.core.messages import Kind
from simulator.workloads import report, role_and_config

REQUEST, HEARTBEAT, ANSWER = b"REQUEST", b"HEARTBEAT", b"ANSWER (the slow answer)"


async def client(host: str, port: int, timeout: float, heartbeat: float | None,
                 new_port: bool = False) -> str:
    stream = await asyncio_dgram.connect((host, port))
    local = stream.sockname
    report("client", Kind.CONNECTED, f"UDP socket {local[0]}:{local[1]} -> {host}:{port}"
           + (f"; heartbeat every {heartbeat:g} wall s" if heartbeat else "; no heartbeat")
           + (", each from a new socket (a new source port)" if heartbeat and new_port
              else ""))
    await stream.send(REQUEST)
    started = time.monotonic()
    report("client", Kind.REQUEST_SENT, "request datagram sent; waiting for the answer")

    async def beat() -> None:
        assert heartbeat is not None
        while True:
            await asyncio.sleep(heartbeat)
            if not new_port:
                await stream.send(HEARTBEAT)
                continue
            # a flow of its own: the appliance hashes and tracks it apart from the request's
            fresh = await asyncio_dgram.connect((host, port))
            try:
                await fresh.send(HEARTBEAT)
            finally:
                fresh.close()

    beats = asyncio.create_task(beat()) if heartbeat else None
    try:
        data, _ = await asyncio.wait_for(stream.recv(), timeout)
        report("client", Kind.ANSWER, f"answer received: {data.decode(errors='replace')!r}",
               waited=time.monotonic() - started)
        return "answer"
    except TimeoutError:
        report("client", Kind.TIMEOUT, "gave up waiting: client timeout reached, no answer",
               waited=time.monotonic() - started)
        return "timeout"
    finally:
        if beats is not None:
            beats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beats
        stream.close()


async def server(port: int, delay: float, delay_label: str, wait_limit: float) -> str:
    stream = await asyncio_dgram.bind(("0.0.0.0", port))
    report("server", Kind.READY, f"listening on UDP port {port}")
    deadline = time.monotonic() + wait_limit
    while True:
        try:
            data, peer = await asyncio.wait_for(stream.recv(),
                                                max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            report("server", Kind.NO_CLIENT, "no request arrived")
            return "no_request"
        if data != HEARTBEAT:
            break
        report("server", Kind.STRAY_HEARTBEAT, "a heartbeat for a request this server never "
               "saw: ignored")
    assert isinstance(peer, tuple)  # an IPv4 (address, port)
    report("server", Kind.REQUEST_RECEIVED, f"request from {peer[0]}:{peer[1]}; working for "
           f"{delay_label} before answering")
    deadline = time.monotonic() + delay
    heartbeats = 0
    while (left := deadline - time.monotonic()) > 0:
        try:
            data, _ = await asyncio.wait_for(stream.recv(), left)
        except TimeoutError:
            break
        heartbeats += data == HEARTBEAT
    await stream.send(ANSWER, peer)
    report("server", Kind.ANSWER_SENT, f"answer datagram sent to {peer[0]}:{peer[1]} (UDP: no "
           f"acknowledgement will come); {heartbeats} heartbeats received meanwhile",
           heartbeats=heartbeats)
    stream.close()
    return "answered"


def main(argv: list[str] | None = None) -> int:
    role, cfg = role_and_config("natsim-udp", __doc__, argv,
                                {"client": UdpClientConfig, "server": UdpServerConfig})
    if isinstance(cfg, UdpClientConfig):
        outcome = asyncio.run(client(cfg.host, cfg.port, cfg.timeout, cfg.heartbeat,
                                     cfg.heartbeat_new_port))
    else:
        assert isinstance(cfg, UdpServerConfig)
        outcome = asyncio.run(server(cfg.port, cfg.delay, cfg.delay_label, cfg.wait_limit))
    report(role, Kind.OUTCOME, outcome, outcome=outcome)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
