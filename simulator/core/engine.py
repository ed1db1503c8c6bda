"""The middlebox engine: IPv4 packets and model time in, transmissions and events out.

Theory of operation
-------------------
``Middlebox.on_packet(packet, side, now)`` decides the fate of one packet that arrived on
``side`` and returns the packets to send (``Transmit``: the packet rewritten and forwarded, or
an RST built in reply). ``Middlebox.expire(now)`` retires the flows whose idle time reached
the appliance's timeout. Neither performs I/O nor reads a clock: the dataplane calls them
with the compressed wall clock, the unit tests with a ``ManualClock``.

The rules, read from the :class:`~simulator.core.appliances.Appliance` record:

* A flow starts with a packet from the inside: a SYN for TCP (a non-SYN segment with no flow
  is a *late* packet), any datagram for UDP. It gets a public address and port from the
  :class:`~simulator.core.flows.PortAllocator`; when the allocator is exhausted the packet is
  dropped and ``ErrorPortAllocation`` counts it.
* Every packet of a flow in either direction, data or not, sets ``last_seen``: a zero-length
  keepalive probe keeps a flow alive exactly like data does. Probes are recognised (sequence
  number one below the next expected, at most one byte) only to report them.
* A flow idle for ``timeout`` seconds is removed silently (no FIN, no RST), and its port is
  freed. Expiry is checked before each packet is handled, so a packet arriving one
  microsecond after the deadline finds the flow gone even if no timer fired in between.
* A late packet from side S is dropped; if the appliance's rule for S is ``rst`` and it is a
  TCP segment that is not itself an RST, an RST goes back out of S to its sender, and the
  other side hears nothing.
* An RST that passes through ends the flow at once; FINs move the state table along.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from simulator.core.appliances import Appliance, LateAction
from simulator.core.events import Event, EventKind, Side
from simulator.core.flows import (
    TCP_TRANSITIONS,
    Flow,
    FlowTable,
    Key,
    PortAllocator,
    TcpSignal,
    TcpState,
)
from simulator.core.packets import (
    ACK,
    FIN,
    IPPROTO_TCP,
    IPPROTO_UDP,
    RST,
    SYN,
    Packet,
    build_rst_reply,
    flags_to_str,
    ip_from_str,
    ip_to_str,
    parse,
    rewrite_destination,
    rewrite_source,
)

_TOMBSTONE_LIMIT = 65_536


@dataclass(frozen=True, slots=True)
class Transmit:
    """Send ``packet`` (an IPv4 packet, no link header) out of the middlebox's ``side``."""

    side: Side
    packet: bytearray


def _endpoint(addr: bytes, port: int) -> str:
    return f"{ip_to_str(addr)}:{port}"


class Middlebox:
    """One appliance's flow table and rules."""

    data_event_gap: float = 1.0
    """A data packet is reported only if its direction was silent this long (model s)."""

    def __init__(self, appliance: Appliance) -> None:
        self.appliance = appliance
        self.flows = FlowTable()
        self.ports = PortAllocator([ip_from_str(ip) for ip in appliance.public_ips],
                                   appliance.ports_per_destination,
                                   appliance.port_min, appliance.port_max)
        self.counters: Counter[str] = Counter()
        self._events: list[Event] = []
        self._next_id = 1
        # Keys of expired flows -> flow id, so that a late packet can be named in the log.
        self._tombstones: dict[tuple[Side, Key], int] = {}

    # -- results -------------------------------------------------------------------------

    def take_events(self) -> list[Event]:
        """The events since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    def next_deadline(self) -> float | None:
        """When ``expire`` may next have work to do (model time), or None if no flows."""
        return self.flows.next_deadline()

    # -- time ----------------------------------------------------------------------------

    def expire(self, now: float) -> list[Transmit]:
        """Retire the flows idle for their whole timeout by ``now``; silent on the wire."""
        for flow in self.flows.pop_expired(now):
            self._forget(flow)
            self.counters["IdleTimeoutCount"] += 1
            self._tombstones[(Side.INSIDE, flow.inside)] = flow.id
            self._tombstones[(Side.OUTSIDE, flow.outside)] = flow.id
            while len(self._tombstones) > _TOMBSTONE_LIMIT:
                del self._tombstones[next(iter(self._tombstones))]
            self._emit(flow.deadline, EventKind.FLOW_EXPIRED, flow.id, None,
                       f"flow #{flow.id} expired after {flow.timeout:g} s idle "
                       f"(nothing sent to either side)",
                       last_seen=round(flow.last_seen, 6))
        return []

    # -- packets -------------------------------------------------------------------------

    def on_packet(self, packet: bytearray, side: Side, now: float) -> list[Transmit]:
        """Decide what happens to ``packet`` (modified in place when forwarded)."""
        self.expire(now)
        pkt = parse(packet)
        if pkt is None:
            self.counters["PacketsDropCount"] += 1
            self.counters["UnsupportedPackets"] += 1
            return []
        if side is Side.INSIDE:
            self.counters["PacketsInFromSource"] += 1
            self.counters["BytesInFromSource"] += pkt.total_len
            return self._from_inside(packet, pkt, now)
        self.counters["PacketsInFromDestination"] += 1
        self.counters["BytesInFromDestination"] += pkt.total_len
        return self._from_outside(packet, pkt, now)

    def _from_inside(self, packet: bytearray, pkt: Packet, now: float) -> list[Transmit]:
        key: Key = (pkt.proto, pkt.src, pkt.sport, pkt.dst, pkt.dport)
        flow = self.flows.by_inside.get(key)
        if flow is None:
            starts_flow = (pkt.proto == IPPROTO_UDP
                           or (pkt.proto == IPPROTO_TCP and pkt.flags & (SYN | ACK) == SYN))
            if not starts_flow:
                return self._late(pkt, key, Side.INSIDE, now)
            flow = self._create(key, pkt, now)
            if flow is None:
                return []
        self._track(flow, pkt, 0, now)
        rewrite_source(packet, pkt, flow.public_ip, flow.public_port)
        self.counters["PacketsOutToDestination"] += 1
        self.counters["BytesOutToDestination"] += pkt.total_len
        return [Transmit(Side.OUTSIDE, packet)]

    def _from_outside(self, packet: bytearray, pkt: Packet, now: float) -> list[Transmit]:
        key: Key = (pkt.proto, pkt.src, pkt.sport, pkt.dst, pkt.dport)
        flow = self.flows.by_outside.get(key)
        if flow is None:
            return self._late(pkt, key, Side.OUTSIDE, now)
        self._track(flow, pkt, 1, now)
        client_ip, client_port = flow.client
        rewrite_destination(packet, pkt, client_ip, client_port)
        self.counters["PacketsOutToSource"] += 1
        self.counters["BytesOutToSource"] += pkt.total_len
        return [Transmit(Side.INSIDE, packet)]

    def _create(self, key: Key, pkt: Packet, now: float) -> Flow | None:
        self.counters["ConnectionAttemptCount"] += 1
        public = self.ports.allocate(pkt.proto, pkt.dst, pkt.dport)
        if public is None:
            self.counters["ErrorPortAllocation"] += 1
            self.counters["PacketsDropCount"] += 1
            self._emit(now, EventKind.PORT_ALLOCATION_ERROR, None, Side.INSIDE,
                       f"no free port towards {_endpoint(pkt.dst, pkt.dport)}: "
                       f"packet from {_endpoint(pkt.src, pkt.sport)} dropped")
            return None
        public_ip, public_port = public
        tcp = pkt.proto == IPPROTO_TCP
        flow = Flow(
            id=self._next_id,
            proto=pkt.proto,
            inside=key,
            outside=(pkt.proto, pkt.dst, pkt.dport, public_ip, public_port),
            public_ip=public_ip,
            public_port=public_port,
            timeout=self.appliance.tcp_idle_timeout if tcp else self.appliance.udp_idle_timeout,
            created=now,
            last_seen=now,
            state=TcpState.SYN_SENT if tcp else TcpState.NONE,
        )
        self._next_id += 1
        self.flows.add(flow)
        self._tombstones.pop((Side.INSIDE, flow.inside), None)
        self._tombstones.pop((Side.OUTSIDE, flow.outside), None)
        self.counters["ActiveConnectionCount"] = len(self.flows)
        proto = "TCP" if tcp else "UDP"
        self._emit(now, EventKind.FLOW_CREATED, flow.id, Side.INSIDE,
                   f"new {proto} flow #{flow.id} {_endpoint(pkt.src, pkt.sport)} -> "
                   f"{_endpoint(pkt.dst, pkt.dport)} as {_endpoint(public_ip, public_port)}",
                   proto=proto, client=_endpoint(pkt.src, pkt.sport),
                   server=_endpoint(pkt.dst, pkt.dport),
                   public=_endpoint(public_ip, public_port))
        return flow

    def _track(self, flow: Flow, pkt: Packet, direction: int, now: float) -> None:
        """Account for a packet of a live flow: idle timer, sequence space, TCP state."""
        idle = now - flow.last_seen
        flow.last_seen = now
        flow.packets[direction] += 1
        flow.octets[direction] += pkt.total_len
        side = Side.INSIDE if direction == 0 else Side.OUTSIDE
        who = side.peer_role
        if pkt.proto != IPPROTO_TCP:
            self._maybe_data_event(flow, pkt, direction, now, who)
            return

        expected = flow.next_seq[direction]
        flags = pkt.flags
        if (expected is not None and pkt.payload_len <= 1 and not flags & (SYN | FIN | RST)
                and pkt.seq == (expected - 1) & 0xFFFFFFFF):
            self.counters["KeepaliveProbes"] += 1
            self._emit(now, EventKind.KEEPALIVE, flow.id, side,
                       f"keepalive probe from {who} after {idle:.1f} s idle: flow #{flow.id} "
                       f"refreshed", idle=round(idle, 6), seq=pkt.seq)
        else:
            self._maybe_data_event(flow, pkt, direction, now, who)
        end = (pkt.seq + pkt.seg_len) & 0xFFFFFFFF
        if expected is None or (end - expected) & 0xFFFFFFFF < 0x80000000:
            flow.next_seq[direction] = end

        if flags & RST:
            self.flows.remove(flow)
            self._forget(flow)
            self._emit(now, EventKind.FLOW_CLOSED, flow.id, side,
                       f"RST from {who} passed through: flow #{flow.id} removed")
            return
        signal: TcpSignal | None = None
        if flags & FIN and not flow.fin_seen[direction]:
            flow.fin_seen[direction] = True
            signal = TcpSignal.FIN
        elif flags & SYN and flags & ACK and direction == 1:
            signal = TcpSignal.SYNACK_FROM_OUTSIDE
        elif flags & ACK and direction == 0:
            signal = TcpSignal.ACK_FROM_INSIDE
        if signal is not None:
            new_state = TCP_TRANSITIONS.get((flow.state, signal))
            if new_state is not None:
                flow.state = new_state
                if new_state is TcpState.ESTABLISHED:
                    self.counters["ConnectionEstablishedCount"] += 1
                    self._emit(now, EventKind.FLOW_ESTABLISHED, flow.id, side,
                               f"flow #{flow.id} established")
                elif signal is TcpSignal.FIN:
                    self._emit(now, EventKind.FLOW_CLOSED, flow.id, side,
                               f"FIN from {who} on flow #{flow.id} ({new_state})")

    def _maybe_data_event(self, flow: Flow, pkt: Packet, direction: int, now: float,
                          who: str) -> None:
        if pkt.payload_len == 0:
            return
        if now - flow.last_data_event[direction] < self.data_event_gap:
            flow.last_data_event[direction] = now
            return
        flow.last_data_event[direction] = now
        self._emit(now, EventKind.DATA, flow.id,
                   Side.INSIDE if direction == 0 else Side.OUTSIDE,
                   f"{pkt.payload_len} bytes from {who} on flow #{flow.id}",
                   bytes=pkt.payload_len)

    def _late(self, pkt: Packet, key: Key, side: Side, now: float) -> list[Transmit]:
        """A packet that matches no flow: drop it, and answer with an RST if the rule says so."""
        self.counters["PacketsDropCount"] += 1
        expired = self._tombstones.get((side, key))
        what = f"of expired flow #{expired}" if expired is not None else "of no known flow"
        who = side.peer_role
        rule = (self.appliance.late_from_inside if side is Side.INSIDE
                else self.appliance.late_from_outside)
        flags = flags_to_str(pkt.flags) if pkt.proto == IPPROTO_TCP else ""
        self._emit(now, EventKind.DROPPED, expired, side,
                   f"dropped {flags + ' ' if flags else ''}packet from {who} {what}",
                   flags=flags, payload=pkt.payload_len)
        if rule is LateAction.DROP or pkt.proto != IPPROTO_TCP or pkt.flags & RST:
            return []
        rst = build_rst_reply(pkt)
        self.counters["RstSent"] += 1
        seq = pkt.ack if pkt.flags & ACK else 0
        self._emit(now, EventKind.RST_SENT, expired, side,
                   f"RST sent back to the {who} (seq={seq})", seq=seq)
        return [Transmit(side, rst)]

    def _forget(self, flow: Flow) -> None:
        self.ports.release(flow.public_ip, flow.public_port, flow.proto,
                           flow.inside[3], flow.inside[4])
        self.counters["ActiveConnectionCount"] = len(self.flows)

    def _emit(self, t: float, kind: EventKind, flow: int | None, side: Side | None,
              text: str, **data: object) -> None:
        self._events.append(Event(t, kind, text, flow, side, dict(data)))
