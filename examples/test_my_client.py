"""Example: will my client survive a 400-second wait behind an AWS NAT Gateway?

Copy this file next to your own tests. It needs natsim installed (``pip install -e
path/to/natsim``) and root, because the ``natsim_world`` fixture builds network namespaces.

``my_client`` stands for your code: it connects, sends a request and waits for the answer,
with or without TCP keepalive. The server stands for a slow API (a long Lambda invoke). At
speed 100, the NAT Gateway's 350-second idle timeout lasts 3.5 wall seconds, and the whole
file runs in about 20 seconds. Every number below is in model seconds, as in production:
what the fixture starts runs on the world's clock, its socket keepalive included.
"""

from __future__ import annotations

import socket
import sys

import pytest

SPEED = 100
PORT = 8080


def my_client(host: str, port: int, timeout: float, keepalive_idle: int | None) -> bytes:
    """A client as an application writes it: keepalive only if asked for."""
    sock = socket.create_connection((host, port), timeout=60)
    if keepalive_idle is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, keepalive_idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
    sock.sendall(b"GET /invoke HTTP/1.0\r\nHost: server\r\n\r\n")
    sock.settimeout(timeout)
    answer = b""
    with sock:
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def start_slow_server(world, model_delay: float) -> None:  # type: ignore[no-untyped-def]
    world.start("server", [sys.executable, "-m", "simulator.workloads.slow_http",
                           "--port", str(PORT), "--delay", str(model_delay)])
    world.wait_for_port("server", PORT)


@pytest.mark.natsim(appliance="nat-gw", speed=SPEED)
def test_keepalive_300s_survives_a_400s_wait(natsim_world) -> None:  # type: ignore[no-untyped-def]
    start_slow_server(natsim_world, model_delay=400)
    answer = natsim_world.call("client", my_client, "server", PORT,
                               timeout=900, keepalive_idle=300)
    assert b"200 OK" in answer
    assert "keepalive" in natsim_world.kinds()  # the probe is what kept the flow alive


@pytest.mark.natsim(appliances=["nat-gw", {"name": "nat-gw", "late_from_outside": "drop"}],
                    speed=SPEED)
def test_without_keepalive_the_client_hangs(natsim_world) -> None:  # type: ignore[no-untyped-def]
    start_slow_server(natsim_world, model_delay=400)
    with pytest.raises(TimeoutError):
        natsim_world.call("client", my_client, "server", PORT,
                          timeout=450, keepalive_idle=None)
    kinds = natsim_world.kinds()
    assert "flow_expired" in kinds and "dropped" in kinds
