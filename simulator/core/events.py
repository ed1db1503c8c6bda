"""Events: the engine's account of what it did, for timelines, results and tests.

Every decision that changes what an endpoint experiences is an event (a flow created, a
keepalive that refreshed it, an expiry, a packet dropped, an RST sent). Plain data packets
are coalesced (see ``Middlebox.data_event_gap``) so that a bulk transfer does not flood the
log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from simulator.core.jsonvalue import JsonObject


class Side(StrEnum):
    """Which of the middlebox's ports a packet came from or goes to."""

    INSIDE = "inside"
    """The client (private subnet) side."""
    OUTSIDE = "outside"
    """The server (destination) side."""

    @property
    def peer_role(self) -> str:
        return "client" if self is Side.INSIDE else "server"


class EventKind(StrEnum):
    FLOW_CREATED = "flow_created"
    FLOW_ESTABLISHED = "flow_established"
    DATA = "data"
    KEEPALIVE = "keepalive"
    FLOW_CLOSED = "flow_closed"
    FLOW_EXPIRED = "flow_expired"
    DROPPED = "dropped"
    RST_SENT = "rst_sent"
    PORT_ALLOCATION_ERROR = "port_allocation_error"
    PATH_EVENT = "path_event"
    """The path itself changed: a restart, a deregistration, a blackhole, an attach."""


@dataclass(frozen=True, slots=True)
class Event:
    """One thing the middlebox did, at model time ``t``."""

    t: float
    kind: EventKind
    text: str
    flow: int | None = None
    side: Side | None = None
    data: JsonObject = field(default_factory=dict)

    def to_dict(self) -> JsonObject:
        out: JsonObject = {"t": round(self.t, 6), "source": "middlebox",
                               "kind": str(self.kind), "text": self.text}
        if self.flow is not None:
            out["flow"] = self.flow
        if self.side is not None:
            out["side"] = str(self.side)
        out.update(self.data)
        return out
