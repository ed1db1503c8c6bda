"""A run as a pure state machine: messages in, timeline, outcomes, verdict, result document out.

Theory of operation
-------------------
Whatever carries a run out (the runner with real processes in namespaces or containers, or
the fake backend in virtual time), it feeds every :class:`~simulator.core.messages.Message`
it gets to a :class:`RunSession` and asks it the rest:

* **Time.** Workloads stamp ``time.monotonic()``; the dataplane stamps model seconds since
  its origin. :class:`Timebase` maps both onto one model-time axis whose zero is the moment
  the client sent its request (or started its load), so "the answer after 400 s" reads 400.
* **Order.** Lines from several processes arrive through several pipes. :meth:`release`
  hands out the events whose time is at least ``hold`` wall seconds old, in model-time
  order, so that a slightly later line with an earlier time still goes first.
* **Outcomes and verdict.** Each workload reports one outcome. The verdict compares what
  happened with what the scenario expects (PASS/FAIL) *and* with what the analytic model
  predicted (a disagreement is reported as such: it means the model or the emulation is
  wrong). A run whose middlebox died or hung has no verdict at all: ERROR.
* **Result document.** :meth:`document` is ``result.json`` minus what only the driver knows
  (pictures, metric samples, wall time).

No I/O, no clock: times come in with the messages and the caller's ``now``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from simulator.core.jsonvalue import Json, JsonObject, JsonShapeError
from simulator.core.messages import (
    NO_OUTCOME,
    NOT_SERVED,
    Kind,
    Message,
    MiddleboxStopped,
    Role,
    Verdict,
)

_SILENT = (Kind.READY, Kind.STOPPED, Kind.HEARTBEAT)
"""Lifecycle lines: they steer the session but are not events of the story."""


@dataclass
class Timebase:
    """Monotonic and dataplane time onto one model-time axis (zero: the request)."""

    speed: float
    t0: float | None = None
    """``time.monotonic()`` at model time zero, once known."""
    mbox_origin: float | None = None
    """``time.monotonic()`` at the dataplane's model time zero."""

    def mono(self, msg: Message) -> float | None:
        """When ``msg`` happened, as a ``time.monotonic()`` value (None: unknown)."""
        if msg.mono is not None:
            return msg.mono
        if msg.t is not None and self.mbox_origin is not None:
            return self.mbox_origin + msg.t / self.speed
        return None

    def model(self, msg: Message) -> float:
        assert self.t0 is not None
        mono = self.mono(msg)
        return 0.0 if mono is None else (mono - self.t0) * self.speed

    def wall(self, model_t: float) -> float:
        return model_t / self.speed


@dataclass(frozen=True)
class TimelineEvent:
    """One line of the story: model time, wall time, who, what."""

    t: float
    wall: float
    source: str
    kind: str
    text: str
    raw: Mapping[str, Json] = field(compare=False, default_factory=dict)

    def to_dict(self) -> JsonObject:
        out: JsonObject = {k: v for k, v in self.raw.items() if k not in ("mono", "t")}
        out.update({"t": round(self.t, 3), "wall": round(self.wall, 4), "source": self.source,
                    "kind": self.kind, "text": self.text})
        return out


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    client: str
    server: str
    expected: tuple[str, str]
    predicted: tuple[str, str]
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.verdict is Verdict.PASS

    @property
    def model_agrees(self) -> bool:
        """Whether what happened is what the analytic model predicted."""
        return (self.client, self.server) == self.predicted


class RunSession:
    """Feed it messages; ask it for the timeline, the outcomes, the verdict, the document."""

    def __init__(self, speed: float, expected: tuple[str, str],
                 predicted: tuple[str, str]) -> None:
        self.timebase = Timebase(speed)
        self.expected = expected
        self.predicted = predicted
        self.messages: list[Message] = []
        self._pending: list[Message] = []
        self.timeline: list[TimelineEvent] = []
        self.counters: dict[str, int] = {}
        self.middlebox_final: Mapping[str, Json] = {}
        self.error: str | None = None
        self.error_detail: list[str] = []
        self._pinned = False

    # -- in ---------------------------------------------------------------------------------

    def middlebox_ready(self, origin_mono: float) -> None:
        self.timebase.mbox_origin = origin_mono

    def pin_zero(self, mono: float) -> None:
        """Model time zero is this instant (a client that starts before its network: its
        start), not its request."""
        self.timebase.t0 = mono
        self._pinned = True

    def feed(self, msg: Message) -> None:
        self.messages.append(msg)
        if msg.kind == Kind.STOPPED and msg.source == Role.MIDDLEBOX:
            try:
                self.counters = dict(msg.payload(MiddleboxStopped).counters)
            except JsonShapeError as exc:  # no trustworthy last word: no verdict
                self.middlebox_failed(f"the middlebox's final report is not natsim's: {exc}")
            else:
                self.middlebox_final = msg.data
        if msg.kind in _SILENT:
            return
        # the first request is time zero (a scripted client sends several)
        if msg.source == Role.CLIENT and msg.kind in (Kind.REQUEST_SENT, Kind.LOAD_START) \
                and msg.mono is not None and not self._pinned and self.timebase.t0 is None:
            self.timebase.t0 = msg.mono
        self._pending.append(msg)

    def middlebox_failed(self, reason: str, detail: list[str] | None = None) -> None:
        """The run has no verdict: its middlebox died or hung (``reason`` says which)."""
        if self.error is None:
            self.error = reason
            self.error_detail = list(detail or [])

    # -- the timeline ---------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether model time zero is known (the client sent its request)."""
        return self.timebase.t0 is not None

    def model_now(self, now_mono: float) -> float | None:
        t0 = self.timebase.t0
        return None if t0 is None else (now_mono - t0) * self.timebase.speed

    def release(self, now_mono: float, hold: float) -> list[TimelineEvent]:
        """The held events at least ``hold`` wall seconds old, in model-time order."""
        if self.timebase.t0 is None:
            return []
        return self._release((now_mono - hold - self.timebase.t0) * self.timebase.speed)

    def release_all(self) -> list[TimelineEvent]:
        """Everything still held (the run is over)."""
        if self.timebase.t0 is None:  # the client never sent its request: start at the first
            stamps = [m for m in (self.timebase.mono(p) for p in self._pending) if m is not None]
            self.timebase.t0 = min(stamps, default=0.0)
        return self._release(float("inf"))

    def _release(self, cutoff: float) -> list[TimelineEvent]:
        events, keep = [], []
        for msg in self._pending:
            t = self.timebase.model(msg)
            if t <= cutoff:
                events.append(TimelineEvent(t, self.timebase.wall(t), msg.source, msg.kind,
                                            msg.text, msg.to_dict()))
            else:
                keep.append(msg)
        self._pending = keep
        events.sort(key=lambda e: e.t)
        self.timeline += events
        return [e for e in events if e.kind != Kind.OUTCOME]

    # -- the verdict ----------------------------------------------------------------------

    def outcome(self, role: Role) -> str:
        """What the client (or the server that got the connection) reported."""
        outcomes = [m.outcome for m in self.messages if m.kind == Kind.OUTCOME
                    and m.outcome is not None
                    and (m.source == role or (role is Role.SERVER
                                              and m.source.startswith(Role.SERVER)))]
        served = [o for o in outcomes if o not in NOT_SERVED]
        return next(iter(served or outcomes), NO_OUTCOME)

    def judge(self) -> Judgement:
        client, server = self.outcome(Role.CLIENT), self.outcome(Role.SERVER)
        if self.error is not None:
            verdict = Verdict.ERROR
        else:
            verdict = Verdict.PASS if (client, server) == self.expected else Verdict.FAIL
        return Judgement(verdict, client, server, self.expected, self.predicted, self.error)

    def document(self, **extra: Json) -> JsonObject:
        """``result.json``: the judgement, the timeline, the counters, and ``extra`` (the
        scenario, the settings, what only the driver knows) in front."""
        j = self.judge()
        return {
            **extra,
            "expected": {"client": j.expected[0], "server": j.expected[1]},
            "outcome": {"client": j.client, "server": j.server},
            "verdict": str(j.verdict),
            "model_agrees": j.model_agrees,
            "middlebox": {"healthy": j.error is None, "error": j.error,
                          "stderr_tail": self.error_detail},
            "counters": self.counters,
            "events": [e.to_dict() for e in sorted(self.timeline, key=lambda e: e.t)],
        }
