"""Several appliances in series: client -> NAT Gateway -> NLB -> server, in one dataplane.

Each stage is a whole :class:`Middlebox` with its own flow table, timeouts and rules. A
packet from the client enters stage 0 on its inside and, if forwarded, enters stage 1 on its
inside, and so on; a packet from the server runs the other way. Whatever a stage emits
(a forwarded packet, an RST it builds) continues from that stage in the direction it was
sent, so an RST that the NLB sends towards the client passes back through the NAT Gateway,
which translates it like any other packet of the flow. Events carry the name of the stage
that produced them, so a timeline shows which appliance acted; the shortest idle timeout
usually wins, but each stage applies its own rules to whatever reaches it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from simulator.core.appliances import Appliance
from simulator.core.engine import Middlebox, Transmit
from simulator.core.events import Event, Side
from simulator.core.flows import Flow


class Chain:
    """A list of middleboxes, inside (client) first. Same interface as a Middlebox."""

    def __init__(self, appliances: list[Appliance]) -> None:
        if not appliances:
            raise ValueError("a chain needs at least one appliance")
        self.stages = [Middlebox(a) for a in appliances]
        self.appliance = appliances[0]
        self._extra: Counter[str] = Counter()

    @property
    def counters(self) -> Counter[str]:
        """Totals under the usual names, and each stage's under ``name:Counter``."""
        total: Counter[str] = Counter(self._extra)
        for stage in self.stages:
            for key, value in stage.counters.items():
                total[f"{stage.appliance.name}:{key}"] += value
                if key != "ActiveConnectionCount":
                    total[key] += value
        total["ActiveConnectionCount"] = sum(len(s.flows) for s in self.stages)
        return total

    @property
    def flows(self) -> Iterator[Flow]:
        for stage in self.stages:
            yield from stage.flows

    def next_deadline(self) -> float | None:
        deadlines = [d for s in self.stages if (d := s.next_deadline()) is not None]
        return min(deadlines, default=None)

    def on_packet(self, packet: bytearray, side: Side, now: float) -> list[Transmit]:
        first = 0 if side is Side.INSIDE else len(self.stages) - 1
        return self._run(first, self.stages[first].on_packet(packet, side, now), now)

    def expire(self, now: float) -> list[Transmit]:
        out: list[Transmit] = []
        for index, stage in enumerate(self.stages):
            out += self._run(index, stage.expire(now), now)
        return out

    def _run(self, index: int, emitted: list[Transmit], now: float) -> list[Transmit]:
        """Carry what stage ``index`` emitted through the neighbouring stages."""
        out: list[Transmit] = []
        work = [(index, t) for t in emitted]
        while work:
            i, transmit = work.pop(0)
            nxt = i + 1 if transmit.side is Side.OUTSIDE else i - 1
            if nxt < 0 or nxt >= len(self.stages):
                out.append(transmit)
                continue
            enter = Side.INSIDE if transmit.side is Side.OUTSIDE else Side.OUTSIDE
            work += [(nxt, t) for t in self.stages[nxt].on_packet(transmit.packet, enter, now)]
        return out

    def take_events(self) -> list[Event]:
        events: list[Event] = []
        for stage in self.stages:
            name = stage.appliance.name
            for ev in stage.take_events():
                data = dict(ev.data)
                data["appliance"] = name
                events.append(Event(ev.t, ev.kind, f"[{name}] {ev.text}", ev.flow, ev.side,
                                    data))
        events.sort(key=lambda e: e.t)
        return events
