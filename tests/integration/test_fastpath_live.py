"""The compiled fast path in a real world (``capture=False``): real sockets, real kernels.

A hot connection crosses whole (every byte, in order) and is then forgotten at 350 s like any
other: the client's next segment is answered with an RST. The unit tests compare the fast
path with the engine frame by frame; these show that the live dataplane uses it and that a
verdict does not change.
"""

from __future__ import annotations

import random
import socket
import sys
import time

import pytest

from simulator.cli.pytest_plugin import NatsimWorld
from tests.integration.test_live_world import _SINK, _send_bulk

pytestmark = pytest.mark.integration
SPEED = 100  # the NAT Gateway's 350 s last 3.5 wall s

_ECHO = """
import socket
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("0.0.0.0", 9200))
listener.listen()
while True:
    conn, _ = listener.accept()
    try:
        while chunk := conn.recv(65536):
            conn.sendall(chunk)
    except OSError:
        pass
    conn.close()
"""


def _hot_then_idle(exchanges: int, idle: float) -> tuple[int, str]:
    """Echo ``exchanges`` messages (the flow gets hot), stay idle ``idle`` (model) seconds,
    then send once more: how many echoes came back, and what the last send met."""
    rng = random.Random(3)
    echoed = 0
    with socket.create_connection(("server", 9200), timeout=600) as sock:
        for _ in range(exchanges):
            message = rng.randbytes(200)
            sock.sendall(message)
            got = b""
            while len(got) < len(message):
                got += sock.recv(65536)
            echoed += got == message
        time.sleep(idle)
        try:
            sock.sendall(b"after the idle timeout")
            reply = sock.recv(100)
            return echoed, f"reply {reply!r}"
        except ConnectionResetError:
            return echoed, "reset"
        except TimeoutError:
            return echoed, "timeout"


def _fast_path_forwarded(world: NatsimWorld, at_least: int) -> int:
    """The dataplane's count of frames its fast path forwarded (``status.json``)."""
    deadline = time.monotonic() + 5
    while True:
        forwarded = world.live.status().get("fast_path") or 0
        if forwarded >= at_least or time.monotonic() > deadline:
            return int(forwarded)
        time.sleep(0.1)


@pytest.mark.natsim(appliance="nat-gw", speed=SPEED, capture=False)
def test_a_bulk_transfer_crosses_whole_through_the_fast_path(natsim_world: NatsimWorld) -> None:
    natsim_world.start("server", [sys.executable, "-c", _SINK])
    natsim_world.wait_for_port("server", 9100)
    received, sent = natsim_world.call("client", _send_bulk, 16)
    assert received == sent  # every byte arrived, in order, through the fast path
    assert _fast_path_forwarded(natsim_world, 100) >= 100


@pytest.mark.natsim(appliance="nat-gw", speed=SPEED, capture=False)
def test_a_hot_flow_is_still_reset_after_the_idle_timeout(natsim_world: NatsimWorld) -> None:
    natsim_world.start("server", [sys.executable, "-c", _ECHO])
    natsim_world.wait_for_port("server", 9200)
    echoed, last = natsim_world.call("client", _hot_then_idle, 40, 400)  # model seconds
    assert echoed == 40
    assert _fast_path_forwarded(natsim_world, 40) >= 40  # the echoes took the fast path
    assert last == "reset"  # NAT Gateway forgot the flow at 350 s: the RST, as without it
    deadline = time.monotonic() + 5  # status.json is rewritten four times a second
    while True:
        counters = natsim_world.live.status()["counters"]
        if counters.get("RstSent") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert counters["IdleTimeoutCount"] >= 1 and counters["RstSent"] >= 1
