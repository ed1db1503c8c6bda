"""The flow table: flows by their inside and outside 5-tuples, idle deadlines, NAT ports.

Theory of operation
-------------------
A flow is known by two keys: the tuple its packets carry on the inside (client address and
port, server address and port) and the one they carry on the outside after source NAT
(server address and port, public address and port). Both are plain tuples of bytes and ints
so that a lookup is one dict probe on the per-packet path.

Idle expiry uses a heap of ``(deadline, flow id, flow)`` with lazy deletion, as trio's
``Deadlines`` does. A packet only moves ``flow.last_seen``: it does not touch the heap. When
an entry is popped, the flow is expired if its *current* deadline has passed; if the flow was
refreshed in the meantime the entry is pushed again with the new deadline, and if the flow is
gone the entry is discarded. The heap therefore holds about one entry per live flow whatever
the packet rate (pushing on every packet, as DESIGN.md first sketched, would grow the heap
with the traffic).

TCP state is a table, as in h11: ``TCP_TRANSITIONS[(state, signal)] -> state``. Signals are
derived from the flags and the direction of a segment; combinations not in the table leave
the state unchanged (a middlebox tolerates what it does not understand).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

CURSORS_KEPT = 65_536
"""Destinations whose NAT port cursor is remembered after their last connection ended."""

Key = tuple[int, bytes, int, bytes, int]
"""(protocol, source address, source port, destination address, destination port)."""


class TcpState(StrEnum):
    SYN_SENT = "SYN_SENT"
    SYN_RECEIVED = "SYN_RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT = "FIN_WAIT"
    CLOSING = "CLOSING"
    NONE = "-"
    """Not TCP."""


class TcpSignal(StrEnum):
    SYN_FROM_INSIDE = "syn from inside"
    SYNACK_FROM_OUTSIDE = "syn-ack from outside"
    ACK_FROM_INSIDE = "ack from inside"
    FIN = "fin"


TCP_TRANSITIONS: dict[tuple[TcpState, TcpSignal], TcpState] = {
    (TcpState.SYN_SENT, TcpSignal.SYNACK_FROM_OUTSIDE): TcpState.SYN_RECEIVED,
    (TcpState.SYN_RECEIVED, TcpSignal.ACK_FROM_INSIDE): TcpState.ESTABLISHED,
    (TcpState.SYN_RECEIVED, TcpSignal.FIN): TcpState.FIN_WAIT,
    (TcpState.ESTABLISHED, TcpSignal.FIN): TcpState.FIN_WAIT,
    (TcpState.FIN_WAIT, TcpSignal.FIN): TcpState.CLOSING,
}


NEXT_SEQ, FIN_SEEN, PACKETS, OCTETS, DATA_EVENT = 0, 2, 4, 6, 8
"""Offsets into :attr:`Flow.dirs`, each followed by its value for the other direction."""
UNKNOWN_SEQ = -1
"""``dirs[NEXT_SEQ + d]`` before the first segment of direction ``d``."""
NEVER = float("-inf")


@dataclass(slots=True, eq=False)
class Flow:
    """One tracked connection. ``dir`` indices are 0 for inside->outside, 1 for the reverse."""

    id: int
    proto: int
    inside: Key
    outside: Key
    timeout: float
    last_seen: float
    state: TcpState
    target: int | None = None
    """The inspection host (Gateway Load Balancer target) the flow was hashed to."""
    backend: int | None = None
    """Which backend (target) a flow behind a virtual address was sent to."""
    port: int = 0
    """Which of the outside interfaces the flow leaves by (one per backend host)."""
    echoing: bool = False
    """The appliance sends its own keepalives on this flow (NLB TLS listener)."""
    dirs: list[float] = field(default_factory=lambda: [UNKNOWN_SEQ, UNKNOWN_SEQ, False, False,
                                                       0, 0, 0, 0, NEVER, NEVER])
    """Per direction (0: inside->outside, 1: the reverse), at the offsets ``NEXT_SEQ``
    (:data:`UNKNOWN_SEQ` until seen), ``FIN_SEEN``, ``PACKETS``, ``OCTETS``, ``DATA_EVENT``
    plus the direction: one list of ten rather than five lists of two (at 100,000 flows,
    220 bytes a flow less). Typed ``float`` for all: the counts and sequence numbers are
    Python ints in it, read back with ``int()`` where arithmetic on bits needs one."""

    @property
    def public_ip(self) -> bytes:
        """The address the server sees (the outside key's; no slot of its own)."""
        return self.outside[3]

    @property
    def public_port(self) -> int:
        return self.outside[4]

    @property
    def next_seq(self) -> tuple[int | None, int | None]:
        """The next sequence number each direction should send (None: not seen yet)."""
        return self.seq(0), self.seq(1)

    def seq(self, direction: int) -> int | None:
        expected = int(self.dirs[NEXT_SEQ + direction])
        return None if expected == UNKNOWN_SEQ else expected

    @property
    def packets(self) -> tuple[int, int]:
        return int(self.dirs[PACKETS]), int(self.dirs[PACKETS + 1])

    def advance(self, direction: int, end: int) -> None:
        """Move the next expected sequence number of ``direction`` to ``end`` unless that
        is behind it (a retransmission or a probe), modulo 2**32."""
        expected = int(self.dirs[NEXT_SEQ + direction])
        if expected == UNKNOWN_SEQ or (end - expected) & 0xFFFFFFFF < 0x80000000:
            self.dirs[NEXT_SEQ + direction] = end

    @property
    def deadline(self) -> float:
        return self.last_seen + self.timeout

    @property
    def client(self) -> tuple[bytes, int]:
        return self.inside[1], self.inside[2]

    @property
    def server(self) -> tuple[bytes, int]:
        return self.inside[3], self.inside[4]

    @property
    def translated(self) -> bool:
        """IPv6 inside, IPv4 outside: NAT64, or a dual-stack load balancer's IPv4 target."""
        return len(self.inside[1]) != len(self.outside[1])


class Timer(StrEnum):
    """What a deadline is for. Every timer of an appliance lives in one heap (below), so
    that nothing can expire anywhere else and everything a flow owns is pruned with it."""

    FLOW = "flow"
    """A flow's idle deadline (lazily re-armed: a packet only moves ``last_seen``)."""
    ECHO = "echo"
    """The appliance's own keepalive on a flow (NLB TLS listener)."""
    TARGET_STATE = "target_state"
    """What an inspection host remembers of a connection (Gateway Load Balancer)."""
    PATH = "path"
    """A path event (restart, deregistration, ...: :mod:`simulator.core.path_events`)."""


Due = tuple[float, Timer, object]


class FlowTable:
    """Flows by key, plus the one deadline heap for every timer of the appliance.

    Entries are ``(deadline, sequence, timer, item)``; a stale entry (a flow removed, a
    state refreshed) is discarded or re-armed when it comes to the top, as in trio's
    ``Deadlines``. The heap holds at most a few entries per live flow whatever the packet
    rate.
    """

    def __init__(self) -> None:
        self.by_inside: dict[Key, Flow] = {}
        self.by_outside: dict[Key, Flow] = {}
        self._heap: list[tuple[float, int, Timer, object]] = []
        self._seq = 0
        self.removed: list[Flow] | None = None
        """When a list, every flow removed is appended (the dataplane's fast path drops its
        copy of the flow's rules from it: ``simulator/dataplane/fastpath.py``)."""

    def __len__(self) -> int:
        return len(self.by_inside)

    def __iter__(self) -> Iterator[Flow]:
        return iter(self.by_inside.values())

    def add(self, flow: Flow) -> None:
        if flow.inside in self.by_inside or flow.outside in self.by_outside:
            raise ValueError(f"flow #{flow.id}: a live flow already holds its key")
        self.by_inside[flow.inside] = flow
        self.by_outside[flow.outside] = flow
        self.schedule(flow.deadline, Timer.FLOW, flow)

    def schedule(self, deadline: float, timer: Timer, item: object) -> None:
        """Arm a timer; it comes back from :meth:`pop_due` once ``deadline`` has passed."""
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, timer, item))

    def remove(self, flow: Flow) -> None:
        """Forget a flow; its heap entries become stale and are discarded when popped."""
        if self.by_inside.get(flow.inside) is flow:
            del self.by_inside[flow.inside]
            del self.by_outside[flow.outside]
            if self.removed is not None:
                self.removed.append(flow)

    def is_live(self, flow: Flow) -> bool:
        return self.by_inside.get(flow.inside) is flow

    def timers(self) -> int:
        """Entries in the heap (live and stale): bounded by the live state, see the tests."""
        return len(self._heap)

    def next_deadline(self) -> float | None:
        """The earliest time at which a timer may fire (possibly early: never late)."""
        return self._heap[0][0] if self._heap else None

    def due(self, now: float) -> bool:
        """Whether a timer is due by ``now`` (the per-packet check: no lists built)."""
        heap = self._heap
        return bool(heap) and heap[0][0] <= now

    def pop_due(self, now: float) -> tuple[list[Flow], list[Due]]:
        """The flows idle for at least their timeout at ``now`` (removed from the table), and
        every other timer due by then, oldest first (the caller acts on each)."""
        expired: list[Flow] = []
        other: list[Due] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, timer, item = heapq.heappop(heap)
            if timer is not Timer.FLOW:
                other.append((deadline, timer, item))
                continue
            assert isinstance(item, Flow)
            if not self.is_live(item):
                continue
            if item.deadline > now:
                self.schedule(item.deadline, Timer.FLOW, item)
                continue
            self.remove(item)
            expired.append(item)
        return expired, other


class PortAllocator:
    """Public (address, port) pairs for source NAT, counted per unique destination.

    AWS NAT Gateway allows 55,000 concurrent connections to one destination (address, port,
    protocol) per public address; the same public port may serve different destinations at
    once, because the outside 5-tuple still differs. Ports are handed out in order from a
    cursor, so runs are reproducible and the translation is easy to read in a capture; the
    cursor moves on past a freed port, so a port is not handed to a new connection the moment
    an old one let go of it (the server may still hold the old one in TIME_WAIT).
    """

    def __init__(self, public_ips: list[bytes], per_destination: int,
                 port_min: int, port_max: int) -> None:
        if not public_ips:
            raise ValueError("a NAT needs at least one public address")
        if port_min > port_max:
            raise ValueError(f"empty port range {port_min}-{port_max}")
        self.public_ips = public_ips
        self.limit = min(per_destination, port_max - port_min + 1)
        self.port_min = port_min
        self.port_max = port_max
        self._used: dict[tuple[bytes, int, bytes, int], set[int]] = {}
        self._cursor: OrderedDict[tuple[bytes, int, bytes, int], int] = OrderedDict()

    def allocate(self, proto: int, dst: bytes, dport: int) -> tuple[bytes, int] | None:
        """A free (public address, port) towards this destination, or None if all are taken."""
        for ip in self.public_ips:
            slot = (ip, proto, dst, dport)
            used = self._used.get(slot)
            if used is None:
                used = self._used[slot] = set()
            elif len(used) >= self.limit:
                continue
            port = self._cursor.get(slot, self.port_min)
            while port in used:
                port = port + 1 if port < self.port_max else self.port_min
            used.add(port)
            self._cursor[slot] = port + 1 if port < self.port_max else self.port_min
            self._cursor.move_to_end(slot)
            return ip, port
        return None

    def release(self, ip: bytes, port: int, proto: int, dst: bytes, dport: int) -> None:
        """Free a port. A destination with no connection left loses its port set; its
        cursor is kept for the most recent :data:`CURSORS_KEPT` destinations only (a new
        connection to it still does not reuse the port just freed), so that 200,000 one-off
        destinations leave bounded state behind."""
        slot = (ip, proto, dst, dport)
        used = self._used.get(slot)
        if used is not None:
            used.discard(port)
            if not used:
                del self._used[slot]
                while len(self._cursor) > CURSORS_KEPT:
                    self._cursor.popitem(last=False)

    def slots(self) -> int:
        """Destinations with ports in use (for the memory tests)."""
        return len(self._used)

    def in_use(self, proto: int, dst: bytes, dport: int) -> int:
        return sum(len(self._used.get((ip, proto, dst, dport), ())) for ip in self.public_ips)
