"""ICMP through an appliance: echo as a flow by identifier, errors translated back.

An echo request starts a flow like a datagram, its identifier standing for the client's port
(so a NAT translates it as RFC 5508 says); the reply finds the flow by the identifier the NAT
gave out. An ICMP error from the server's side (port unreachable, time exceeded) quotes the
packet that caused it: when that packet belongs to a flow the appliance translated, the
error goes back to the client with its outer destination and its quote translated, so the
client's socket learns why (``ECONNREFUSED``, a traceroute hop). An appliance that documents
no ICMP (Azure NAT Gateway: "ICMP isn't supported") drops all of it and counts it.

A mixin of :class:`~simulator.core.engine.Middlebox`, kept apart because it is a protocol
of its own with its own rules, and the engine is long enough.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from simulator.core.appliances import Appliance
from simulator.core.events import EventKind, Side
from simulator.core.flows import FlowTable
from simulator.core.jsonvalue import Json
from simulator.core.packets import (
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    Packet,
    icmp_error_inner,
    rewrite_icmp_error,
)


@dataclass(slots=True)
class Transmit:
    """Send ``packet`` (an IP packet, no link header) out of the middlebox's ``side``.

    Not frozen, though nothing changes one: a frozen dataclass builds itself through
    ``object.__setattr__``, five times the cost, once per forwarded packet.
    """

    side: Side
    packet: bytearray
    port: int = 0
    """Which interface of that side: the backend's, when there are several."""
    deadline: float | None = None
    """For an RST sent because a flow expired: the idle deadline it answers, so that the
    I/O layer can measure how late after the deadline the packet actually left."""
    made: bool = False
    """Built by the appliance (an RST, its own keepalive), not a packet that came in and
    goes on: a translated packet (NAT64) is a new object but not a made one."""



class IcmpRules:
    """What the engine does with ICMP (see the module docstring)."""

    appliance: Appliance
    counters: Counter[str]
    flows: FlowTable

    def _emit(self, t: float, kind: EventKind, flow: int | None, side: Side | None,
              text: str, **data: Json) -> None:
        raise NotImplementedError  # the engine's

    def _worth_logging(self, counter: str) -> bool:
        raise NotImplementedError  # the engine's

    def _icmp_admitted(self, pkt: Packet, side: Side, now: float) -> bool:
        """Echo requests and replies are flows like datagrams (by identifier); an appliance
        that documents no ICMP (Azure NAT Gateway) drops all of it, counted."""
        if self.appliance.icmp and pkt.flags in (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY):
            return True
        if not self.appliance.icmp:
            self.counters["IcmpDropped"] += 1
            self.counters["PacketsDropCount"] += 1
            if self._worth_logging("IcmpDropped"):
                self._emit(now, EventKind.DROPPED, None, side,
                           f"dropped ICMP from the {side.peer_role}: "
                           f"{self.appliance.title} does not carry ICMP")
        return False

    def _icmp_error(self, packet: bytearray, pkt: Packet, side: Side,
                    now: float) -> list[Transmit]:
        """An ICMP error from the server's side about a flow we translated goes back to the
        client, translated (RFC 5508): the host that sent the packet hears why it failed."""
        inner = icmp_error_inner(packet, pkt)
        flow = None if inner is None or side is not Side.OUTSIDE else \
            self.flows.by_outside.get((inner.proto, inner.dst, inner.dport, inner.src,
                                       inner.sport))
        # an error about a translated flow (NAT64) would need ICMPv4 -> ICMPv6 (RFC 7915
        # section 4.2), which natsim does not do yet: dropped and counted, never mangled
        if inner is None or flow is None or flow.translated:
            self.counters["PacketsDropCount"] += 1
            self.counters["UnsupportedPackets"] += 1
            return []
        client_ip, client_port = flow.client
        rewrite_icmp_error(packet, pkt, inner, client_ip, client_ip, client_port)
        self.counters["IcmpErrorsTranslated"] += 1
        self._emit(now, EventKind.DATA, flow.id, side,
                   f"ICMP error (type {pkt.flags}) about flow #{flow.id} passed back to the "
                   "client", icmp_type=pkt.flags)
        return [Transmit(Side.INSIDE, packet)]

