"""Ask a real capture: what would the appliance have done to each of its connections?

The captured packets go, at their captured times, through the same engine and appliance
rules as an emulation. Each connection's client is the host that sent its SYN (or, for a
connection that started before the capture, the end with the higher port); its packets enter
the appliance from the inside, the server's from the outside. Address translation plays no
part in whether a flow expires, so the appliance runs without it here (the captured
addresses stay as they are).

For each connection the report gives its longest idle gap and where it was, the keepalive
probes seen (and whether each came before the idle timeout), and the appliance's verdict:

* ``untouched``: nothing the appliance forgot mattered;
* ``expired``: the flow was forgotten at T while the connection was open, and nothing came
  after (the connection looks healthy in the capture and is dead);
* ``late-rst`` / ``late-drop``: a packet after the expiry met the late rule: an RST back to
  its sender, or silence;
* ``late-pass``: such a packet was tracked anew (a security group, a conntrack firewall).

A capture that holds an RST after a gap, or a run of retransmissions after a gap, is checked
against the appliance: explained when the appliance would have sent that RST (an RST to the
same host within a second) or dropped those packets.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from simulator.core.appliances import Appliance, LateAction
from simulator.core.engine import Middlebox
from simulator.core.events import Side
from simulator.core.flows import Flow, Key, TcpState
from simulator.core.jsonvalue import JsonObject
from simulator.core.packets import (
    ACK,
    FIN,
    IPPROTO_TCP,
    IPPROTO_UDP,
    RST,
    SYN,
    endpoint,
    parse,
)

INF = float("inf")
_OPENING = (TcpState.SYN_SENT, TcpState.SYN_RECEIVED)
EXPLAIN_WINDOW = 1.0
"""Seconds between a captured RST and the appliance's for it to count as the same one."""


_IPV4 = struct.Struct("!BxHxxHxBxx4s4s")
_TCP = struct.Struct("!HHIxxxxBB")
_UDP = struct.Struct("!HH")
Headers = tuple[int, bytes, int, bytes, int, int, int, int, int]


def _headers(raw: bytes) -> Headers | None:
    """(proto, src, sport, dst, dport, total length, payload length, TCP flags, seq) of a
    plain IPv4 TCP/UDP packet; None for anything unusual (the full parser decides)."""
    if len(raw) < 28:
        return None
    ver_ihl, total, frag, proto, src, dst = _IPV4.unpack_from(raw)
    ihl = (ver_ihl & 0x0F) << 2
    if ver_ihl >> 4 != 4 or ihl < 20 or frag & 0x3FFF or total > len(raw):
        return None
    if proto == IPPROTO_TCP and total >= ihl + 20:
        sport, dport, seq, off, flags = _TCP.unpack_from(raw, ihl)
        doff = (off >> 4) << 2
        if doff < 20 or total < ihl + doff:
            return None
        return proto, src, sport, dst, dport, total, total - ihl - doff, flags, seq
    if proto == IPPROTO_UDP and total >= ihl + 8:
        sport, dport = _UDP.unpack_from(raw, ihl)
        return proto, src, sport, dst, dport, total, total - ihl - 8, 0, 0
    return None


class Fate(StrEnum):
    UNTOUCHED = "untouched"
    EXPIRED = "expired"
    LATE_RST = "late-rst"
    LATE_DROP = "late-drop"
    LATE_PASS = "late-pass"


KILLED = (Fate.EXPIRED, Fate.LATE_RST, Fate.LATE_DROP)


@dataclass(slots=True)
class Connection:
    """One captured connection and what the appliance made of it."""

    proto: int
    client: tuple[bytes, int]
    server: tuple[bytes, int]
    first: float
    last: float
    packets: int = 0
    longest_gap: float = 0.0
    gap_at: float = 0.0
    probes: list[tuple[float, float]] = field(default_factory=list)
    """(time, idle gap before it) of each keepalive probe seen."""
    fate: Fate = Fate.UNTOUCHED
    expired_at: float | None = None
    late_at: float | None = None
    late_from: str = ""
    closed: bool = False
    fins: set[str] = field(default_factory=set)
    appliance_rsts: list[tuple[float, str]] = field(default_factory=list)
    """(time, who it went to) of each RST the appliance sent for this connection."""
    captured_rsts: list[tuple[float, str, float]] = field(default_factory=list)
    """(time, who sent it, idle gap before it) of each RST in the capture."""
    retransmits_after_gap: list[tuple[float, str, bool]] = field(default_factory=list)
    """(time, who, dropped by the appliance) of data sent again after a long gap."""
    next_seq: dict[str, int] = field(default_factory=dict)
    inside: Key = (0, b"", 0, b"", 0)
    """The engine's key for the connection (client first)."""

    @property
    def name(self) -> str:
        kind = "TCP" if self.proto == IPPROTO_TCP else "UDP"
        return f"{kind} {endpoint(*self.client)} -> {endpoint(*self.server)}"

    def explanations(self) -> list[str]:
        out = []
        for t, sender, gap in self.captured_rsts:
            receiver = "server" if sender == "client" else "client"
            ours = any(abs(at - t) <= EXPLAIN_WINDOW and to == receiver
                       for at, to in self.appliance_rsts)
            out.append(f"the capture's RST to the {receiver} at {t:.1f} s (after {gap:.0f} s "
                       f"idle) is {'explained' if ours else 'NOT explained'} by the appliance")
        if self.retransmits_after_gap:
            t, who, dropped = self.retransmits_after_gap[0]
            n = len(self.retransmits_after_gap)
            why = ("explained (the appliance drops them)" if dropped
                   else "NOT explained by the appliance")
            out.append(f"{n} retransmission(s) from the {who} after the expiry, from "
                       f"{t:.1f} s: {why}")
        return out

    def to_dict(self) -> JsonObject:
        return {"flow": self.name, "first": round(self.first, 6), "last": round(self.last, 6),
                "packets": self.packets, "longest_gap": round(self.longest_gap, 3),
                "gap_at": round(self.gap_at, 3), "verdict": str(self.fate),
                "expired_at": self.expired_at, "late_at": self.late_at,
                "late_from": self.late_from or None,
                "keepalive_probes": [{"t": round(t, 3), "after_idle": round(g, 3)}
                                     for t, g in self.probes],
                "explanations": self.explanations()}


@dataclass
class Replay:
    """Feed captured packets in time order; read :attr:`connections`."""

    appliance: Appliance
    connections: dict[Key, Connection] = field(default_factory=dict)
    origin: float | None = None
    skipped: int = 0
    """Packets the engine does not model (not TCP/UDP, fragments)."""
    max_connections: int = 10_000_000
    """Connections followed; the packets of any beyond are counted in :attr:`over_cap`."""
    over_cap: int = 0

    def __post_init__(self) -> None:
        self.box = Middlebox(self.appliance.with_overrides({"nat": False, "backends": 1,
                                                            "max_flows": 10_000_000}))
        a = self.box.appliance
        # the shortcut below is exact only where a packet of a live flow does nothing but
        # refresh it: no inspection hosts to tell, no keepalive echo, data-only refresh off
        self._fast = not a.targets and a.keepalive_echo is None and a.keepalive_refreshes
        self.box.expired_log = []
        self._by_flow: dict[int, Connection] = {}

    def feed_all(self, packets: Iterable[tuple[float, bytes]]) -> None:
        for ts, packet in packets:
            self.feed(ts, packet)
        self.finish()

    def feed(self, ts: float, raw: bytes) -> None:
        if self.origin is None:
            self.origin = ts
        t = ts - self.origin
        head = _headers(raw)  # the fields the rules need, without building a Packet
        if head is None:
            pkt = parse(raw)
            if pkt is None or pkt.proto not in (IPPROTO_TCP, IPPROTO_UDP):
                self.skipped += 1
                return
            head = (pkt.proto, pkt.src, pkt.sport, pkt.dst, pkt.dport, pkt.total_len,
                    pkt.payload_len, pkt.flags, pkt.seq)
        proto, src, sport, dst, dport, total_len, payload_len, flags, seq = head
        a, b = (src, sport), (dst, dport)
        key: Key = (proto, *min(a, b), *max(a, b))
        conn = self.connections.get(key)
        tcp = proto == IPPROTO_TCP
        syn = tcp and flags & (SYN | ACK) == SYN
        if conn is None:
            if len(self.connections) >= self.max_connections:
                self.over_cap += 1
                return
            client, server = (a, b) if syn or a[1] > b[1] else (b, a)
            conn = self.connections[key] = Connection(proto, client, server, t, t)
            conn.inside = (proto, *client, *server)
        who = "client" if a == conn.client else "server"
        resent = self._account(conn, flags, seq, payload_len, who, t)
        flows = self.box.flows
        had_flow = flows.by_inside.get(conn.inside)
        if (self._fast and had_flow is not None and not flags & (SYN | FIN | RST)
                and had_flow.state not in _OPENING
                and t - had_flow.last_seen < had_flow.timeout
                and (flows.next_deadline() or INF) > t):
            # Nothing can expire before this packet and it changes no state: what the
            # engine would do with it is to move the flow's idle timer and sequence space.
            had_flow.last_seen = t
            if tcp:
                had_flow.advance(0 if who == "client" else 1, (seq + payload_len) & 0xFFFFFFFF)
            return
        self._through_engine(conn, total_len, raw, who, t, syn, had_flow, resent)

    def _through_engine(self, conn: Connection, length: int, raw: bytes, who: str, t: float,
                        syn: bool, had_flow: Flow | None, resent: bool) -> None:
        packet = bytearray(raw[:length])
        side = Side.INSIDE if who == "client" else Side.OUTSIDE
        sent = self.box.on_packet(packet, side, t)
        self._expired(t)
        flow = self.box.flows.by_inside.get(conn.inside)
        if flow is not None:
            self._by_flow[flow.id] = conn
        for out in sent:
            # the appliance's own segments have no options: flags at 20 + 13 (IPv6: 40 + 13)
            if out.made and out.packet[53 if out.packet[0] >> 4 == 6 else 33] & RST:
                conn.appliance_rsts.append((t, "client" if out.side is Side.INSIDE
                                            else "server"))
        forwarded = any(not out.made for out in sent)  # as it came, or translated
        if not syn and (had_flow is None or had_flow is not flow) \
                and conn.expired_at is not None and conn.late_at is None:
            self._late(conn, who, t, forwarded, flow)
        if resent and conn.expired_at is not None:
            conn.retransmits_after_gap.append((t, who, not forwarded))

    def _account(self, conn: Connection, flags: int, seq: int, payload: int, who: str,
                 t: float) -> bool:
        """Update the connection's record; whether the packet resends data already sent."""
        gap = t - conn.last
        if conn.packets and gap > conn.longest_gap:
            conn.longest_gap, conn.gap_at = gap, conn.last
        conn.packets += 1
        conn.last = t
        expected = conn.next_seq.get(who)
        resent = False
        if conn.proto == IPPROTO_TCP and expected is not None:
            if payload <= 1 and not flags & (SYN | FIN | RST) \
                    and seq == (expected - 1) & 0xFFFFFFFF:
                conn.probes.append((t, gap))
            elif payload and 0 < (expected - seq) & 0xFFFFFFFF < 0x80000000:
                resent = True
        if conn.proto == IPPROTO_TCP:
            end = (seq + payload + (1 if flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
            if expected is None or (end - expected) & 0xFFFFFFFF < 0x80000000:
                conn.next_seq[who] = end
            if flags & RST:
                conn.captured_rsts.append((t, who, gap))
                conn.closed = True
            if flags & FIN:
                conn.fins.add(who)
                conn.closed = len(conn.fins) == 2
        return resent

    def _expired(self, now: float) -> None:
        log = self.box.expired_log
        assert log is not None
        for flow in log:
            conn = self._by_flow.get(flow.id)
            if conn is not None and not conn.closed and conn.expired_at is None:
                conn.expired_at = round(flow.deadline, 6)
                conn.fate = Fate.EXPIRED
        log.clear()

    def _late(self, conn: Connection, who: str, t: float, forwarded: bool,
              flow: object) -> None:
        conn.late_at, conn.late_from = round(t, 6), who
        rule = self.appliance.late_from_inside if who == "client" \
            else self.appliance.late_from_outside
        if forwarded:
            conn.fate = Fate.LATE_PASS
        elif rule is LateAction.RST and conn.proto == IPPROTO_TCP:
            conn.fate = Fate.LATE_RST
        else:
            conn.fate = Fate.LATE_DROP

    def finish(self) -> None:
        """The end of the capture: the timers due by then (the last packet's time)."""
        if self.origin is not None:
            last = max((c.last for c in self.connections.values()), default=0.0)
            self.box.expire(last)
            self._expired(last)

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {str(f): 0 for f in Fate}
        for conn in self.connections.values():
            counts[str(conn.fate)] += 1
        return counts
