"""The fake backend: hosts and network in memory, in virtual time -- a test double.

A scenario normally runs with real kernels: real sockets in namespaces or containers, real
keepalive timers, the real dataplane. That is the product, and the only thing natsim ever
gives a verdict from. This module is for natsim's own unit suite: the same engine, the same
run session and the same messages, but the client's and the server's TCP are a small model
(handshake, data, ACKs, retransmission with back-off, keepalive probes as Linux times them,
RST handling), and time jumps from one deadline to the next (trio's autojump clock idea). A
whole scenario then runs in milliseconds with no privilege at all, so the session, the
verdict logic, the programs' settings and the engine's rules are exercised end to end on
every ``make test-fast``. It is deliberately not offered by ``natsim run``: a fake kernel
must never give a user's verdict.

Time: everything here is model seconds. What the kernel times in wall seconds (RTO, the
SYN retransmission, keepalive settings, which the plan has already turned into whole wall
seconds) becomes model time multiplied by the speed, exactly as a compressed run sees it.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.core.chain import Chain
from simulator.core.engine import Middlebox, Transmit
from simulator.core.events import Side
from simulator.core.messages import ClientOutcome, Kind, Message, Role, ServerOutcome
from simulator.core.packets import ACK, FIN, PSH, RST, SYN, build_tcp, ip_from_str, parse
from simulator.core.plan import CLIENT_IP, SERVER_IP
from simulator.core.session import RunSession
from simulator.spec.compression import Plan
from simulator.spec.compression import plan as make_plan
from simulator.spec.scenario import Scenario
from simulator.views.report import RunResult

RTO_MIN, RTO_MAX, RETRIES2 = 0.2, 120.0, 15
"""Linux: the first retransmission after 200 ms, doubling up to 120 s, 15 tries."""
SYN_RTO, CONNECT_TIMEOUT = 1.0, 10.0
"""Linux's first SYN retransmission after 1 s; the client's own connect timeout (wall)."""
LINK_DELAY = 1e-4
"""Wall seconds a packet takes over a link (keeps causality without a real network)."""


class FakeUnsupportedError(ValueError):
    """The scenario needs something the fake network does not model (UDP, load, several
    backends, Docker): run it for real."""


class Clock:
    """Virtual model time and a heap of things to do."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (max(when, self.now), next(self._seq), action))

    def run(self, done: Callable[[], bool], limit: float) -> None:
        while self._heap and not done() and self._heap[0][0] <= limit:
            self.now, _, action = heapq.heappop(self._heap)
            action()


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
    """(idle, interval, count) in model seconds, if SO_KEEPALIVE is on."""
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
        self._arm_retransmit(self.snd_una, data, self.host.wall(RTO_MIN))

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
            self._arm_retransmit(seq, data, min(rto * 2, self.host.wall(RTO_MAX)))

        self.host.clock.at(self.host.clock.now + rto, fire)

    def arm_keepalive(self) -> None:
        if self.keepalive is None or self.state != "ESTABLISHED":
            return
        idle, interval, count = self.keepalive
        clock = self.host.clock

        def fire() -> None:
            if self.state != "ESTABLISHED" or self.snd_una != self.snd_nxt:
                return
            silent = clock.now - self.last_received
            due = idle if self.probes_out == 0 else interval
            if silent + 1e-9 < idle and self.probes_out == 0:
                clock.at(self.last_received + idle, fire)
                return
            if self.probes_out >= count:
                self.send(RST | ACK)
                self._fail("timedout")
                return
            self.send(ACK, seq=self.snd_nxt - 1)  # the probe: one below what the peer expects
            self.probes_out += 1
            clock.at(clock.now + (interval if self.probes_out else due), fire)

        clock.at(self.last_received + idle, fire)

    def _fail(self, kind: str) -> None:
        self.state = "CLOSED"
        self._timer_epoch += 1
        self.on_event(kind)

    def receive(self, flags: int, seq: int, ack: int, payload: bytes) -> None:
        self.last_received = self.host.clock.now
        self.probes_out = 0
        if flags & RST:
            if self.state != "CLOSED":
                self._fail("reset")
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
    world: FakeWorld
    conns: dict[tuple[int, bytes, int], Tcp] = field(default_factory=dict)
    listening: dict[int, Callable[[Tcp], None]] = field(default_factory=dict)

    @property
    def clock(self) -> Clock:
        return self.world.clock

    def wall(self, seconds: float) -> float:
        """Model seconds for a kernel timer of ``seconds`` wall seconds."""
        return seconds * self.world.speed

    def transmit(self, packet: bytearray) -> None:
        self.world.to_middlebox(packet, self.side)

    def deliver(self, packet: bytearray) -> None:
        pkt = parse(packet)
        if pkt is None or pkt.proto != 6:
            return
        payload = bytes(packet[pkt.l4 + 20:pkt.total_len])
        conn = self.conns.get((pkt.dport, pkt.src, pkt.sport))
        if conn is not None:
            conn.receive(pkt.flags, pkt.seq, pkt.ack, payload)
        elif pkt.flags & SYN and not pkt.flags & ACK and pkt.dport in self.listening:
            conn = Tcp(self, (self.address, pkt.dport), (pkt.src, pkt.sport), snd_nxt=70_001,
                       snd_una=70_000, rcv_nxt=pkt.seq + 1, state="ESTABLISHED",
                       last_received=self.clock.now)
            self.conns[(pkt.dport, pkt.src, pkt.sport)] = conn
            conn.send(SYN | ACK, seq=70_000)
            self.listening[pkt.dport](conn)
        elif not pkt.flags & RST:  # no socket: the kernel answers with an RST
            seq = pkt.ack if pkt.flags & ACK else 0
            self.transmit(build_tcp(self.address, pkt.dport, pkt.src, pkt.sport, seq,
                                    pkt.seq + pkt.seg_len, RST | ACK))


class FakeWorld:
    """Client -> middlebox engine -> server, linked in virtual time."""

    def __init__(self, engine: Middlebox | Chain, speed: float, session: RunSession) -> None:
        self.clock = Clock()
        self.engine = engine
        self.speed = speed
        self.session = session
        self.client = Host(Role.CLIENT, ip_from_str(CLIENT_IP), Side.INSIDE, self)
        self.server = Host(Role.SERVER, ip_from_str(SERVER_IP), Side.OUTSIDE, self)
        session.middlebox_ready(0.0)

    def report(self, source: str, kind: Kind, text: str, **data: Any) -> None:
        self.session.feed(Message(source, kind, text, mono=self.clock.now / self.speed,
                                  data=data))

    def to_middlebox(self, packet: bytearray, side: Side) -> None:
        self.clock.at(self.clock.now + LINK_DELAY * self.speed,
                      lambda: self._through(packet, side))

    def _through(self, packet: bytearray, side: Side) -> None:
        self._act(self.engine.on_packet(packet, side, self.clock.now))

    def _act(self, sent: list[Transmit]) -> None:
        for event in self.engine.take_events():
            self.session.feed(Message.from_dict(event.to_dict(), Role.MIDDLEBOX))
        for transmit in sent:
            host = self.client if transmit.side is Side.INSIDE else self.server
            self.clock.at(self.clock.now + LINK_DELAY * self.speed,
                          functools.partial(host.deliver, transmit.packet))
        deadline = self.engine.next_deadline()
        if deadline is not None:
            self.clock.at(deadline, lambda: self._act(self.engine.expire(self.clock.now)))


def _client(world: FakeWorld, s: Scenario, p: Plan, cfg: dict[str, Any]) -> None:
    """The built-in client (workloads/client.py), in the fake world."""
    host, clock, speed = world.client, world.clock, world.speed
    keepalive = None
    if cfg["keepalive"] == "socket":
        keepalive = (cfg["idle"] * speed, cfg["interval"] * speed, cfg["count"])
    elif cfg["keepalive"] == "os":
        wall = p.wall_sysctls()
        keepalive = (wall["tcp_keepalive_time"] * speed, wall["tcp_keepalive_intvl"] * speed,
                     wall["tcp_keepalive_probes"])
    conn = Tcp(host, (host.address, 40000), (ip_from_str(SERVER_IP), s.server_port),
               snd_nxt=1001, snd_una=1000, keepalive=keepalive)
    host.conns[(40000, ip_from_str(SERVER_IP), s.server_port)] = conn
    done: list[str] = []

    def finish(outcome: ClientOutcome, kind: Kind, text: str) -> None:
        if done:
            return
        done.append(outcome)
        world.report(Role.CLIENT, kind, text)
        world.report(Role.CLIENT, Kind.OUTCOME, outcome, outcome=str(outcome))
        conn.close()

    def event(kind: str) -> None:
        if kind == "established":
            world.report(Role.CLIENT, Kind.CONNECTED, "connected (fake network)")
            conn.write(s.request.encode() + b"\n")
            world.report(Role.CLIENT, Kind.REQUEST_SENT, f"request sent: {s.request!r}")
            clock.at(clock.now + cfg["timeout"] * speed, lambda: finish(
                ClientOutcome.TIMEOUT, Kind.TIMEOUT, "gave up waiting: client timeout"))
        elif kind == "data" and conn.received.endswith(b"\n"):
            finish(ClientOutcome.ANSWER, Kind.ANSWER, f"answer received: {conn.received!r}")
        elif kind == "reset":
            finish(ClientOutcome.RESET, Kind.RESET, "connection reset (ECONNRESET)")
        elif kind == "timedout":
            finish(ClientOutcome.KEEPALIVE_FAILED, Kind.KEEPALIVE_FAILED,
                   "the kernel gave up the connection (ETIMEDOUT)")

    conn.on_event = event
    conn.send(SYN, seq=1000)
    clock.at(clock.now + SYN_RTO * speed,
             lambda: conn.send(SYN, seq=1000) if conn.state == "SYN_SENT" else None)
    clock.at(clock.now + CONNECT_TIMEOUT * speed, lambda: finish(
        ClientOutcome.CONNECT_FAILED, Kind.CONNECT_FAILED, "connect timed out")
        if conn.state == "SYN_SENT" else None)


def _server(world: FakeWorld, cfg: dict[str, Any]) -> None:
    """The built-in server (workloads/server.py), in the fake world."""
    clock, speed = world.clock, world.speed
    done: list[str] = []

    def finish(outcome: ServerOutcome, kind: Kind, text: str) -> None:
        if not done:
            done.append(outcome)
            world.report(Role.SERVER, kind, text)
            world.report(Role.SERVER, Kind.OUTCOME, outcome, outcome=str(outcome))

    def accept(conn: Tcp) -> None:
        world.report(Role.SERVER, Kind.ACCEPTED, "accepted a connection")
        answered: list[bool] = []

        def event(kind: str) -> None:
            if kind == "data" and conn.received.endswith(b"\n") and not answered:
                answered.append(True)
                world.report(Role.SERVER, Kind.REQUEST_RECEIVED, "request received")
                clock.at(clock.now + cfg["delay"] * speed, answer)
            elif kind == "acked" and answered == [True, True]:
                finish(ServerOutcome.DELIVERED, Kind.DELIVERED, "answer acknowledged")
            elif kind == "reset" and answered:
                finish(ServerOutcome.RESET, Kind.RESET, "connection reset (ECONNRESET)")
            elif kind == "closed" and answered == [True, True]:
                # the client left while the answer was still unacknowledged (server.py)
                finish(ServerOutcome.UNACKNOWLEDGED, Kind.CLIENT_CLOSED,
                       "the client closed the connection before acknowledging the answer")

        def answer() -> None:
            if conn.state != "ESTABLISHED":
                finish(ServerOutcome.RESET, Kind.SEND_FAILED, "the connection is gone")
                return
            answered.append(True)
            conn.write(cfg["answer"].encode() + b"\n")
            world.report(Role.SERVER, Kind.ANSWER_SENT, "answer sent")
            clock.at(clock.now + cfg["wait_limit"] * speed, lambda: finish(
                ServerOutcome.UNACKNOWLEDGED, Kind.UNACKNOWLEDGED,
                "the answer was never acknowledged"))

        conn.on_event = event

    world.server.listening[int(cfg["port"])] = accept
    world.report(Role.SERVER, Kind.READY, "listening")


def run_fake(s: Scenario, speed: float | None = None,
             results_dir: Path | None = None) -> RunResult:
    """Run a TCP scenario of one client and one server in the fake world."""
    if s.load is not None or s.protocol != "tcp" or any(
            a.backends > 1 for a in s.chain or (s.appliance,)) or s.proxy or s.attach:
        raise FakeUnsupportedError(f"{s.name}: the fake network models one TCP client and "
                                   "one server (no load, UDP, backends, proxy or late "
                                   "attach)")
    from simulator.core.plan import programs  # noqa: PLC0415 (keeps the import graph flat)

    p = make_plan(s, speed)
    session = RunSession(p.speed, (s.expect_client, s.expect_server), p.prediction.outcome())
    chain = list(s.chain or (s.appliance,))
    engine: Middlebox | Chain = Middlebox(chain[0]) if len(chain) == 1 else Chain(chain)
    if isinstance(engine, Middlebox):
        engine.path_events(s.events)
    world = FakeWorld(engine, p.speed, session)
    progs = programs(s, p)
    _server(world, json.loads(progs.server[-1]))
    _client(world, s, p, json.loads(progs.client[-1]))
    world.clock.run(lambda: {Role.CLIENT, Role.SERVER} <= {
        m.source for m in session.messages if m.kind == Kind.OUTCOME},
        limit=progs.wall_limit * p.speed)
    session.feed(Message(Role.MIDDLEBOX, Kind.STOPPED, t=world.clock.now,
                         data={"counters": dict(engine.counters)}))
    session.release_all()
    return RunResult(s, p, results_dir or Path("."), session.judge(),
                     sorted(session.timeline, key=lambda e: e.t), session.counters,
                     wall_seconds=0.0)
