"""Addresses as each side's own network sees them (Docker), and ARP answers for them.

Why: on a Docker ``internal: true`` network the host drops every bridged packet whose
source or destination lies outside the network's subnet (Docker's isolation rules, applied
to bridged traffic by ``br_netfilter``). The client's packet to the server's real address
on the other network, or the server's answer to the NAT's public address, would never
reach the middlebox. So in containers each side talks only to addresses of its own
subnet, and the dataplane translates at its edge, before and after the engine:

* on the client's network, the server is a *virtual* address (the client connects to it);
* on the server's network, the NAT's public addresses, and the client itself when the
  appliance does not translate, get aliases there.

The engine keeps seeing the model's addresses (203.0.113.1, 198.18.1.10, 198.19.1.10), so
events, rules and verdicts are those of the namespaces. The dataplane answers ARP for the
aliases itself, as the appliance's addresses are answered for in a real VPC.

Ports never change here; checksums are updated incrementally like any NAT rewrite.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from simulator.core.configs import Edge
from simulator.core.events import Side
from simulator.core.packets import ip_from_str, parse, rewrite_destination, rewrite_source

ETH_P_ARP = b"\x08\x06"
_ARP = struct.Struct("!HHBBH6s4s6s4s")
ARP_REQUEST, ARP_REPLY = 1, 2


@dataclass(frozen=True)
class EdgeMap:
    """Per side: ``{address seen on that network: address in the model}``."""

    inside: dict[bytes, bytes]
    outside: dict[bytes, bytes]
    peers: dict[Side, frozenset[bytes]] = field(default_factory=dict)
    """The hosts whose packets the appliance handles on each side (the client, the server).
    A Docker network also holds the host's bridge, which sends its own packets (ICMP
    redirects about our frames): those are not the simulated path's, and are left out."""
    _wire: dict[Side, dict[bytes, bytes]] = field(init=False, repr=False)
    """Per side, the reverse map (model -> seen), for the packets that leave."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_wire", {
            side: {model: seen for seen, model in self._seen(side).items()}
            for side in (Side.INSIDE, Side.OUTSIDE)})

    @classmethod
    def from_config(cls, cfg: Edge) -> EdgeMap:
        """From the dataplane configuration's ``edge`` (dotted addresses: :func:`docker_edge`)."""
        inside, outside = ({ip_from_str(seen): ip_from_str(model)
                            for seen, model in side.items()}
                           for side in (cfg.inside, cfg.outside))
        return cls(inside, outside, peers={Side(side): frozenset(map(ip_from_str, ips))
                                           for side, ips in cfg.peers.items()})

    def from_peer(self, side: Side, packet: bytes | bytearray) -> bool:
        allowed = self.peers.get(side)
        return not allowed or bytes(packet[12:16]) in allowed

    def is_peer(self, side: Side, address: bytes | None) -> bool:
        """Whether ``address`` is the simulated host on ``side`` (not the host's bridge)."""
        allowed = self.peers.get(side)
        return not allowed or address in allowed

    def _seen(self, side: Side) -> dict[bytes, bytes]:
        return self.inside if side is Side.INSIDE else self.outside

    def to_model(self, side: Side, packet: bytearray) -> None:
        """A packet that arrived on ``side``: its destination alias becomes the model's."""
        model = self._seen(side).get(bytes(packet[16:20]))
        if model is not None and (pkt := parse(packet)) is not None:
            rewrite_destination(packet, pkt, model, pkt.dport)

    def to_wire(self, side: Side, packet: bytearray) -> None:
        """A packet about to leave by ``side``: its model source becomes that side's alias."""
        seen = self._wire[side].get(bytes(packet[12:16]))
        if seen is not None and (pkt := parse(packet)) is not None:
            rewrite_source(packet, pkt, seen, pkt.sport)

    def arp_reply(self, side: Side, frame: bytes, my_mac: bytes) -> bytes | None:
        """The Ethernet frame answering an ARP request for one of this side's aliases."""
        if len(frame) < 14 + _ARP.size or frame[12:14] != ETH_P_ARP:
            return None
        htype, ptype, hlen, plen, op, sha, spa, _tha, tpa = _ARP.unpack_from(frame, 14)
        if (htype, ptype, hlen, plen, op) != (1, 0x0800, 6, 4, ARP_REQUEST) \
                or tpa not in self._seen(side):
            return None
        reply: bytes = sha + my_mac + ETH_P_ARP + _ARP.pack(1, 0x0800, 6, 4, ARP_REPLY, my_mac,
                                                            tpa, sha, spa)
        return reply


def docker_edge(public_ips: Sequence[str], client: str, server: str, server_vip: str
                ) -> Edge:
    """The dataplane's ``edge`` configuration for two Docker networks: the server behind
    ``server_vip`` on the client's network; on the server's, aliases from .3 of its /24 up,
    for the NAT's public addresses and then the client; only client and server as peers."""
    first = ipaddress.ip_network(f"{server}/24", strict=False).network_address + 3
    aliases = {str(first + i): model for i, model in enumerate([*public_ips, client])}
    return Edge(inside={server_vip: server}, outside=aliases,
                peers={"inside": (client,), "outside": (server,)})


def sender_address(frame: bytes) -> bytes | None:
    """The IPv4 address that sent an Ethernet frame (IPv4 source, or ARP sender), if any.

    The dataplane learns a peer's MAC from the first frame *that peer* sends: on a Docker
    network the host's bridge speaks first now and then, and a MAC learnt from it sends every
    frame for the peer through the host's routing instead (which works only with the host's
    ip_forward on, decrements TTLs and draws ICMP redirects).
    """
    if len(frame) >= 14 + 20 and frame[12:14] == b"\x08\x00":
        return frame[26:30]
    if len(frame) >= 14 + _ARP.size and frame[12:14] == ETH_P_ARP:
        return frame[28:32]
    return None
