"""Path events now, in a live world: ``natsim restart``, ``replace`` and ``blackhole S``
(and the pytest plugin's ``natsim_world.restart()``...) append a line to the world's
``control.jsonl``; the dataplane reads the new lines every :data:`CONTROL_EVERY` wall
seconds and has the engine carry each event out at that model time, as a scenario's
``events:`` would (``core/path_events.py``). A file, not a socket: the command runs in the
host's network namespace, the dataplane in the middlebox's, and both see the results folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from simulator.core.chain import Chain
from simulator.core.engine import Middlebox
from simulator.core.path_events import PathEvent, PathKind
from simulator.support.tail import LineTail

CONTROL_EVERY = 0.05
"""Wall seconds between two looks at the file: an event lands at most this late (5 model s
at speed 100)."""
NOW = (PathKind.RESTART, PathKind.REPLACE, PathKind.BLACKHOLE, PathKind.EXPIRE)
"""The kinds that can be carried out on demand (the others belong to a target or a host)."""


def request(kind: PathKind, duration: float | None = None, flow: int | None = None) -> str:
    """The line that asks for ``kind`` now (``flow``: which one ``expire`` forgets)."""
    return json.dumps({"kind": str(kind), "duration": duration, "flow": flow}) + "\n"


class ControlFile:
    def __init__(self, path: Path) -> None:
        self.tail = LineTail(path)

    def requests(self) -> list[PathEvent]:
        """The events asked for since the last look (a line not yet whole waits)."""
        lines = self.tail.new_lines()
        events = []
        for line in lines:
            try:
                spec = json.loads(line)
                kind = PathKind(spec["kind"])
                duration, flow = spec.get("duration"), spec.get("flow")
                if kind not in NOW or (kind is PathKind.BLACKHOLE) != (duration is not None) \
                        or (flow is not None and (kind is not PathKind.EXPIRE
                                                  or type(flow) is not int)):
                    continue  # the command checks; a hand-written line that is wrong is not
                events.append(PathEvent(kind, at=0.0, duration=duration, flow=flow))
            except (ValueError, KeyError, TypeError):
                continue
        return events

    def apply(self, engine: Middlebox | Chain, now: float) -> None:
        """Hand the new requests to the engine (one appliance: a chain takes none)."""
        for event in self.requests():
            if isinstance(engine, Middlebox):
                engine.path_event_now(event, now)
