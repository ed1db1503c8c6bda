"""Path events: what happens to the path itself during a run, on the model clock.

A scenario's path is not always fixed. A Lambda's network interface is attached after its
code starts (seed 002); a NAT Gateway is restarted or replaced; an NLB target is deregistered;
a Gateway Load Balancer's inspection target fails; a route blackholes traffic for a while.
Each is a :class:`PathEvent` at a model time counted from the client's request (the engine
counts from the client's first packet, a round trip earlier).

Theory of operation
-------------------
``attach`` happens on the client's host (the runner brings its interface up); every other
kind happens in the appliance. :class:`PathRules` is the engine's part, a mixin of
:class:`~simulator.core.engine.Middlebox`: the events are armed by the first packet from the
inside and wait in the appliance's one deadline heap (``Timer.PATH``) like every other
timer, so they fire in order with expiries and take effect before the packet that finds
them due. What each kind does, from the providers' documentation where there is any:

* ``restart``: the flow table is lost. Every flow's next packet meets the late-packet rule
  (an RST from a NAT Gateway, a drop from a Gateway Load Balancer).
* ``replace``: the same, and the replacement has new public addresses: the server sees a new
  source for every new connection. The server's packets for an old connection still go to
  the old address, which the old gateway holds or has released: the new gateway never sees
  them, so they are dropped silently whatever its late-packet rule (the server retransmits
  in vain), and only the client's own packets meet the new gateway's rule.
* ``deregister`` (load balancers with several targets): the target serving the client's
  connection stops receiving new flows; existing flows continue ("If the deregistered
  target stays healthy and an existing connection is not idle, the load balancer can
  continue to send traffic to the target"). With ``termination`` on
  (``deregistration_delay.connection_termination.enabled``) the load balancer "terminates
  connections at the end of the deregistration timeout" (``delay``, 300 s by default):
  modelled as an RST to both ends.
* ``target_failure`` (Gateway Load Balancer): the inspection target carrying the client's
  connection fails. ``no_rebalance`` (the default) "continues to send existing flows to
  failed or drained targets. If the Gateway Load Balancer cannot reach the target, the
  traffic is dropped. However, new flows are sent to healthy targets." ``rebalance``
  "rehashes existing flows and sends them to healthy targets after the deregistration delay
  timeout", where a stateful inspection host that never saw the flow's SYN drops them.
* ``blackhole``: for ``duration`` seconds every packet is dropped before the appliance sees
  it (nothing refreshes, nobody is told).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from simulator.core.appliance_fields import ExpiryAction
from simulator.core.appliances import Appliance
from simulator.core.balancing import Balancer
from simulator.core.events import EventKind, Side
from simulator.core.flows import Flow, FlowTable, Key, PortAllocator, Timer
from simulator.core.icmp import Transmit
from simulator.core.jsonvalue import Json, JsonObject, fields_json, from_json
from simulator.core.packets import IPPROTO_TCP, Packet, ip_from_str, ip_to_str

__all__ = ["DEFAULT_DEREGISTRATION_DELAY", "FAILOVER_MODES", "PathEvent", "PathKind",
           "PathRules", "replacement_addresses"]

DEFAULT_DEREGISTRATION_DELAY = 300.0
"""``deregistration_delay.timeout_seconds``: "The default value is 300 seconds" (0-3600)."""
TOMBSTONE_LIMIT = 65_536
"""Keys of gone flows remembered to name late packets (oldest dropped first)."""
FAILOVER_MODES = ("no_rebalance", "rebalance")
"""``target_failover.on_deregistration`` / ``on_unhealthy``: no_rebalance is the default."""


class PathKind(StrEnum):
    ATTACH = "attach"
    RESTART = "restart"
    REPLACE = "replace"
    DEREGISTER = "deregister"
    TARGET_FAILURE = "target_failure"
    BLACKHOLE = "blackhole"
    EXPIRE = "expire"
    """On demand only (``natsim expire [FLOW]``, never in a scenario file): the appliance
    forgets a flow now, as its idle timer would."""


@dataclass(frozen=True, slots=True)
class PathEvent:
    """One event; ``at`` and the durations are model seconds."""

    kind: PathKind
    at: float
    duration: float | None = None
    """``blackhole``: how long packets are dropped."""
    delay: float = DEFAULT_DEREGISTRATION_DELAY
    """``deregister`` / ``target_failure`` with ``rebalance``: the deregistration delay."""
    termination: bool = False
    """``deregister``: connection termination at the end of the delay."""
    failover: str = "no_rebalance"
    """``target_failure``: ``no_rebalance`` or ``rebalance``."""
    flow: int | None = None
    """``expire``: the flow's number (None: every flow)."""

    @property
    def on_host(self) -> bool:
        """Whether the client's host carries it out (not the appliance)."""
        return self.kind is PathKind.ATTACH

    @property
    def ends(self) -> float | None:
        """When its effect on the path ends (a blackhole), if it does."""
        return self.at + self.duration if self.duration is not None else None

    def describe(self) -> str:
        if self.kind is PathKind.ATTACH:
            return f"the client's network interface is attached at {self.at:g} s"
        if self.kind is PathKind.BLACKHOLE:
            return f"packets are blackholed from {self.at:g} s to {self.ends:g} s"
        if self.kind is PathKind.DEREGISTER:
            then = (f"its connections terminated {self.delay:g} s later" if self.termination
                    else "its existing connections kept (no connection termination)")
            return f"the target serving the connection is deregistered at {self.at:g} s, {then}"
        if self.kind is PathKind.TARGET_FAILURE:
            return (f"the inspection target carrying the connection fails at {self.at:g} s "
                    f"(target failover: {self.failover})")
        if self.kind is PathKind.EXPIRE:
            which = f"flow #{self.flow}" if self.flow is not None else "every flow"
            return f"the appliance forgets {which} at {self.at:g} s"
        done = "restarted" if self.kind is PathKind.RESTART else "replaced"
        return f"the appliance is {done} at {self.at:g} s"

    def to_record(self) -> JsonObject:
        return fields_json(self)

    @classmethod
    def from_record(cls, record: JsonObject) -> PathEvent:
        return from_json(cls, record)


def replacement_addresses(public_ips: Sequence[str]) -> tuple[str, ...]:
    """The public addresses of a replacement appliance: the next ones in 203.0.113.0/24."""
    last = max(int(ip.rsplit(".", 1)[1]) for ip in public_ips)
    return tuple(f"203.0.113.{(last + i) % 254 + 1}" for i in range(len(public_ips)))


class PathRules:
    """The appliance's part of the path events (mixed into the engine's Middlebox)."""

    appliance: Appliance
    flows: FlowTable
    ports: PortAllocator
    balancer: Balancer
    counters: Counter[str]
    _tombstones: OrderedDict[tuple[Side, Key], tuple[int, str]]
    _path_events: tuple[PathEvent, ...] = ()
    """Waiting to be armed (by the first packet from the inside)."""
    _blackholed = False
    _retired: frozenset[bytes] = frozenset()
    """The public addresses a replacement gave up: packets to them never reach it."""

    def path_events(self, events: Sequence[PathEvent]) -> None:
        """The events this appliance will carry out, armed by the first inside packet."""
        self._path_events = tuple(e for e in events if not e.on_host)

    def path_event_now(self, event: PathEvent, now: float) -> None:
        """Carry ``event`` out at model time ``now`` (a live world's ``natsim restart``,
        ``replace`` or ``blackhole``), exactly as if a scenario had planned it for then."""
        self.flows.schedule(now, Timer.PATH, ("start", event, None))

    @property
    def path_events_waiting(self) -> bool:
        """Events given and not armed yet (the dataplane's fast path stays off for a run
        with path events: their rules see every packet)."""
        return bool(self._path_events)

    def _path_gate(self, side: Side, now: float) -> bool:
        """Arm the events at the first packet from the inside; True when a blackhole
        swallows this packet (the appliance never sees it). The engine calls it only while
        events wait to be armed or a blackhole is on."""
        if self._path_events and side is Side.INSIDE:
            for event in self._path_events:  # each start schedules its own sequel
                self.flows.schedule(now + event.at, Timer.PATH, ("start", event, None))
            self._path_events = ()
        if not self._blackholed:
            return False
        self.counters["BlackholeDrops"] += 1
        if self.counters["BlackholeDrops"] <= 20:
            self._emit(now, EventKind.DROPPED, None, side,
                       f"packet from the {side.peer_role} lost in the blackhole (nobody is "
                       "told)", blackhole=True)
        return True

    def _path_due(self, due: float, item: object) -> list[Transmit]:
        assert isinstance(item, tuple)
        phase, event, target = item
        assert isinstance(event, PathEvent)
        data = {"path_event": str(event.kind), "phase": phase}
        if event.kind is PathKind.BLACKHOLE:
            self._blackholed = phase == "start"
            if self._blackholed:
                assert event.duration is not None
                self.flows.schedule(due + event.duration, Timer.PATH, ("end", event, None))
            self._emit(due, EventKind.PATH_EVENT, None, None,
                       "blackhole begins: every packet is dropped, nobody is told"
                       if self._blackholed else "blackhole ends: packets pass again", **data)
            return []
        if event.kind in (PathKind.RESTART, PathKind.REPLACE):
            return self._restart(due, event, data)
        if event.kind is PathKind.EXPIRE:
            return self._expire_now(due, event, data)
        if target is None:  # the start: the target of the client's connection
            target = self._serving_target(event.kind)
        if event.kind is PathKind.DEREGISTER:
            return self._deregister(due, phase, target, event, data)
        return self._target_failure(due, phase, target, event, data)

    def _restart(self, now: float, event: PathEvent, data: JsonObject) -> list[Transmit]:
        lost = list(self.flows)
        for flow in lost:
            self.flows.remove(flow)
            self._forget(flow)
            self._remember_lost(flow)
        self.counters["FlowsLostOnRestart"] += len(lost)
        names = ", ".join(f"#{f.id}" for f in lost[:5]) + (" ..." if len(lost) > 5 else "")
        done = "restarted" if event.kind is PathKind.RESTART else "replaced"
        text = (f"appliance {done}: its flow table is lost ({len(lost)} flow"
                f"{'' if len(lost) == 1 else 's'}{': ' + names if lost else ''}); the next "
                "packet of each meets the late-packet rule")
        if event.kind is PathKind.REPLACE:
            self._retired |= frozenset(self.ports.public_ips)
            new = replacement_addresses(self.appliance.public_ips)
            self.ports = PortAllocator([ip_from_str(ip) for ip in new],
                                       self.ports.limit, self.ports.port_min,
                                       self.ports.port_max)
            text += f"; the replacement's public address is {', '.join(new)}"
            data["public_ips"] = list(new)
        self._emit(now, EventKind.PATH_EVENT, None, None, text, flows_lost=len(lost), **data)
        return []

    def _expire_now(self, now: float, event: PathEvent, data: JsonObject) -> list[Transmit]:
        """The flow (or every flow) is forgotten now, as at its idle timeout: what the
        appliance does at expiry (an RST to both ends where it sends one), and the next
        packet meets the late-packet rule. Counted apart from the idle timeouts, which the
        flow did not reach."""
        chosen = [f for f in self.flows if event.flow is None or f.id == event.flow]
        out: list[Transmit] = []
        for flow in chosen:
            self.flows.remove(flow)
            self.counters["FlowsExpiredOnDemand"] += 1
            sent, loud = self._on_expiry(flow, log=False)
            out += sent
            self._emit(now, EventKind.FLOW_EXPIRED, flow.id, None,
                       f"flow #{flow.id} expired now, on demand (natsim expire), after "
                       f"{now - flow.last_seen:.0f} s idle "
                       + ("(RST sent to both ends)" if loud else "(nothing sent to either side)"),
                       last_seen=round(flow.last_seen, 6), on_demand=True)
        if not chosen:
            which = f"no flow #{event.flow}" if event.flow is not None else "no flow"
            self._emit(now, EventKind.PATH_EVENT, None, None,
                       f"expire: {which} in the table (nothing forgotten)", **data)
        return out

    def _to_retired_address(self, pkt: Packet, now: float) -> bool:
        """A packet from the outside to a public address the replacement gave up: the old
        gateway (or nobody) holds that address, never the new one, so the new gateway
        cannot answer it with an RST. Dropped silently: the sender retransmits in vain."""
        if pkt.dst not in self._retired:
            return False
        self.counters["PacketsToReplacedAddress"] += 1
        if self.counters["PacketsToReplacedAddress"] <= 20:
            self._emit(now, EventKind.DROPPED, None, Side.OUTSIDE,
                       f"packet from the server to {ip_to_str(pkt.dst)}, the replaced "
                       "gateway's address: the new gateway never sees it (nobody is told)",
                       replaced_address=True)
        return True

    def _serving_target(self, kind: PathKind) -> int:
        """The target of the client's connection: the oldest live TCP flow's."""
        tcp = [f for f in self.flows if f.proto == IPPROTO_TCP] or list(self.flows)
        if not tcp:
            return 0
        oldest = min(tcp, key=lambda f: f.id)
        if kind is PathKind.TARGET_FAILURE:
            return oldest.target if oldest.target is not None else 0
        return oldest.port

    def _deregister(self, now: float, phase: str, target: int, event: PathEvent,
                    data: JsonObject) -> list[Transmit]:
        balancer = self.balancer
        if phase == "start":
            balancer.unavailable_backends.add(target)
            if event.termination:
                self.flows.schedule(now + event.delay, Timer.PATH, ("terminate", event, target))
            left = sum(1 for f in self.flows if f.port == target)
            self._emit(now, EventKind.PATH_EVENT, None, None,
                       f"target {target} deregistered (draining): no new flows to it; its "
                       f"{left} existing flow{'' if left == 1 else 's'} "
                       + (f"will be terminated in {event.delay:g} s" if event.termination
                          else "continue (connection termination is off)"),
                       target=target, **data)
            return []
        out: list[Transmit] = []
        doomed = [f for f in self.flows if f.port == target and f.proto == IPPROTO_TCP]
        for flow in doomed:
            self.flows.remove(flow)
            out += self._reset_both(flow, log=False)
            self._forget(flow)
            self._remember_lost(flow)
        self.counters["DeregistrationTerminations"] += len(doomed)
        self._emit(now, EventKind.PATH_EVENT, None, None,
                   f"deregistration delay over: {len(doomed)} connection"
                   f"{'' if len(doomed) == 1 else 's'} to target {target} terminated (RST to "
                   "both ends)", target=target, terminated=len(doomed), **data)
        return out

    def _target_failure(self, now: float, phase: str, target: int, event: PathEvent,
                        data: JsonObject) -> list[Transmit]:
        balancer = self.balancer
        if phase == "start":
            balancer.fail(target)
            if event.failover == "rebalance":
                self.flows.schedule(now + event.delay, Timer.PATH, ("rebalance", event, target))
            self._emit(now, EventKind.PATH_EVENT, None, None,
                       f"inspection target {target} failed: its existing flows still go to "
                       "it and are dropped; new flows go to healthy targets", target=target,
                       **data)
            return []
        moved = balancer.rebalance(self.flows)
        self._emit(now, EventKind.PATH_EVENT, None, None,
                   f"target failover (rebalance): {moved} flow{'' if moved == 1 else 's'} "
                   "rehashed to healthy targets, which hold no state for them",
                   moved=moved, **data)
        return []

    def _on_expiry(self, flow: Flow, log: bool) -> tuple[list[Transmit], bool]:
        """What the appliance does with a flow it has just taken out of its table at expiry
        (its idle timer's, or ``natsim expire``'s): forget it, keep its keys to name a late
        packet, and, where the appliance does, reset both ends. Returns (those RSTs,
        whether it sent them)."""
        self._forget(flow)
        self._remember_lost(flow, "expired")
        if self.appliance.on_expiry is ExpiryAction.RST_BOTH and flow.proto == IPPROTO_TCP:
            return self._reset_both(flow, log=log), True
        return [], False

    def _remember_lost(self, flow: Flow, why: str = "forgotten") -> None:
        """Its keys, so that a late packet can be named ("of expired flow #3")."""
        self._tombstones[(Side.INSIDE, flow.inside)] = (flow.id, why)
        self._tombstones[(Side.OUTSIDE, flow.outside)] = (flow.id, why)
        while len(self._tombstones) > TOMBSTONE_LIMIT:
            self._tombstones.popitem(last=False)

    def _forget(self, flow: Flow) -> None:
        raise NotImplementedError  # the engine's

    def _reset_both(self, flow: Flow, log: bool = True) -> list[Transmit]:
        raise NotImplementedError  # the engine's

    def _emit(self, t: float, kind: EventKind, flow: int | None, side: Side | None,
              text: str, **data: Json) -> None:
        raise NotImplementedError  # the engine's
