"""As much of a kernel as a scenario's outcome depends on, in virtual time: the fake
backend's hosts (:mod:`simulator.world.backends.fake`).

TCP: handshake, data and ACKs, retransmission with Linux's back-off (200 ms doubling to
120 s, 15 tries), keepalive probes timed as Linux times them (one below the next sequence
number, ``count`` unanswered ones and the connection is given up), RST handling, and an RST
from a host that has no socket for a segment. UDP: datagrams to a port's handler (the DNS
query of a client that waits for its network). A host whose link is down sends nothing.
Times are the kernel's: wall seconds, on the fake network's
:class:`~simulator.core.clock.ManualClock`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from simulator.core.clock import ManualClock
from simulator.core.events import Side
from simulator.core.packets import (
    ACK,
    FIN,
    IPPROTO_UDP,
    PSH,
    RST,
    SYN,
    build_tcp,
    internet_checksum,
    parse,
)

RTO_MIN, RTO_MAX, RETRIES2 = 0.2, 120.0, 15
"""Linux: the first retransmission after 200 ms, doubling up to 120 s, 15 tries."""


@dataclass
class Tcp:
    """One end of one connection, as much of TCP as outcomes depend on."""

    host: Host
    local: tuple[bytes, int]
    remote: tuple[bytes, int]
    snd_nxt: int
    snd_una: int
    rcv_nxt: int = 0
    state: str = "SYN_SENT"
    keepalive: tuple[float, float, int] | None = None
    """(idle, interval, count) in seconds, if SO_KEEPALIVE is on."""
    user_timeout: float | None = None
    """``TCP_USER_TIMEOUT`` in seconds: for keepalive, it replaces the probe count."""
    last_received: float = 0.0
    probes_out: int = 0
    retries: int = 0
    received: bytes = b""
    on_event: Callable[[str], None] = lambda _kind: None
    """Tells the program: established, data, acked, reset, timedout, closed."""
    _timer_epoch: int = 0

    def send(self, flags: int, payload: bytes = b"", seq: int | None = None) -> None:
        seq = self.snd_nxt if seq is None else seq
        self.host.transmit(build_tcp(*self.local, *self.remote, seq, self.rcv_nxt,
                                     flags, 64240, payload=payload))

    def write(self, data: bytes) -> None:
        self.send(ACK | PSH, data)
        self.snd_nxt += len(data)
        self.retries = 0
        self._arm_retransmit(self.snd_una, data, RTO_MIN)

    def close(self) -> None:
        if self.state == "ESTABLISHED":
            self.send(ACK | FIN)
            self.snd_nxt += 1
            self.state = "FIN_WAIT"

    def _arm_retransmit(self, seq: int, data: bytes, rto: float) -> None:
        epoch = self._timer_epoch

        def fire() -> None:
            if epoch != self._timer_epoch or self.state != "ESTABLISHED" \
                    or self.snd_una > seq:
                return
            self.retries += 1
            if self.retries > RETRIES2:
                self._fail("timedout")
                return
            self.send(ACK | PSH, data, seq=seq)
            self._arm_retransmit(seq, data, min(rto * 2, RTO_MAX))

        self.host.clock.call_at(self.host.clock.now() + rto, fire)

    def arm_keepalive(self) -> None:
        if self.keepalive is None or self.state != "ESTABLISHED":
            return
        idle, interval, count = self.keepalive
        clock = self.host.clock

        def fire() -> None:
            if self.state != "ESTABLISHED" or self.snd_una != self.snd_nxt:
                return
            silent = clock.now() - self.last_received
            due = idle if self.probes_out == 0 else interval
            if silent + 1e-9 < idle and self.probes_out == 0:
                clock.call_at(self.last_received + idle, fire)
                return
            # Linux tcp_keepalive_timer: with TCP_USER_TIMEOUT the count is ignored
            if (self.probes_out >= count if self.user_timeout is None else
                    self.probes_out > 0 and silent + 1e-9 >= self.user_timeout):
                self.send(RST | ACK)
                self._fail("timedout")
                return
            self.send(ACK, seq=self.snd_nxt - 1)  # the probe: one below what the peer expects
            self.probes_out += 1
            clock.call_at(clock.now() + (interval if self.probes_out else due), fire)

        clock.call_at(self.last_received + idle, fire)

    def _fail(self, kind: str) -> None:
        self.state = "CLOSED"
        self._timer_epoch += 1
        self.on_event(kind)

    def receive(self, flags: int, seq: int, ack: int, payload: bytes) -> None:
        self.last_received = self.host.clock.now()
        self.probes_out = 0
        if flags & RST:
            if self.state != "CLOSED":
                self._fail("reset")
            return
        if self.state == "CLOSED":  # reset or timed out: no socket any more, so an RST
            length = len(payload) + (1 if flags & (SYN | FIN) else 0)
            self.host.transmit(build_tcp(*self.local, *self.remote,
                                         ack if flags & ACK else 0, seq + length, RST | ACK))
            return
        if self.state == "SYN_SENT":
            if flags & SYN and flags & ACK:
                self.rcv_nxt, self.snd_una, self.state = seq + 1, ack, "ESTABLISHED"
                self.send(ACK)
                self.on_event("established")
                self.arm_keepalive()
            return
        if flags & ACK and 0 < (ack - self.snd_una) & 0xFFFFFFFF < 0x80000000:
            self.snd_una = ack
            if self.snd_una == self.snd_nxt:
                self.on_event("acked")
        if payload and self.state == "FIN_WAIT":
            # the program closed this socket: data for it is answered with an RST
            self.send(RST)
            self.state = "CLOSED"
            self._timer_epoch += 1
            return
        if payload and seq == self.rcv_nxt:
            self.rcv_nxt += len(payload)
            self.received += payload
            self.send(ACK)
            self.on_event("data")
        elif payload or (seq + 1) & 0xFFFFFFFF == self.rcv_nxt:  # old data, or a keepalive probe
            self.send(ACK)
        if flags & FIN and (seq + len(payload)) & 0xFFFFFFFF == self.rcv_nxt:
            self.rcv_nxt += 1
            self.send(ACK)
            self.on_event("closed")


@dataclass
class Host:
    """An end host: its sockets, and the link to the middlebox's ``side``."""

    name: str
    address: bytes
    side: Side
    clock: ManualClock
    send_out: Callable[[bytearray, Side], None]
    """Puts a packet on the host's link (towards the middlebox's ``side``)."""
    conns: dict[tuple[int, bytes, int], Tcp] = field(default_factory=dict)
    listening: dict[int, Callable[[Tcp], None]] = field(default_factory=dict)

    datagrams: dict[int, Callable[[bytes, int, bytes], None]] = field(default_factory=dict)
    """UDP handlers by local port: ``handler(source address, source port, payload)``."""
    link_up: bool = True

    def transmit(self, packet: bytearray) -> None:
        if self.link_up:
            self.send_out(packet, self.side)

    def send_datagram(self, sport: int, dst: bytes, dport: int, payload: bytes) -> None:
        self.transmit(build_udp(self.address, sport, dst, dport, payload))

    def deliver(self, packet: bytearray) -> None:
        pkt = parse(packet)
        if pkt is not None and pkt.proto == IPPROTO_UDP:
            handler = self.datagrams.get(pkt.dport)
            if handler is not None:
                handler(pkt.src, pkt.sport, bytes(packet[pkt.l4 + 8:pkt.total_len]))
            return
        if pkt is None or pkt.proto != 6:
            return
        payload = bytes(packet[pkt.l4 + 20:pkt.total_len])
        conn = self.conns.get((pkt.dport, pkt.src, pkt.sport))
        if conn is not None:
            conn.receive(pkt.flags, pkt.seq, pkt.ack, payload)
        elif pkt.flags & SYN and not pkt.flags & ACK and pkt.dport in self.listening:
            conn = Tcp(self, (self.address, pkt.dport), (pkt.src, pkt.sport), snd_nxt=70_001,
                       snd_una=70_000, rcv_nxt=pkt.seq + 1, state="ESTABLISHED",
                       last_received=self.clock.now())
            self.conns[(pkt.dport, pkt.src, pkt.sport)] = conn
            conn.send(SYN | ACK, seq=70_000)
            self.listening[pkt.dport](conn)
        elif not pkt.flags & RST:  # no socket: the kernel answers with an RST
            seq = pkt.ack if pkt.flags & ACK else 0
            self.transmit(build_tcp(self.address, pkt.dport, pkt.src, pkt.sport, seq,
                                    pkt.seq + pkt.seg_len, RST | ACK))


def build_udp(src: bytes, sport: int, dst: bytes, dport: int, payload: bytes) -> bytearray:
    """An IPv4+UDP datagram, checksums filled in."""
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), 0, 0x4000, 64,
                               IPPROTO_UDP, 0, src, dst))
    struct.pack_into("!H", ip, 10, internet_checksum(ip))
    udp = bytearray(struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)) + payload
    pseudo = src + dst + struct.pack("!BBH", 0, IPPROTO_UDP, len(udp))
    struct.pack_into("!H", udp, 6, internet_checksum(pseudo + udp) or 0xFFFF)
    return ip + udp
