"""The fake backend: hosts and network in memory, in virtual time -- a test double.

A scenario normally runs with real kernels: real sockets in namespaces or containers, real
keepalive timers, the real dataplane. That is the product, and the only thing natsim ever
gives a verdict from. This backend is for natsim's own unit suite: the same driver, the same
engine, the same typed configurations and messages, but the programs are models -- the
built-in client, server and DNS server (:class:`FakeClient`, :class:`FakeServer`,
:class:`FakeDns`) over a small TCP and UDP (:mod:`~simulator.world.backends.fake_kernel`)
-- and time jumps from one deadline to the next on a
:class:`~simulator.core.clock.ManualClock`. A whole scenario then runs through the
driver in milliseconds with no privilege at all. ``get_backend`` refuses it: a fake kernel
must never give a user's verdict.

Time: the fake clock counts the world's wall seconds, which the programs stamp their
messages with, as real programs stamp ``time.monotonic()``. The middlebox's model time is
``(now - origin) * speed``, as the dataplane's compressed clock has it.

Each program may be told to start late (``startup``: seconds before it is ready), so that
a driver that does not wait for it shows; the middlebox may be told to hang or die
(``hang_at``, ``die_at``: seconds after it is ready), so that liveness is tested too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from simulator.core.chain import Chain
from simulator.core.clock import ManualClock
from simulator.core.configs import (
    ClientConfig,
    DnsConfig,
    MiddleboxConfig,
    ProgramConfig,
    ServerConfig,
)
from simulator.core.engine import Middlebox, Transmit
from simulator.core.events import Side
from simulator.core.jsonvalue import Json
from simulator.core.messages import (
    ClientOutcome,
    Kind,
    Message,
    MiddleboxReady,
    MiddleboxStopped,
    Role,
    ServerOutcome,
)
from simulator.core.packets import SYN, ip_from_str, ip_to_str
from simulator.core.plan import HostPlan, WorldPlan
from simulator.world import topology
from simulator.world.backends.fake_kernel import Host, Tcp
from simulator.world.modeltime import WorldClock
from simulator.world.process import Program

SYN_RTO, CONNECT_TIMEOUT = 1.0, 10.0
"""Linux's first SYN retransmission after 1 s; the built-in client's connect timeout."""
LINK_DELAY = 1e-4
"""Seconds a packet takes over a link (keeps causality without a real network)."""
BEAT = 0.5
"""Seconds between two of the middlebox's heartbeats, as the dataplane's."""
DNS_PORT, DNS_CLIENT_PORT, RESOLVER_TIMEOUT = 53, 33000, 5.0
"""The world's DNS server's port; the client resolver's ports and its timeout (glibc's)."""


class FakeUnsupportedError(ValueError):
    """The scenario needs something the fake network does not model (UDP workloads, load,
    a proxy): the integration suite runs it for real."""


class FakeProgram:
    """What every fake program shares: its messages, its exit status, stop and kill."""

    def __init__(self, role: str, net: FakeBackend) -> None:
        self.role = role
        self.net = net
        self.status: int | None = None
        self._said: list[Message] = []

    def say(self, kind: Kind, text: str = "", **data: Json) -> None:
        if self.status is None:
            self._said.append(Message(self.role, kind, text, mono=self.net.now(), data=data))

    def read(self) -> list[Message]:
        said, self._said = self._said, []
        return said

    @property
    def pending(self) -> bool:
        return bool(self._said)

    def poll(self) -> int | None:
        return self.status

    def stop(self) -> None:
        """SIGTERM: the built-in programs have no handler, so they end there."""
        self.exit(-15)

    def kill(self) -> None:
        self.exit(-9)

    def exit(self, status: int) -> None:
        if self.status is None:
            self.status = status

    def fileno(self) -> int | None:
        return None

    def close(self) -> None:
        """Nothing to let go of: its words are in memory."""


class FakeMiddlebox(FakeProgram):
    """The engine on the fake network, speaking the dataplane's protocol: ready with its
    origin, a heartbeat every 0.5 s, the engine's events in model time, a final report."""

    def __init__(self, net: FakeBackend, config: MiddleboxConfig, startup: float,
                 hang_at: float | None, die_at: float | None) -> None:
        super().__init__(Role.MIDDLEBOX, net)
        chain = list(config.chain)
        self.engine: Middlebox | Chain = Middlebox(chain[0]) if len(chain) == 1 \
            else Chain(chain)
        if isinstance(self.engine, Middlebox):
            self.engine.path_events(config.path_events)
        self.speed = config.speed
        self.origin: float | None = None
        self.hung = False
        self._timer_epoch = 0
        clock = net.clock
        clock.call_at(clock.now() + startup, self._ready)
        if hang_at is not None:
            clock.call_at(clock.now() + startup + hang_at, self._hang)
        if die_at is not None:
            clock.call_at(clock.now() + startup + die_at, lambda: self.exit(-9))

    @property
    def forwarding(self) -> bool:
        """Its ports are bound and its loop turns: before ``ready`` nothing crosses."""
        return self.origin is not None and self.status is None and not self.hung

    def model(self) -> float:
        assert self.origin is not None
        return (self.net.now() - self.origin) * self.speed

    def _ready(self) -> None:
        if self.status is not None:
            return
        self.origin = self.net.now()
        self._said.append(Message.carrying(Role.MIDDLEBOX, Kind.READY,
                                           MiddleboxReady(self.origin, "fake")))
        self._beat()

    def _beat(self) -> None:
        if self.forwarding:
            self.say(Kind.HEARTBEAT)
            self.net.clock.call_at(self.net.now() + BEAT, self._beat)

    def _hang(self) -> None:
        self.hung = True

    def on_packet(self, packet: bytearray, side: Side) -> None:
        if self.forwarding:
            self._act(self.engine.on_packet(packet, side, self.model()))

    def _act(self, sent: list[Transmit]) -> None:
        for event in self.engine.take_events():
            if self.status is None:
                self._said.append(Message.from_dict(event.to_dict(), Role.MIDDLEBOX))
        for transmit in sent:
            self.net.to_host(transmit)
        deadline = self.engine.next_deadline()
        if deadline is not None:
            self._timer_epoch += 1
            epoch = self._timer_epoch
            assert self.origin is not None
            self.net.clock.call_at(self.origin + deadline / self.speed,
                                   lambda: self._expire(epoch))

    def _expire(self, epoch: int) -> None:
        if epoch == self._timer_epoch and self.forwarding:
            self._act(self.engine.expire(self.model()))

    def stop(self) -> None:
        """SIGTERM: the dataplane's handler writes its final counters, then it exits; a hung
        one never answers."""
        if self.status is not None or self.hung:
            return
        if self.origin is not None:
            self._said.append(Message.carrying(Role.MIDDLEBOX, Kind.STOPPED, MiddleboxStopped(
                dict(self.engine.counters)), t=self.model()))
        self.exit(0)


class FakeServer(FakeProgram):
    """The built-in server (``workloads/server.py``) on a fake host."""

    def __init__(self, net: FakeBackend, host: Host, config: ServerConfig,
                 startup: float) -> None:
        super().__init__(Role.SERVER, net)
        self.host, self.config = host, config
        self.conn: Tcp | None = None
        self.answered = 0
        self.delivered = False
        net.clock.call_at(net.now() + startup, self._listen)

    def _listen(self) -> None:
        if self.status is not None:
            return
        self.host.listening[self.config.port] = self._accept
        self.say(Kind.READY, f"listening on port {self.config.port}")
        limit = self.config.accept_limit or self.config.wait_limit
        self.net.clock.call_at(self.net.now() + limit, self._no_client)

    def _no_client(self) -> None:
        if self.conn is None:
            self.finish(ServerOutcome.NO_CLIENT, Kind.NO_CLIENT, "no client connected")

    def finish(self, outcome: ServerOutcome, kind: Kind, text: str) -> None:
        if self.status is None:
            self.say(kind, text)
            self.say(Kind.OUTCOME, str(outcome), outcome=str(outcome))
            self.exit(0)

    def _accept(self, conn: Tcp) -> None:
        if self.conn is not None or self.status is not None:
            return
        self.conn = conn
        self.host.listening.pop(self.config.port, None)
        self.say(Kind.ACCEPTED, "accepted a connection")
        conn.on_event = self._event

    def _event(self, kind: str) -> None:
        conn = self.conn
        assert conn is not None
        if kind == "data" and conn.received.endswith(b"\n") and not self.answered:
            self.answered = 1
            self.say(Kind.REQUEST_RECEIVED,
                     f"request received; working for {self.config.delay_label} before "
                     "answering")
            self.net.clock.call_at(self.net.now() + self.config.delay, self._answer)
        elif kind == "acked" and self.answered == 2 and not self.delivered:
            self.delivered = True
            self.say(Kind.DELIVERED, "answer acknowledged by the client's kernel")
        elif kind == "reset" and self.answered:
            self.finish(ServerOutcome.RESET, Kind.RESET,
                        "connection reset (ECONNRESET) after sending the answer")
        elif kind == "closed" and self.answered == 2:
            # a client that leaves before the answer is acknowledged left without it
            self.finish(ServerOutcome.DELIVERED if self.delivered
                        else ServerOutcome.UNACKNOWLEDGED, Kind.CLIENT_CLOSED,
                        "the client closed the connection")

    def _answer(self) -> None:
        conn = self.conn
        if self.status is not None or conn is None:
            return
        if conn.state != "ESTABLISHED":
            self.finish(ServerOutcome.RESET, Kind.SEND_FAILED, "the connection is gone")
            return
        self.answered = 2
        conn.write(self.config.answer.encode() + b"\n")
        self.say(Kind.ANSWER_SENT, "answer sent")
        self.net.clock.call_at(self.net.now() + self.config.wait_limit, self._watch_ends)

    def _watch_ends(self) -> None:
        if self.delivered:
            self.say(Kind.OUTCOME, str(ServerOutcome.DELIVERED),
                     outcome=str(ServerOutcome.DELIVERED))
            self.exit(0)
        else:
            self.finish(ServerOutcome.UNACKNOWLEDGED, Kind.UNACKNOWLEDGED,
                        "the answer was never acknowledged (still retransmitting)")


class FakeDns(FakeProgram):
    """The world's DNS server (``workloads/dns.py``): a name in, its address out, over UDP
    through the middlebox, as a real resolver's query goes."""

    def __init__(self, net: FakeBackend, host: Host, config: DnsConfig) -> None:
        super().__init__(Role.DNS, net)
        self.host, self.names = host, {k.lower(): v for k, v in config.names.items()}
        host.datagrams[config.port] = self._query
        self.say(Kind.READY, f"answering for {', '.join(self.names)}")

    def _query(self, src: bytes, sport: int, payload: bytes) -> None:
        name = payload.decode(errors="replace").lower()
        answer = self.names.get(name)
        if answer is not None and self.status is None:
            self.host.send_datagram(DNS_PORT, src, sport, answer.encode())
            self.say(Kind.DNS_ANSWER, f"DNS query from {ip_to_str(src)}: {name} -> {answer}")


class FakeClient(FakeProgram):
    """The built-in client (``workloads/client.py``) on a fake host: resolve (its hosts
    file, or the world's DNS server), connect, send one request, wait for the answer; try
    again on failure as configured."""

    def __init__(self, net: FakeBackend, host: Host, config: ClientConfig,
                 keepalive: tuple[float, float, int] | None, startup: float) -> None:
        super().__init__(Role.CLIENT, net)
        self.host, self.config, self.keepalive = host, config, keepalive
        self.conn: Tcp | None = None
        self.attempt = 0
        self.connected = False
        self.started = 0.0
        self.lookup: tuple[bytes | None, str] | None = None
        """The last answer for the server's name: its address, or the error's name."""
        net.clock.call_at(net.now() + startup, self._start)

    def _start(self) -> None:
        if self.status is None:
            self.say(Kind.READY, "client started")
            self.started = self.net.now()
            self._attempt()

    def _label(self) -> str:
        c = self.config
        return f"attempt {self.attempt} of {c.retries + 1}: " if c.retries else ""

    def _attempt(self) -> None:
        if self.status is not None:
            return
        self.attempt += 1
        if self.lookup is None or self.config.resolve == "each":
            self.net.resolve(self.host, self.config.host, self.attempt, self._resolved)
        else:
            self._resolved(self.lookup, kept=True)

    def _resolved(self, lookup: tuple[bytes | None, str], kept: bool = False) -> None:
        if self.status is not None:
            return
        self.lookup = lookup
        address, error = lookup
        if address is None:
            said = " (.NET: 'Resource temporarily unavailable')" if error == "EAI_AGAIN" else ""
            self.say(Kind.CONNECT_FAILED, f"{self._label()}resolving {self.config.host} "
                     f"failed: {error}: Temporary failure in name resolution{said}"
                     + (" (kept from the first lookup)" if kept else ""), error=error,
                     attempt=self.attempt)
            self._again()
        elif not self.host.link_up:
            self._connect_failed("Network is unreachable", "ENETUNREACH")
        else:
            self._connect(address)

    def _connect(self, address: bytes) -> None:
        port = 40000 + self.attempt
        user = self.config.user_timeout_ms
        conn = Tcp(self.host, (self.host.address, port), (address, self.config.port),
                   snd_nxt=1001, snd_una=1000, keepalive=self.keepalive,
                   user_timeout=None if user is None else user / 1000)
        self.host.conns[(port, address, self.config.port)] = conn
        self.conn = conn
        conn.on_event = self._event
        conn.send(SYN, seq=1000)
        clock = self.net.clock
        clock.call_at(clock.now() + SYN_RTO, functools.partial(self._resend_syn, conn))
        clock.call_at(clock.now() + CONNECT_TIMEOUT,
                      functools.partial(self._connect_timed_out, conn))

    def _resend_syn(self, conn: Tcp) -> None:
        if conn.state == "SYN_SENT" and conn is self.conn:
            conn.send(SYN, seq=1000)

    def _connect_timed_out(self, conn: Tcp) -> None:
        if conn.state != "SYN_SENT" or conn is not self.conn or self.status is not None:
            return
        conn.state = "CLOSED"
        self._connect_failed("Connection timed out", "ETIMEDOUT")

    def _connect_failed(self, why: str, name: str) -> None:
        c = self.config
        self.say(Kind.CONNECT_FAILED, f"{self._label()}connect to {c.host}:{c.port} failed: "
                 f"{why} ({name})", error=name, attempt=self.attempt)
        self._again()

    def _again(self) -> None:
        c = self.config
        if self.attempt <= c.retries:
            when = self.started + c.backoff * (2 ** self.attempt - 1)
            self.net.clock.call_at(when, self._attempt)
        else:
            self._outcome(ClientOutcome.CONNECT_FAILED)

    def _outcome(self, outcome: ClientOutcome) -> None:
        self.say(Kind.OUTCOME, str(outcome), outcome=str(outcome))
        if self.conn is not None:
            self.conn.close()
        self.exit(0)

    def finish(self, outcome: ClientOutcome, kind: Kind, text: str) -> None:
        if self.status is None:
            self.say(kind, text)
            self._outcome(outcome)

    def _event(self, kind: str) -> None:
        conn, c = self.conn, self.config
        assert conn is not None
        if kind == "reset" and not self.connected:  # no listener: the server's kernel's RST
            self._connect_failed("Connection refused", "ECONNREFUSED")
        elif kind == "established":
            self.connected = True
            self.say(Kind.CONNECTED, f"connected to {c.host}:{c.port} (fake network)")
            conn.write(c.request.encode() + b"\n")
            self.say(Kind.REQUEST_SENT, f"request sent: {c.request!r}; waiting for the answer")
            self.net.clock.call_at(self.net.now() + c.timeout, lambda: self.finish(
                ClientOutcome.TIMEOUT, Kind.TIMEOUT,
                "gave up waiting: client timeout reached, no answer"))
        elif kind == "data" and conn.received.endswith(b"\n"):
            self.finish(ClientOutcome.ANSWER, Kind.ANSWER,
                        f"answer received: {conn.received.decode(errors='replace')!r}")
        elif kind == "reset":
            self.finish(ClientOutcome.RESET, Kind.RESET,
                        "connection reset (ECONNRESET) while waiting for the answer")
        elif kind == "timedout":
            self.finish(ClientOutcome.KEEPALIVE_FAILED, Kind.KEEPALIVE_FAILED,
                        "the kernel gave up the connection (ETIMEDOUT): keepalive probes "
                        "went unanswered")


class FakeBackend:
    """Hosts, links and programs in memory; one world at a time."""

    name = "fake"

    def __init__(self, startup: Mapping[str, float] | None = None,
                 hang_at: float | None = None, die_at: float | None = None) -> None:
        self.clock = ManualClock()
        self.startup = dict(startup or {})
        self.hang_at, self.die_at = hang_at, die_at
        self.hosts: dict[str, Host] = {}
        self.plans: dict[str, HostPlan] = {}
        self.programs: list[FakeProgram] = []
        self.middlebox_program: FakeMiddlebox | None = None
        self.destroyed: list[str] = []

    # -- the world ------------------------------------------------------------------------

    def build(self, plan: WorldPlan, results_dir: Path) -> topology.World:
        if len(plan.client.addresses) > 1:
            raise FakeUnsupportedError("the fake network has one client address (no load)")
        if plan.middlebox_addresses:
            raise FakeUnsupportedError("a proxy terminates TCP in the middlebox's host, "
                                       "which the fake network does not have")
        if (":" in plan.client.address) != (":" in plan.servers[0].address):
            raise FakeUnsupportedError("IPv6 to IPv4 (NAT64, a dual-stack load balancer): the "
                                       "fake network's resolver has no DNS64 and its hosts "
                                       "one family")
        self.hosts["client"] = Host(Role.CLIENT, ip_from_str(plan.client.address), Side.INSIDE,
                                    self.clock, self.to_middlebox)
        self.plans["client"] = plan.client
        backends = []
        for i, server in enumerate(plan.servers):
            name = "server" if i == 0 else f"server{i}"
            self.hosts[name] = Host(name, ip_from_str(server.address), Side.OUTSIDE,
                                    self.clock, self.to_middlebox)
            self.plans[name] = server
            backends.append(topology.Backend(name, server.address, f"02:00:00:00:01:{i:02x}",
                                             f"outside{i}", f"02:00:00:00:02:{i:02x}"))
        return topology.World(plan.run_id, "client", "middlebox", "server",
                              "02:00:00:00:00:01", backends[0].mac, "02:00:00:00:00:02",
                              backends[0].mbox_mac, backends=tuple(backends))

    def start(self, host: str, config: ProgramConfig, stderr: IO[bytes]) -> Program:
        where = self.hosts.get(host)
        if where is None:
            raise FakeUnsupportedError(f"no host {host!r} in the fake network")
        program: FakeProgram
        if isinstance(config, ServerConfig):
            program = FakeServer(self, where, config, self.startup.get("server", 0.0))
        elif isinstance(config, ClientConfig):
            program = FakeClient(self, where, config, self._keepalive(config),
                                 self.startup.get("client", 0.0))
        elif isinstance(config, DnsConfig):
            program = FakeDns(self, where, config)
        else:
            raise FakeUnsupportedError(f"the fake network does not model {config.module} "
                                       "(UDP workloads, load, the proxy and the scripted pool "
                                       "client, whose retransmissions need a real kernel, run "
                                       "for real)")
        self.programs.append(program)
        return program

    def middlebox(self, world: topology.World, config: MiddleboxConfig, config_path: Path,
                  stderr: IO[bytes], detached: tuple[IO[bytes], IO[bytes]] | None = None
                  ) -> Program:
        program = FakeMiddlebox(self, config, self.startup.get("middlebox", 0.05),
                                self.hang_at, self.die_at)
        self.middlebox_program = program
        self.programs.append(program)
        return program

    def attach(self, world: topology.World, client: HostPlan, attached: bool) -> None:
        self.hosts["client"].link_up = attached

    def model_time(self, world: topology.World, clock: WorldClock
                   ) -> tuple[dict[str, str] | None, str]:
        return None, "the fake network runs models, not processes: nothing to put on a clock"

    def now(self) -> float:
        return self.clock.now()

    def wait(self, programs: Sequence[Program], timeout: float) -> None:
        """Jump from one due action to the next until a program has something to say."""
        fakes = [p for p in programs if isinstance(p, FakeProgram)]
        self.clock.run(self.clock.now() + timeout, lambda: any(p.pending for p in fakes))

    def destroy(self, run_id: str) -> None:
        for program in self.programs:
            program.exit(-9)
        self.hosts.clear()
        self.destroyed.append(run_id)

    # -- the links ------------------------------------------------------------------------

    def resolve(self, host: Host, name: str, attempt: int,
                then: Callable[[tuple[bytes | None, str]], None]) -> None:
        """``name`` as the client's resolver finds it: in its hosts file at once, or from
        the world's DNS server over the network (which fails at once without a link, and
        after the resolver's timeout without an answer)."""
        plan = self.plans["client"]
        found = next((ip for ip, known in plan.hosts if known == name), None)
        if found is not None:
            then((ip_from_str(found), ""))
            return
        if plan.nameserver is None or not host.link_up:
            then((None, "EAI_AGAIN"))
            return
        port = DNS_CLIENT_PORT + attempt
        answered: list[bool] = []

        def answer(src: bytes, sport: int, payload: bytes) -> None:
            host.datagrams.pop(port, None)
            answered.append(True)
            then((ip_from_str(payload.decode()), ""))

        def give_up() -> None:
            if not answered:
                host.datagrams.pop(port, None)
                then((None, "EAI_AGAIN"))

        host.datagrams[port] = answer
        host.send_datagram(port, ip_from_str(plan.nameserver), DNS_PORT, name.encode())
        self.clock.call_at(self.clock.now() + RESOLVER_TIMEOUT, give_up)

    def _keepalive(self, config: ClientConfig) -> tuple[float, float, int] | None:
        """(idle, interval, count) as the kernel times them: the socket's, or the client
        host's sysctls (the plan's, in wall seconds)."""
        if config.keepalive == "socket":
            assert config.idle and config.interval and config.count
            return float(config.idle), float(config.interval), config.count
        if config.keepalive == "os":
            sysctls = self.plans["client"].sysctls
            return (float(sysctls["net.ipv4.tcp_keepalive_time"]),
                    float(sysctls["net.ipv4.tcp_keepalive_intvl"]),
                    int(sysctls["net.ipv4.tcp_keepalive_probes"]))
        return None

    def to_middlebox(self, packet: bytearray, side: Side) -> None:
        self.clock.call_at(self.clock.now() + LINK_DELAY, functools.partial(
            self._through, packet, side))

    def _through(self, packet: bytearray, side: Side) -> None:
        if self.middlebox_program is not None:
            self.middlebox_program.on_packet(packet, side)

    def to_host(self, transmit: Transmit) -> None:
        if transmit.side is Side.INSIDE:
            host = self.hosts.get("client")
        else:
            host = self.hosts.get("server" if transmit.port == 0 else f"server{transmit.port}")
        if host is not None and (host.link_up or transmit.side is Side.OUTSIDE):
            self.clock.call_at(self.clock.now() + LINK_DELAY,
                               functools.partial(host.deliver, transmit.packet))

