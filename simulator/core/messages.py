"""The messages that cross process boundaries: workload -> runner, dataplane -> runner.

Every program in a run (the client, the server, the middlebox's dataplane) tells the runner
what it saw as one JSON line per thing. This module is the one place that says what those
lines are: a :class:`Message` with a source (``client``, ``server``, ``server1``...,
``middlebox``), a :class:`Kind`, a text for people, a timestamp, and data. Both ends use it:
the workloads and the dataplane write with :meth:`Message.to_line`, the runner (and the fake
backend, which makes them without processes) reads with :meth:`Message.from_line`.

Outcomes are enums too (:class:`ClientOutcome`, :class:`ServerOutcome`), and a capacity run's
counts are a :class:`LoadCounts` record rather than a string split on ``=``.

Timestamps: workloads stamp ``mono`` (``time.monotonic()``, the same clock in every
namespace); the dataplane stamps ``t``, model seconds since its own origin. The session
(:mod:`simulator.core.session`) maps both onto one model-time axis.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TypeVar

from simulator.core.events import EventKind
from simulator.core.jsonvalue import Json, JsonObject, fields_json, from_json, number

T = TypeVar("T")


class Role(StrEnum):
    CLIENT = "client"
    SERVER = "server"
    MIDDLEBOX = "middlebox"
    DNS = "dns"
    PATH = "path"
    """The path itself (a late attach, carried out by the runner)."""
    PROXY = "proxy"


class Kind(StrEnum):
    """What a workload or the dataplane reports (the engine's own events are
    :class:`~simulator.core.events.EventKind`)."""

    # lifecycle
    READY = "ready"
    STOPPED = "stopped"
    HEARTBEAT = "heartbeat"
    OUTCOME = "outcome"
    OUTPUT = "output"
    """A line that was not a message (a stray print): kept as text."""
    DOCKER = "docker"
    VERDICT = "verdict"
    """A container's own verdict (docker-compose.yml with NATSIM_EXPECT)."""
    # client
    CONNECTED = "connected"
    CONNECT_FAILED = "connect_failed"
    REQUEST_SENT = "request_sent"
    ANSWER = "answer"
    TIMEOUT = "timeout"
    RESET = "reset"
    KEEPALIVE_FAILED = "keepalive_failed"
    RETRANSMIT_TIMEOUT = "retransmit_timeout"
    PING = "ping"
    """A pool's ping on an idle connection (its keepalive, or its check before use)."""
    CLOSED = "closed"
    ERROR = "error"
    # server
    ACCEPTED = "accepted"
    NO_CLIENT = "no_client"
    REQUEST_RECEIVED = "request_received"
    ANSWER_SENT = "answer_sent"
    SEND_FAILED = "send_failed"
    DELIVERED = "delivered"
    UNACKNOWLEDGED = "unacknowledged"
    CLIENT_CLOSED = "client_closed"
    STRAY_HEARTBEAT = "stray_heartbeat"
    # the world's DNS server (late-attach runs)
    DNS_ANSWER = "dns_answer"
    # capacity runs
    LOAD_START = "load_start"
    LOAD_PROGRESS = "load_progress"
    LOAD_OPENED = "load_opened"


class ClientOutcome(StrEnum):
    ANSWER = "answer"
    TIMEOUT = "timeout"
    RESET = "reset"
    KEEPALIVE_FAILED = "keepalive_failed"
    CONNECT_FAILED = "connect_failed"
    CLOSED = "closed"
    ERROR = "error"


class ServerOutcome(StrEnum):
    DELIVERED = "delivered"
    RESET = "reset"
    UNACKNOWLEDGED = "unacknowledged"
    ANSWERED = "answered"
    """UDP: the answer left; UDP tells the server nothing more."""
    NO_CLIENT = "no_client"
    NO_REQUEST = "no_request"
    ERROR = "error"


NOT_SERVED = (ServerOutcome.NO_CLIENT, ServerOutcome.NO_REQUEST)
"""Server outcomes of a backend that the connection never reached (several backends)."""
NO_OUTCOME = "no outcome (process did not report one)"


class Verdict(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    ERROR = "ERROR"
    """No verdict: the run cannot be trusted (its middlebox died or hung)."""


@dataclass(frozen=True)
class MiddleboxReady:
    """``ready`` from the middlebox (the dataplane, or the proxy's watcher)."""

    origin: float
    """``time.monotonic()`` at its model time zero: its events' ``t`` count from there."""
    fast_path: str = "on"
    """``on``, or why the compiled fast path is off."""


@dataclass(frozen=True)
class HeldFlow:
    flow: int
    state: str
    idle: float


@dataclass(frozen=True)
class MiddleboxStopped:
    """``stopped``: the middlebox's final report, the proof it was alive to the end."""

    counters: Mapping[str, int]
    flows: tuple[HeldFlow, ...] = ()
    """Every flow it still held."""
    fast_path: Json = None
    expiry_lateness: Json = None


@dataclass(frozen=True, slots=True)
class LoadCounts:
    """A capacity run's outcome: how the client's connection attempts ended."""

    established: int
    timed_out: int = 0
    failed: int = 0

    def __str__(self) -> str:
        return (f"established={self.established} timed_out={self.timed_out} "
                f"failed={self.failed}")

    @classmethod
    def from_data(cls, data: Mapping[str, Json]) -> LoadCounts:
        return cls(*(int(number(data, key, 0)) for key in ("established", "timed_out",
                                                             "failed")))

    def scaled(self, factor: float) -> LoadCounts:
        return LoadCounts(*(round(n * factor) for n in (self.established, self.timed_out,
                                                         self.failed)))


def _frozen(data: Mapping[str, Json]) -> Mapping[str, Json]:
    return MappingProxyType(dict(data))


def kind_of(name: Json) -> Kind | EventKind | None:
    """The kind a line names, or None: a workload's (:class:`Kind`) or the engine's."""
    if not isinstance(name, str):
        return None
    for kinds in (Kind, EventKind):
        try:
            return kinds(name)
        except ValueError:
            continue
    return None


@dataclass(frozen=True, slots=True)
class Message:
    """One thing one program saw."""

    source: str
    kind: Kind | EventKind
    text: str = ""
    mono: float | None = None
    """Workloads: ``time.monotonic()`` when it happened."""
    t: float | None = None
    """The dataplane: model seconds since its origin."""
    data: Mapping[str, Json] = field(default_factory=lambda: _frozen({}))

    @property
    def outcome(self) -> str | None:
        value = self.data.get("outcome")
        return None if value is None else str(value)

    def to_dict(self) -> JsonObject:
        out: JsonObject = {"source": self.source, "kind": str(self.kind), "text": self.text}
        if self.mono is not None:
            out["mono"] = self.mono
        if self.t is not None:
            out["t"] = self.t
        out.update(self.data)
        return out

    @classmethod
    def carrying(cls, source: str, kind: Kind, payload: object, text: str = "",
                 t: float | None = None) -> Message:
        """A message whose data is a typed payload (:class:`MiddleboxReady`...)."""
        return cls(source, kind, text, t=t, data=_frozen(fields_json(payload)))

    def payload(self, cls: type[T]) -> T:
        """The data as the typed payload ``cls``; :class:`JsonShapeError` names the field
        at fault in one that is not."""
        return from_json(cls, dict(self.data), f"{self.source} {self.kind}")

    def to_line(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, raw: Mapping[str, Json], default_source: str = "") -> Message:
        """A message as a program wrote it; one of a kind natsim does not know is kept as
        OUTPUT, its kind in front of its text (never dropped, never mistaken for another)."""
        data = {k: v for k, v in raw.items() if k not in ("source", "kind", "text", "mono", "t")}
        mono, t = raw.get("mono"), raw.get("t")
        kind, text = kind_of(raw.get("kind", Kind.OUTPUT)), str(raw.get("text", ""))
        if kind is None:
            kind, text = Kind.OUTPUT, f"{raw.get('kind')}: {text}"
        return cls(source=str(raw.get("source") or default_source), kind=kind, text=text,
                   mono=float(mono) if isinstance(mono, int | float) else None,
                   t=float(t) if isinstance(t, int | float) else None,
                   data=_frozen(data))

    @classmethod
    def from_line(cls, raw: bytes | str, role: str) -> Message:
        """A line from ``role``'s pipe; anything that is not a message becomes OUTPUT text."""
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            return cls(source=role, kind=Kind.OUTPUT, text=text.strip())
        return cls.from_dict(value, role)

    def with_source(self, source: str) -> Message:
        return Message(source, self.kind, self.text, self.mono, self.t, self.data)
