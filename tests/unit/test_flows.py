from __future__ import annotations

import pytest

from simulator.core import flows
from simulator.core.flows import Flow, FlowTable, PortAllocator, TcpState

IP = bytes([198, 19, 1, 10])
PUB = [bytes([203, 0, 113, 1]), bytes([203, 0, 113, 2])]


def _flow(i: int, t: float, timeout: float = 10.0) -> Flow:
    return Flow(i, 6, (6, b"c", i, IP, 80), (6, IP, 80, PUB[0], i), timeout, t,
                TcpState.ESTABLISHED)


def test_refreshed_flow_is_rearmed_not_expired() -> None:
    table = FlowTable()
    flow = _flow(1, 0.0)
    table.add(flow)
    flow.last_seen = 8.0  # a packet: no heap push
    assert table.pop_due(10.0)[0] == []
    assert table.next_deadline() == 18.0
    assert table.pop_due(18.0)[0] == [flow]
    assert len(table) == 0


def test_the_cursor_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flows, "CURSORS_KEPT", 10)
    alloc = PortAllocator(PUB[:1], per_destination=10, port_min=1024, port_max=65535)
    for i in range(100):
        dst = bytes([198, 19, 2, i])
        ip, port = alloc.allocate(6, dst, 80) or (b"", 0)
        alloc.release(ip, port, 6, dst, 80)
    assert alloc.slots() == 0 and len(alloc._cursor) <= 11


def test_removed_flow_entry_is_discarded() -> None:
    table = FlowTable()
    flow = _flow(1, 0.0)
    table.add(flow)
    table.remove(flow)
    assert table.pop_due(100.0)[0] == []


def test_allocator_counts_per_destination_and_spills_to_the_next_address() -> None:
    alloc = PortAllocator(PUB, per_destination=2, port_min=1024, port_max=65535)
    got = [alloc.allocate(6, IP, 80) for _ in range(4)]
    assert got == [(PUB[0], 1024), (PUB[0], 1025), (PUB[1], 1024), (PUB[1], 1025)]
    assert alloc.allocate(6, IP, 80) is None
    # another destination has its own budget, and may reuse the same public port
    assert alloc.allocate(6, IP, 443) == (PUB[0], 1024)
    alloc.release(PUB[0], 1025, 6, IP, 80)
    # a freed port makes room again; the cursor moves on rather than reusing it at once
    assert alloc.allocate(6, IP, 80) == (PUB[0], 1026)
    assert alloc.allocate(6, IP, 80) is None


def test_allocator_wraps_around_the_port_range() -> None:
    alloc = PortAllocator(PUB[:1], per_destination=55_000, port_min=65534, port_max=65535)
    assert alloc.allocate(17, IP, 53) == (PUB[0], 65534)
    assert alloc.allocate(17, IP, 53) == (PUB[0], 65535)
    assert alloc.allocate(17, IP, 53) is None
    alloc.release(PUB[0], 65534, 17, IP, 53)
    assert alloc.allocate(17, IP, 53) == (PUB[0], 65534)
