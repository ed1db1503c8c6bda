"""What crosses a link, seen from the side: TCP connections, data, keepalive probes, FIN, RST.

natsim's own middlebox *decides* what happens to every packet; an L4 proxy (HAProxy) in its
place decides nothing natsim can see from inside it. To show what the proxy does, the run
watches the proxy's two links and this observer reports what crossed them: which connection
a segment belongs to (by its addresses), whether it was data, a keepalive probe (a segment
one below the next expected sequence number, at most one byte), a FIN or an RST. The point
of the contrast is visible in its events: the client's probes arrive on the client-side
connection and nothing at all crosses on the server side.

Pure: packets and model time in, events out (the watcher, ``simulator/dataplane/proxy.py``,
reads the links).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from simulator.core.events import Event, EventKind
from simulator.core.jsonvalue import JsonObject
from simulator.core.packets import FIN, IPPROTO_TCP, RST, SYN, ip_to_str, parse

Endpoint = tuple[bytes, int]


@dataclass
class _Connection:
    id: int
    link: str
    opener: Endpoint
    next_seq: dict[Endpoint, int] = field(default_factory=dict)
    last_seen: float = 0.0
    last_data: dict[Endpoint, float] = field(default_factory=dict)


class Observer:
    """Follows the TCP connections on named links (``client side``, ``server side``)."""

    data_event_gap = 1.0
    """Model seconds: a data segment is reported only after this much silence."""

    def __init__(self, names: Mapping[str, str]) -> None:
        self.names = dict(names)
        """Address -> who it is (``client``, ``proxy``, ``server``)."""
        self.counters: Counter[str] = Counter()
        self._connections: dict[tuple[Endpoint, Endpoint], _Connection] = {}
        self._next_id = 1

    def _who(self, end: Endpoint) -> str:
        return self.names.get(ip_to_str(end[0]), ip_to_str(end[0]))

    def see(self, link: str, packet: bytes | bytearray, now: float) -> list[Event]:
        """One IPv4 packet seen on ``link`` at model time ``now``."""
        pkt = parse(packet)
        if pkt is None or pkt.proto != IPPROTO_TCP:
            return []
        src, dst = (pkt.src, pkt.sport), (pkt.dst, pkt.dport)
        key = (src, dst) if (src, dst) in self._connections else (dst, src)
        conn = self._connections.get(key)
        sender, receiver = self._who(src), self._who(dst)
        if conn is None:
            if pkt.flags & (SYN | 0x10) != SYN:
                return []
            conn = _Connection(self._next_id, link, src)
            self._next_id += 1
            self._connections[(src, dst)] = conn
            conn.next_seq[src] = (pkt.seq + 1) & 0xFFFFFFFF
            conn.last_seen = now
            return [Event(now, EventKind.FLOW_CREATED, f"{link}: {sender} opens connection "
                          f"#{conn.id} to the {receiver}", conn.id, None,
                          {"link": link, "proto": "TCP"})]
        idle = now - conn.last_seen
        conn.last_seen = now
        expected = conn.next_seq.get(src)
        end = (pkt.seq + pkt.payload_len + (1 if pkt.flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
        if expected is None or (end - expected) & 0xFFFFFFFF < 0x80000000:
            conn.next_seq[src] = end
        data: JsonObject = {"link": link, "sender": sender, "receiver": receiver}
        if pkt.flags & RST:
            self.counters[f"Rst:{link}"] += 1
            return [Event(now, EventKind.FLOW_CLOSED, f"{link}: RST from the {sender} to the "
                          f"{receiver} (connection #{conn.id})", conn.id, None,
                          {**data, "flag": "RST"})]
        if pkt.flags & FIN:
            self.counters[f"Fin:{link}"] += 1
            return [Event(now, EventKind.FLOW_CLOSED, f"{link}: FIN from the {sender} to the "
                          f"{receiver} (connection #{conn.id})", conn.id, None,
                          {**data, "flag": "FIN"})]
        if (expected is not None and pkt.payload_len <= 1
                and pkt.seq == (expected - 1) & 0xFFFFFFFF):
            self.counters[f"KeepaliveProbes:{link}"] += 1
            return [Event(now, EventKind.KEEPALIVE, f"{link}: keepalive probe from the "
                          f"{sender} after {idle:.1f} s idle; the {receiver}'s kernel answers "
                          "it, nothing is relayed", conn.id, None,
                          {**data, "idle": round(idle, 6), "refreshed": False})]
        if pkt.payload_len == 0:
            return []
        self.counters[f"DataSegments:{link}"] += 1
        quiet = now - conn.last_data.get(src, float("-inf")) < self.data_event_gap
        conn.last_data[src] = now
        if quiet:
            return []
        return [Event(now, EventKind.DATA, f"{link}: {pkt.payload_len} bytes from the "
                      f"{sender} on connection #{conn.id}", conn.id, None,
                      {**data, "bytes": pkt.payload_len})]
