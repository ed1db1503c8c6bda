"""ICMP across a NAT Gateway world, with real tools: ``ping server`` works (echo translated by
identifier), and a datagram to a closed port comes back as ECONNREFUSED (the server's ICMP
error translated back to the client). A newcomer's first debugging step works."""

from __future__ import annotations

import errno
import shutil
import socket
import time

import pytest

from simulator.cli.pytest_plugin import NatsimWorld


@pytest.mark.skipif(shutil.which("ping") is None, reason="ping not installed (.ci/run "
                    "installs iputils-ping)")
@pytest.mark.natsim(appliance="nat-gw", speed=100)
def test_ping_server_works_across_the_nat(natsim_world: NatsimWorld) -> None:
    done = natsim_world.run("client", ["ping", "-c", "2", "-W", "2", "server"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 received" in done.stdout
    deadline = time.monotonic() + 3
    while natsim_world.status()["counters"].get("PacketsOutToSource", 0) < 2 \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert natsim_world.status()["counters"]["PacketsOutToSource"] >= 2


def _udp_to_closed_port() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("server", 9))
    sock.settimeout(3)
    sock.send(b"anyone?")
    try:
        sock.recv(100)
    except OSError as exc:
        return exc.errno or 0
    finally:
        sock.close()
    return 0


@pytest.mark.natsim(appliance="nat-gw", speed=100)
def test_an_icmp_error_reaches_the_client_translated(natsim_world: NatsimWorld) -> None:
    assert natsim_world.call("client", _udp_to_closed_port) == errno.ECONNREFUSED


@pytest.mark.skipif(shutil.which("ping") is None, reason="ping not installed")
@pytest.mark.natsim(appliance="azure-nat-gw", speed=100)
def test_azure_nat_gateway_drops_icmp_and_counts_it(natsim_world: NatsimWorld) -> None:
    done = natsim_world.run("client", ["ping", "-c", "1", "-W", "1", "server"])
    assert done.returncode != 0
    time.sleep(0.5)
    assert natsim_world.status()["counters"].get("IcmpDropped", 0) >= 1
