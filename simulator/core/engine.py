"""The middlebox engine: IP packets and model time in, transmissions and events out.

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
* A late packet from side S is dropped; with the rule ``rst`` for S, a TCP segment that is
  not itself an RST gets an RST back out of S to its sender; the other side hears nothing.
* An RST that passes through ends the flow at once; FINs move the state table along.

Beyond the NAT Gateway, the same record describes the rest of the catalogue:

* ``nat: false`` makes the appliance transparent (a load balancer with client IP
  preservation, a firewall): flows are tracked by their addresses as they are.
* ``transitory_timeout`` applies to TCP flows that are not established (yet or any more).
* ``on_expiry: rst_both`` sends an RST to both ends at the moment of expiry.
* A late packet may also be ``pass``-ed (tracked anew and forwarded: a security group whose
  outbound rule allows it) or ``rehash``-ed: tracked anew on an inspection host chosen by
  hash, which forwards it only if it still holds the flow's state (Gateway Load Balancer).
* IPv6 flows are keyed on their 16-byte addresses under the same rules. ``nat64`` (the NAT
  Gateway) translates an IPv6 flow to 64:ff9b::/96 into an IPv4 one from its public address:
  one flow, its inside key IPv6 and its outside key IPv4, so timers and ports are shared.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

from simulator.core.appliances import Appliance, LateAction
from simulator.core.balancing import Balancer
from simulator.core.events import Event, EventKind, Side
from simulator.core.flows import (
    DATA_EVENT,
    FIN_SEEN,
    OCTETS,
    PACKETS,
    TCP_TRANSITIONS,
    Flow,
    FlowTable,
    Key,
    PortAllocator,
    TcpSignal,
    TcpState,
    Timer,
)
from simulator.core.icmp import IcmpRules, Transmit
from simulator.core.jsonvalue import Json
from simulator.core.made import keepalives_to_both, resets_to_both
from simulator.core.packets import (
    ACK,
    FIN,
    ICMP_ECHO_REQUEST,
    ICMP_ERRORS,
    IPPROTO_ICMP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    RST,
    SYN,
    Packet,
    build_rst_reply,
    embedded_ipv4,
    endpoint,
    flags_to_str,
    ip_from_str,
    ip_to_str,
    parse,
    rewrite_destination,
    rewrite_source,
    to_ipv4,
    to_ipv6,
)
from simulator.core.path_events import PathRules

__all__ = ["Middlebox", "Transmit"]

ADDRESSES_KEPT = 65_536
"""Distinct addresses whose bytes objects the flows share (more: start again)."""


class Middlebox(IcmpRules, PathRules):
    """One appliance's flow table and rules."""

    data_event_gap: float = 1.0
    """A data packet is reported only if its direction was silent this long (model s)."""

    def __init__(self, appliance: Appliance) -> None:
        self.appliance = appliance
        self.flows = FlowTable()
        self.ports = PortAllocator([ip_from_str(ip) for ip in appliance.public_ips],
                                   appliance.scaled(appliance.ports_per_destination),
                                   appliance.port_min, appliance.port_max)
        self._connection_limit = appliance.connection_limit
        self.counters: Counter[str] = Counter()
        self._events: list[Event] = []
        self._next_id = 1
        self.expired_log: list[Flow] | None = None
        """When a list, every flow that expires is appended (``natsim replay`` reads it:
        the events are rate-limited, the log is not)."""
        self.last_tracked: Flow | None = None
        """The flow of the last packet accounted for (the dataplane's fast path reads it)."""
        self._tombstones: OrderedDict[tuple[Side, Key], tuple[int, str]] = OrderedDict()
        """Recently gone flows' keys -> (id, why), oldest first, to name a late packet in the
        log (an OrderedDict: dropping the oldest of a plain dict with ``next(iter(d))`` walks
        past every deleted slot; at 100,000 expiries that made RSTs 100s of ms late)."""
        # Several backends behind a virtual address: DNAT each new flow to one of them.
        self._vip = ip_from_str(appliance.vip)
        self._vip6 = ip_from_str(appliance.vip6) if appliance.vip6 else None
        self._backends = [ip_from_str(ip) for ip in appliance.backend_ips]
        if appliance.backends > 1 and len(self._backends) != appliance.backends:
            raise ValueError(f"{appliance.name}: {appliance.backends} backends but "
                             f"{len(self._backends)} backend addresses")
        self._backend_index = {ip: i for i, ip in enumerate(self._backends)}
        self._addresses: dict[bytes, bytes] = {}
        # Gateway Load Balancer inspection hosts and NLB targets: hashing and host memory
        self.balancer = Balancer(appliance, max(1, len(self._backends)), self.flows)

    # -- results -------------------------------------------------------------------------

    def take_events(self) -> list[Event]:
        """The events since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    def next_deadline(self) -> float | None:
        """When ``expire`` may next have work to do (model time), or None if no timers."""
        return self.flows.next_deadline()

    # -- time ----------------------------------------------------------------------------

    def expire(self, now: float) -> list[Transmit]:
        """Retire the flows idle for their whole timeout by ``now``.

        Silent on the wire, unless the appliance resets both ends at expiry.
        """
        out: list[Transmit] = []
        expired, timers = self.flows.pop_due(now)
        if self.expired_log is not None:
            self.expired_log += expired
        for flow in expired:
            self.counters["IdleTimeoutCount"] += 1
            quiet = not self._worth_logging("IdleTimeoutCount")
            sent, loud = self._on_expiry(flow, log=not quiet)
            out += sent
            if quiet:
                continue
            self._emit(flow.deadline, EventKind.FLOW_EXPIRED, flow.id, None,
                       f"flow #{flow.id} expired after {flow.timeout:g} s idle "
                       + ("(RST sent to both ends)" if loud else "(nothing sent to either side)"),
                       last_seen=round(flow.last_seen, 6))
        for due, timer, item in timers:
            if timer is Timer.ECHO:
                assert isinstance(item, Flow)
                if self.flows.is_live(item):
                    out += self._keepalives_both(item, due)
                    self.flows.schedule(due + self._echo_interval(), Timer.ECHO, item)
            elif timer is Timer.TARGET_STATE:
                assert isinstance(item, tuple)
                target, key = item
                self.balancer.prune(target, key, now)
            elif timer is Timer.PATH:
                out += self._path_due(due, item)
        following = self.flows.next_deadline()
        if timers and following is not None and following <= now:
            out += self.expire(now)  # a timer armed just now and already due (a sequel)
        return out

    def state_sizes(self) -> dict[str, int]:
        """How much per-flow and per-destination state the engine holds (memory tests)."""
        return {"flows": len(self.flows), "timers": self.flows.timers(),
                "port_slots": self.ports.slots(),
                "generations": len(self.balancer.generations),
                "target_state": self.balancer.remembered(),
                "tombstones": len(self._tombstones)}

    def _echo_interval(self) -> float:
        assert self.appliance.keepalive_echo is not None
        return self.appliance.keepalive_echo

    def _keepalives_both(self, flow: Flow, now: float) -> list[Transmit]:
        """The appliance's own keepalive probe to each end (seq one below what it expects)."""
        out = keepalives_to_both(flow)
        if out:
            flow.last_seen = now  # the appliance's own probes are activity on the flow
            self.counters["ApplianceKeepalives"] += 2
        return out

    def _reset_both(self, flow: Flow, log: bool = True) -> list[Transmit]:
        """RSTs to both ends of ``flow``, each with the sequence number its receiver expects."""
        out = resets_to_both(flow)
        for action in out:
            self.counters["RstSent"] += 1
            if log:
                self._emit(flow.deadline, EventKind.RST_SENT, flow.id, action.side,
                           f"RST sent to the {action.side.peer_role} at expiry")
        return out

    # -- packets -------------------------------------------------------------------------

    def on_packet(self, packet: bytearray, side: Side, now: float) -> list[Transmit]:
        """Decide what happens to ``packet`` (modified in place when forwarded).

        What the timers due by ``now`` decided comes first (an RST at expiry, an appliance's
        keepalive): a call never keeps back anything it decided.
        """
        out = self.expire(now) if self.flows.due(now) else []
        if (self._path_events or self._blackholed) and self._path_gate(side, now):
            return out  # a blackhole swallowed it
        pkt = parse(packet)
        if pkt is None:
            self.counters["PacketsDropCount"] += 1
            self.counters["UnsupportedPackets"] += 1
            return out
        counters = self.counters
        if pkt.proto == IPPROTO_ICMP and not self._icmp_admitted(pkt, side, now):
            decided = self._icmp_error(packet, pkt, side, now) \
                if pkt.flags in ICMP_ERRORS and self.appliance.icmp else []
        elif side is Side.INSIDE:
            counters["PacketsInFromSource"] += 1
            counters["BytesInFromSource"] += pkt.total_len
            decided = self._from_inside(packet, pkt, now)
        else:
            counters["PacketsInFromDestination"] += 1
            counters["BytesInFromDestination"] += pkt.total_len
            decided = self._from_outside(packet, pkt, now)
        return out + decided if out else decided

    def _from_inside(self, packet: bytearray, pkt: Packet, now: float) -> list[Transmit]:
        key: Key = (pkt.proto, pkt.src, pkt.sport, pkt.dst, pkt.dport)
        flow = self.flows.by_inside.get(key)
        if flow is None:
            starts_flow = (pkt.proto == IPPROTO_UDP
                           or (pkt.proto == IPPROTO_TCP and pkt.flags & (SYN | ACK) == SYN)
                           or (pkt.proto == IPPROTO_ICMP and pkt.flags == ICMP_ECHO_REQUEST))
            if not starts_flow:
                return self._late(pkt, key, Side.INSIDE, now, packet)
            flow = self._create(key, pkt, now)
            if flow is None:
                return []
        return self._forward_inside(packet, pkt, flow, now)

    def _forward_inside(self, packet: bytearray, pkt: Packet, flow: Flow,
                        now: float) -> list[Transmit]:
        self._track(flow, pkt, 0, now)
        if flow.target is not None and not self._inspection_passes(flow, pkt, Side.INSIDE, now):
            return []
        outside = flow.outside
        translated = flow.translated
        if translated:  # NAT64, or a dual-stack load balancer: the IPv4 packet replaces it
            packet, pkt = to_ipv4(packet, pkt, outside[3], outside[1])
        if flow.backend is not None:
            rewrite_destination(packet, pkt, outside[1], outside[2])
        if self.appliance.nat or translated:
            rewrite_source(packet, pkt, outside[3], outside[4])  # the public address
        counters = self.counters
        counters["PacketsOutToDestination"] += 1
        counters["BytesOutToDestination"] += pkt.total_len
        return [Transmit(Side.OUTSIDE, packet, flow.port)]

    def _from_outside(self, packet: bytearray, pkt: Packet, now: float) -> list[Transmit]:
        key: Key = (pkt.proto, pkt.src, pkt.sport, pkt.dst, pkt.dport)
        flow = self.flows.by_outside.get(key)
        if flow is None:
            return self._late(pkt, key, Side.OUTSIDE, now, packet)
        return self._forward_outside(packet, pkt, flow, now)

    def _forward_outside(self, packet: bytearray, pkt: Packet, flow: Flow,
                         now: float) -> list[Transmit]:
        self._track(flow, pkt, 1, now)
        if flow.target is not None and not self._inspection_passes(flow, pkt, Side.OUTSIDE, now):
            return []
        inside = flow.inside
        translated = flow.translated
        if translated:  # back to the client's IPv6
            packet, pkt = to_ipv6(packet, pkt, inside[3], inside[1])
        if flow.backend is not None:  # the client talks to the virtual address
            rewrite_source(packet, pkt, inside[3], inside[4])
        if self.appliance.nat or translated:
            rewrite_destination(packet, pkt, inside[1], inside[2])  # the client's
        counters = self.counters
        counters["PacketsOutToSource"] += 1
        counters["BytesOutToSource"] += pkt.total_len
        return [Transmit(Side.INSIDE, packet)]

    def _create(self, key: Key, pkt: Packet, now: float, why: str = "new") -> Flow | None:
        """A new flow for inside key ``key`` (client address and port first), or None when
        the appliance has no room for it (the packet is then dropped and counted)."""
        self.counters["ConnectionAttemptCount"] += 1
        key = (key[0], self._address(key[1]), key[2], self._address(key[3]), key[4])
        route = self._admit(key, now)
        if route is None:
            return None
        outside, backend = route
        proto = key[0]
        tcp = proto == IPPROTO_TCP
        syn = tcp and pkt.flags & (SYN | ACK) == SYN
        state = (TcpState.SYN_SENT if syn else TcpState.ESTABLISHED) if tcp else TcpState.NONE
        flow = Flow(id=self._next_id, proto=proto, inside=key, outside=outside,
                    timeout=self._timeout_for(proto, state), last_seen=now,
                    state=state, backend=backend, port=self._backend_index.get(outside[1], 0))
        if self.appliance.targets:
            flow.target = self.balancer.pick_target(key)
            if syn:  # a stateful inspection host learns a connection from its SYN
                self.balancer.remember(flow.target, key, now)
        self._next_id += 1
        self.flows.add(flow)
        self._tombstones.pop((Side.INSIDE, flow.inside), None)
        self._tombstones.pop((Side.OUTSIDE, flow.outside), None)
        self.counters["ActiveConnectionCount"] = len(self.flows)
        if self._worth_logging("ConnectionAttemptCount"):
            self._log_created(flow, why, now)
        return flow

    def _admit(self, key: Key, now: float) -> tuple[Key, int | None] | None:
        """Room for a new flow: its outside key and backend, or None (refused, counted).

        Limits in the order the cloud applies them: the connection limit (Lambda's ENI),
        the flow table, a NAT port towards the destination as the server sees it (a
        backend's own address, whether the client named it or the virtual address), and
        the outside key itself (without address translation, the same client socket through
        the virtual address and straight to a backend is one socket to that backend: the
        documented "observed socket reuse" limit of NLB client IP preservation).
        """
        proto, client_ip, client_port, server_ip, server_port = key
        client = endpoint(client_ip, client_port)
        if self._connection_limit is not None and len(self.flows) >= self._connection_limit:
            self._refuse("RejectedConnectionCount", now,
                         f"connection limit ({self._connection_limit}) reached: new "
                         f"connection from {client} dropped")
            return None
        if len(self.flows) >= self.appliance.max_flows:
            self._refuse("RejectedFlowCount", now,
                         f"flow table full ({self.appliance.max_flows} flows): new "
                         f"connection from {client} dropped")
            return None
        backend: int | None = None
        real_server = server_ip
        if len(server_ip) == 16 and self.appliance.nat:
            embedded = embedded_ipv4(server_ip) if self.appliance.nat64 else None
            if embedded is None:
                how = "NAT64 to 64:ff9b::/96 only" if self.appliance.nat64 else "no NAT64"
                self._refuse("UnsupportedPackets", now,
                             f"{self.appliance.title} does not translate IPv6 to IPv6 "
                             f"({how}): packet from {client} to "
                             f"{endpoint(server_ip, server_port)} dropped")
                return None
            real_server = embedded
        if self._backends and server_ip in (self._vip, self._vip6):
            backend = self.balancer.pick_backend(key)
            real_server = self._backends[backend]
        public = (self.ports.allocate(proto, real_server, server_port)
                  if self.appliance.nat or len(real_server) != len(server_ip)
                  else (client_ip, client_port))
        if public is None:
            self._refuse("ErrorPortAllocation", now,
                         f"no free port towards {endpoint(server_ip, server_port)}: "
                         f"packet from {client} dropped")
            return None
        outside: Key = (proto, real_server, server_port, *public)
        if outside in self.flows.by_outside:
            self._refuse("SocketReuseDrops", now,
                         f"{client} -> {endpoint(server_ip, server_port)} would reach "
                         f"{ip_to_str(real_server)} as the same socket as a live "
                         "flow: dropped")
            return None
        return outside, backend

    def _address(self, addr: bytes) -> bytes:
        """One bytes object per address for all the flows that hold it (a new one per
        packet otherwise: 37 bytes twice a flow at 100,000 flows); bounded."""
        known = self._addresses.get(addr)
        if known is not None:
            return known
        if len(self._addresses) >= ADDRESSES_KEPT:
            self._addresses.clear()
        self._addresses[addr] = addr
        return addr

    def _log_created(self, flow: Flow, why: str, now: float) -> None:
        _, client_ip, client_port, server_ip, server_port = flow.inside
        client, server = endpoint(client_ip, client_port), endpoint(server_ip, server_port)
        public = endpoint(flow.public_ip, flow.public_port)
        name = "TCP" if flow.proto == IPPROTO_TCP else "UDP"
        text = f"{why} {name} flow #{flow.id} {client} -> {server}"
        if self.appliance.nat or flow.translated:
            text += f" as {public}"
        if flow.target is not None:
            text += f" via inspection target {flow.target}"
        if flow.backend is not None:
            text += f" to backend {flow.backend} ({ip_to_str(flow.outside[1])})"
        self._emit(now, EventKind.FLOW_CREATED, flow.id, Side.INSIDE, text, proto=name,
                   client=client, server=server, public=public, target=flow.target,
                   backend=flow.backend, timeout=flow.timeout)

    def _refuse(self, counter: str, now: float, text: str) -> None:
        """A new connection the appliance has no room for: its SYN is dropped and counted
        under the cloud's own metric name."""
        self.counters[counter] += 1
        self.counters["PacketsDropCount"] += 1
        if self._worth_logging(counter):
            self._emit(now, EventKind.PORT_ALLOCATION_ERROR, None, Side.INSIDE,
                       f"{text} ({self.counters[counter]} so far)")

    def _worth_logging(self, counter: str) -> bool:
        """The first twenty of a kind, then every thousandth: a load of 55,000 connections
        must not print 55,000 lines, and a scenario of one connection loses nothing."""
        n = self.counters[counter]
        return n <= 20 or n % 1000 == 0

    def _timeout_for(self, proto: int, state: TcpState) -> float:
        if proto != IPPROTO_TCP:
            return self.appliance.udp_idle_timeout
        transitory = self.appliance.transitory_timeout
        if transitory is not None and state is not TcpState.ESTABLISHED:
            return transitory
        return self.appliance.tcp_idle_timeout

    def _track(self, flow: Flow, pkt: Packet, direction: int, now: float) -> None:
        """Account for a packet of a live flow: idle timer, sequence space, TCP state."""
        self.last_tracked = flow
        idle = now - flow.last_seen
        if (self.appliance.keepalive_refreshes or pkt.proto != IPPROTO_TCP
                or pkt.payload_len > 0):
            flow.last_seen = now  # Global Accelerator: only data refreshes the timer
        dirs = flow.dirs
        dirs[PACKETS + direction] += 1
        dirs[OCTETS + direction] += pkt.total_len
        if pkt.proto != IPPROTO_TCP:
            self._maybe_data_event(flow, pkt, direction, now)
            return
        expected = flow.seq(direction)
        if (expected is not None and pkt.payload_len <= 1
                and not pkt.flags & (SYN | FIN | RST)
                and pkt.seq == (expected - 1) & 0xFFFFFFFF):
            self._keepalive_seen(flow, pkt, direction, idle, now)
        else:
            self._maybe_data_event(flow, pkt, direction, now)
        flow.advance(direction, (pkt.seq + pkt.seg_len) & 0xFFFFFFFF)
        self._tcp_state(flow, pkt.flags, direction, now)

    def _keepalive_seen(self, flow: Flow, pkt: Packet, direction: int, idle: float,
                        now: float) -> None:
        """A keepalive probe (one below the next expected sequence number, at most one
        byte): it refreshed the flow like any packet; reported, and echoed by an appliance
        that sends its own (NLB TLS)."""
        side = Side.INSIDE if direction == 0 else Side.OUTSIDE
        self.counters["KeepaliveProbes"] += 1
        echo = self.appliance.keepalive_echo
        if echo is not None and not flow.echoing:
            flow.echoing = True
            self.flows.schedule(now + echo, Timer.ECHO, flow)
            self._emit(now, EventKind.KEEPALIVE, flow.id, None,
                       f"{self.appliance.title} saw a keepalive: from now on it sends its "
                       f"own to both ends every {echo:g} s")
        refreshed = self.appliance.keepalive_refreshes or pkt.payload_len > 0
        effect = "refreshed" if refreshed else (
            f"NOT refreshed ({self.appliance.title} needs at least one byte of data)")
        self._emit(now, EventKind.KEEPALIVE, flow.id, side,
                   f"keepalive probe from {side.peer_role} after {idle:.1f} s idle: flow "
                   f"#{flow.id} {effect}", idle=round(idle, 6), seq=pkt.seq,
                   refreshed=refreshed)

    def _tcp_state(self, flow: Flow, flags: int, direction: int, now: float) -> None:
        """An RST ends the flow; FIN, SYN-ACK and ACK move it along ``TCP_TRANSITIONS``."""
        side = Side.INSIDE if direction == 0 else Side.OUTSIDE
        if flags & RST:
            counter = "RstFromClient" if direction == 0 else "RstFromServer"
            self.counters[counter] += 1
            self.flows.remove(flow)
            self._forget(flow)
            if self._worth_logging(counter):
                self._emit(now, EventKind.FLOW_CLOSED, flow.id, side,
                           f"RST from {side.peer_role} passed through: flow #{flow.id} "
                           "removed")
            return
        signal: TcpSignal | None = None
        if flags & FIN and not flow.dirs[FIN_SEEN + direction]:
            flow.dirs[FIN_SEEN + direction] = True
            signal = TcpSignal.FIN
        elif flags & SYN and flags & ACK and direction == 1:
            signal = TcpSignal.SYNACK_FROM_OUTSIDE
        elif flags & ACK and direction == 0:
            signal = TcpSignal.ACK_FROM_INSIDE
        new_state = TCP_TRANSITIONS.get((flow.state, signal)) if signal is not None else None
        if new_state is None:
            return
        flow.state = new_state
        flow.timeout = self._timeout_for(flow.proto, new_state)
        if new_state is TcpState.ESTABLISHED:
            self.counters["ConnectionEstablishedCount"] += 1
            if self._worth_logging("ConnectionEstablishedCount"):
                self._emit(now, EventKind.FLOW_ESTABLISHED, flow.id, side,
                           f"flow #{flow.id} established")
        elif signal is TcpSignal.FIN:
            self.counters["FinSeen"] += 1
            if self._worth_logging("FinSeen"):
                self._emit(now, EventKind.FLOW_CLOSED, flow.id, side,
                           f"FIN from {side.peer_role} on flow #{flow.id} ({new_state})")

    def _maybe_data_event(self, flow: Flow, pkt: Packet, direction: int, now: float) -> None:
        if pkt.payload_len == 0:
            return
        if now - flow.dirs[DATA_EVENT + direction] < self.data_event_gap:
            flow.dirs[DATA_EVENT + direction] = now
            return
        flow.dirs[DATA_EVENT + direction] = now
        side = Side.INSIDE if direction == 0 else Side.OUTSIDE
        self._emit(now, EventKind.DATA, flow.id, side,
                   f"{pkt.payload_len} bytes from {side.peer_role} on flow #{flow.id}",
                   bytes=pkt.payload_len)

    def _late(self, pkt: Packet, key: Key, side: Side, now: float,
              packet: bytearray) -> list[Transmit]:
        """A packet that matches no flow: the appliance's rule for its side decides."""
        if side is Side.OUTSIDE and self._to_retired_address(pkt, now):
            return []
        expired, why = self._tombstones.get((side, key), (None, ""))
        what = f"of {why} flow #{expired}" if expired is not None else "of no known flow"
        who = side.peer_role
        rule = (self.appliance.late_from_inside if side is Side.INSIDE
                else self.appliance.late_from_outside)
        flags = flags_to_str(pkt.flags) if pkt.proto == IPPROTO_TCP else ""
        if rule in (LateAction.PASS, LateAction.REHASH) and not self.appliance.nat:
            inside_key: Key = key if side is Side.INSIDE else (key[0], key[3], key[4],
                                                                key[1], key[2])
            flow = self._create(inside_key, pkt, now, why="late packet tracked as a new")
            if flow is None:
                return []
            if side is Side.INSIDE:
                return self._forward_inside(packet, pkt, flow, now)
            return self._forward_outside(packet, pkt, flow, now)
        self.counters["PacketsDropCount"] += 1
        self.counters["LatePackets"] += 1
        # a flood of junk must not become a flood of events: the first twenty, then sampled
        loud = self._worth_logging("LatePackets")
        if loud:
            self._emit(now, EventKind.DROPPED, expired, side,
                       f"dropped {flags + ' ' if flags else ''}packet from {who} {what}",
                       flags=flags, payload=pkt.payload_len)
        if rule is not LateAction.RST or pkt.proto != IPPROTO_TCP or pkt.flags & RST:
            return []
        rst = build_rst_reply(pkt)
        self.counters["RstSent"] += 1
        seq = pkt.ack if pkt.flags & ACK else 0
        if loud:
            self._emit(now, EventKind.RST_SENT, expired, side,
                       f"RST sent back to the {who} (seq={seq})", seq=seq)
        port = self._backend_index.get(pkt.src, 0) if side is Side.OUTSIDE else 0
        return [Transmit(side, rst, port, made=True)]

    def _inspection_passes(self, flow: Flow, pkt: Packet, side: Side, now: float) -> bool:
        """A flow's inspection host forwards only connections whose state it holds.

        The balancer's own table has already counted the packet (it did send it to the
        host); the host refreshes its state only for what it lets through.
        """
        if flow.target is None:
            return True
        if self.balancer.knows(flow.target, flow.inside, now):
            self.balancer.remember(flow.target, flow.inside, now)
            return True
        self.counters["PacketsDropCount"] += 1
        flags = flags_to_str(pkt.flags) if pkt.proto == IPPROTO_TCP else ""
        why = ("has failed" if flow.target in self.balancer.failed
               else "has no state for it")
        self._emit(now, EventKind.DROPPED, flow.id, side,
                   f"dropped {flags + ' ' if flags else ''}packet from {side.peer_role} on "
                   f"flow #{flow.id}: inspection target {flow.target} {why}",
                   flags=flags, payload=pkt.payload_len)
        return False

    def _forget(self, flow: Flow) -> None:
        if self.appliance.nat or flow.translated:
            self.ports.release(flow.public_ip, flow.public_port, flow.proto,
                               flow.outside[1], flow.outside[2])
        self.counters["ActiveConnectionCount"] = len(self.flows)

    def _emit(self, t: float, kind: EventKind, flow: int | None, side: Side | None,
              text: str, **data: Json) -> None:
        self._events.append(Event(t, kind, text, flow, side, dict(data)))
