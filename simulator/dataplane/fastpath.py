"""The compiled fast path: hot established flows forwarded without the interpreter.

Why
---
The engine costs about 5 us a packet and the whole Python per-frame path about 16 us of the
dataplane's CPU, most of it the interpreter. That held 64-byte UDP through natsim to a third
of the kernel's own forwarding (``make bench``). The packets of an established flow in its
steady state are all alike: the engine accounts for them (last seen, sequence number,
packet and byte counts) and rewrites their addresses, nothing else. ``_fastpath.c`` does
exactly that for the flows this module hands it, and gives every other frame back to the
Python path untouched and in order.

The engine stays the authority
------------------------------
* A flow is handed over (both directions) only when it is *hot* (``HOT_AFTER`` packets in a
  direction), established, on an appliance whose rules for such a packet are the plain ones
  (no inspection host, no path events, no pcap, no Docker edge, every peer MAC known), and
  only while it is live. Idle flows (100,000 held connections) stay in Python alone and cost
  nothing here.
* The C side refuses anything the engine might decide differently: TCP with SYN, FIN or RST,
  a possible keepalive probe, a payload whose data event is due, any frame once a timer is
  due (the engine expires before it handles a packet), anything but IPv4 TCP/UDP.
* What the C side accounted (:meth:`FastForwarder.sync`) is folded back into the flows and
  the engine's counters before the engine runs: before each frame it handles, before
  ``expire``, before the status snapshot and the counters. A flow the engine removes
  (expiry, RST, anything) is dropped from the fast path at once (``FlowTable.removed``), and
  a flow whose frame went to the engine is handed over again afterwards with the engine's
  fresh state, or not at all.
* ``NATSIM_FASTPATH=0`` turns it off (the pure-Python path, kept tested); the tests compare
  both paths frame for frame.
"""

from __future__ import annotations

import os
import socket

from simulator.core.engine import Middlebox
from simulator.core.events import Side
from simulator.core.flows import (
    DATA_EVENT,
    FIN_SEEN,
    NEXT_SEQ,
    OCTETS,
    PACKETS,
    Flow,
    Key,
    TcpState,
)
from simulator.core.packets import IPPROTO_TCP, IPPROTO_UDP

try:
    from simulator.dataplane import _fastpath
except ImportError:  # pragma: no cover - `make setup` builds it; see available()
    _fastpath = None  # type: ignore[assignment]

HOT_AFTER = 8
"""Packets a flow sends in one direction before it is handed to the fast path: a held idle
connection (a handshake and little else) never is, so it costs no memory there."""
DRAINED, BUDGET_SPENT, SEND_FAILED = -1, -2, -3
_COUNTERS = ("PacketsInFromSource", "BytesInFromSource", "PacketsOutToDestination",
             "BytesOutToDestination", "PacketsInFromDestination", "BytesInFromDestination",
             "PacketsOutToSource", "BytesOutToSource")


def available() -> bool:
    """Whether the compiled module is installed (``make setup`` builds it)."""
    return _fastpath is not None


def wanted() -> bool:
    """The fast path is on unless ``NATSIM_FASTPATH=0``."""
    return os.environ.get("NATSIM_FASTPATH", "1") != "0"


def packed(key: Key) -> bytes:
    """A flow key as the C side reads it from a packet: protocol, source address and port,
    destination address and port, in network order (13 bytes)."""
    proto, src, sport, dst, dport = key
    return bytes((proto,)) + src + sport.to_bytes(2, "big") + dst + dport.to_bytes(2, "big")


class FastForwarder:
    """The fast path of one dataplane: which flows it holds, and their accounting."""

    def __init__(self, engine: Middlebox, origin: float, speed: float,
                 ports: dict[Side, list[tuple[socket.socket, bytes]]]) -> None:
        assert _fastpath is not None
        self.engine = engine
        self.table = engine.flows
        self.table.removed = []
        self._c = _fastpath.FastPath(origin, speed, engine.data_event_gap)
        self._port_index: dict[tuple[Side, int], int] = {}
        for side, socks in ports.items():
            for i, (sock, header) in enumerate(socks):
                index = len(self._port_index)
                self._port_index[side, i] = index
                self._c.set_port(index, sock.fileno(), header)
        self._held: set[int] = set()
        """Ids of the flows held (both directions)."""
        self.tx_queue_full = 0
        """Frames the C side lost to a full transmit queue (the dataplane adds its own)."""
        appliance = engine.appliance
        self._refresh_empty = appliance.keepalive_refreshes

    def __len__(self) -> int:
        return len(self._held)

    def drain(self, fd: int, buf: bytearray, budget: int) -> int:
        """Forward what the fast path may; the length of a frame left in ``buf`` for the
        engine, or DRAINED, BUDGET_SPENT, SEND_FAILED (errno: :meth:`last_errno`)."""
        deadline = self.engine.next_deadline()
        result: int = self._c.drain(fd, buf, budget,
                                    float("inf") if deadline is None else deadline)
        return result

    def offer(self, buf: bytearray, n: int) -> int:
        """The frame left in ``buf[:n]`` by :meth:`drain`, offered again (after the engine's
        due timers ran): 1 forwarded, 0 still the engine's, or SEND_FAILED."""
        deadline = self.engine.next_deadline()
        result: int = self._c.offer(buf, n, float("inf") if deadline is None else deadline)
        return result

    def pin(self, t: float | None) -> None:
        """Fix the C side's model time at ``t`` (None: the compressed wall clock again), so
        that a test can run it and the engine on the same manual clock."""
        self._c.pin(t)

    def forwarded(self) -> int:
        """Frames the C side forwarded since the start."""
        value: int = self._c.forwarded()
        return value

    def last_errno(self) -> int:
        value: int = self._c.last_errno()
        return value

    def sync(self) -> None:
        """Fold what the C side accounted into the flows and the engine's counters."""
        dirty, totals = self._c.take()
        for flow, direction, next_seq, last_seen, data_event, packets, octets in dirty:
            flow.last_seen = max(flow.last_seen, last_seen)
            dirs = flow.dirs
            dirs[PACKETS + direction] += packets
            dirs[OCTETS + direction] += octets
            dirs[DATA_EVENT + direction] = data_event
            if next_seq is not None:
                dirs[NEXT_SEQ + direction] = next_seq
        counters = self.engine.counters
        for name, value in zip(_COUNTERS, totals, strict=False):
            if value:
                counters[name] += value
        self.tx_queue_full += int(totals[len(_COUNTERS)])

    def forget_removed(self) -> None:
        """Drop the flows the engine removed since the last call (right after a
        :meth:`sync`: the C side refuses to drop an entry whose accounting it still holds)."""
        removed = self.table.removed
        if not removed:
            return
        for flow in removed:
            if flow.id in self._held:
                self._drop(flow)
        removed.clear()

    def after_engine(self) -> None:
        """The engine handled a frame (right after a :meth:`sync`): hand the flow it
        accounted the frame to over again with the engine's fresh state, or keep it out."""
        self.forget_removed()
        flow, self.engine.last_tracked = self.engine.last_tracked, None
        if flow is None:
            return
        if flow.id in self._held:
            self._drop(flow)
        if self._eligible(flow):
            self._hold(flow)

    def _eligible(self, flow: Flow) -> bool:
        dirs = flow.dirs
        if flow.target is not None or max(dirs[PACKETS], dirs[PACKETS + 1]) < HOT_AFTER \
                or not self.table.is_live(flow):  # an RST ends a flow the engine tracked
            return False
        if len(flow.inside[1]) != 4 or len(flow.outside[1]) != 4:
            return False  # IPv6 and NAT64 flows stay with the engine (the C side is IPv4)
        if flow.proto == IPPROTO_UDP:
            return True
        return (flow.proto == IPPROTO_TCP and flow.state is TcpState.ESTABLISHED
                and not dirs[FIN_SEEN] and not dirs[FIN_SEEN + 1]
                and flow.seq(0) is not None and flow.seq(1) is not None)

    def _hold(self, flow: Flow) -> None:
        c = _fastpath
        assert c is not None
        nat = self.engine.appliance.nat
        backend = flow.backend is not None
        inside, outside = flow.inside, flow.outside
        flags = (c.TCP if flow.proto == IPPROTO_TCP else 0) \
            | (c.REFRESH_EMPTY if self._refresh_empty else 0)
        # the final addresses each way, and the engine's rewrite steps in its order
        # (Middlebox._forward_inside / _forward_outside)
        to_outside = outside[3] + outside[1] + _ports(outside[4], outside[2])
        to_inside = inside[3] + inside[1] + _ports(inside[4], inside[2])
        for direction, key, final, steps, port in (
                (0, inside, to_outside, (c.STEP_DST if backend else c.STEP_NONE,
                                         c.STEP_SRC if nat else c.STEP_NONE),
                 self._port_index[Side.OUTSIDE, flow.port]),
                (1, outside, to_inside, (c.STEP_SRC if backend else c.STEP_NONE,
                                         c.STEP_DST if nat else c.STEP_NONE),
                 self._port_index[Side.INSIDE, 0])):
            seq = flow.seq(direction)
            self._c.add(packed(key), flow, direction,
                        flags | (c.SEQ_KNOWN if seq is not None else 0), port, *steps, final,
                        seq or 0, flow.last_seen, flow.dirs[DATA_EVENT + direction])
        self._held.add(flow.id)

    def _drop(self, flow: Flow) -> None:
        self._c.remove(packed(flow.inside))
        self._c.remove(packed(flow.outside))
        self._held.discard(flow.id)


def _ports(source: int, destination: int) -> bytes:
    return source.to_bytes(2, "big") + destination.to_bytes(2, "big")
