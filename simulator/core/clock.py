"""Clocks in model seconds, and the one clock that moves only when told.

The engine never asks what time it is; callers pass ``now`` in. A clock object is the
caller's side of that contract. The dataplane's is the compressed wall clock
(``simulator.dataplane.wallclock.CompressedClock``: one wall second is ``speed`` model
seconds); everything that must not wait for real time -- the unit tests, the fuzzer and
the fake network of the fake backend -- uses :class:`ManualClock`, whose time jumps from
one due action to the next (trio's autojump clock idea), so 350 s pass in no time.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    """Anything that can tell the current time, in seconds since its start."""

    def now(self) -> float: ...


class ModelClock(Clock, Protocol):
    """What the dataplane asks of a clock: model time now, and how many wall seconds to
    wait for a model time."""

    speed: float

    def wall_until(self, model_t: float) -> float: ...


class ManualClock:
    """A clock that moves only when told to: ``advance(350)`` takes no real time; actions
    put on it with :meth:`call_at` run, in order, when :meth:`run` reaches their time."""

    def __init__(self, start: float = 0.0, speed: float = 1.0) -> None:
        self._now = start
        self.speed = speed
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def set(self, t: float) -> None:
        """Move to ``t`` (a test's clock, which may be set anywhere at or after now)."""
        self.advance(t - self._now)

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError(f"a clock cannot go backwards (advance({seconds}))")
        self._now += seconds
        return self._now

    def wall_until(self, model_t: float) -> float:
        """Nothing waits on this clock: it is moved, never waited for."""
        return 0.0

    def call_at(self, when: float, action: Callable[[], None]) -> None:
        """Run ``action`` when the clock reaches ``when`` (now, if that has passed)."""
        heapq.heappush(self._due, (max(when, self._now), next(self._seq), action))

    def next_due(self) -> float | None:
        return self._due[0][0] if self._due else None

    def run(self, until: float, stop: Callable[[], bool] = lambda: False) -> None:
        """Run every action due up to ``until``, jumping from one to the next, then stand at
        ``until``; or stop just after an action that makes ``stop()`` true."""
        while self._due and self._due[0][0] <= until:
            self._now, _, action = heapq.heappop(self._due)
            action()
            if stop():
                return
        self._now = max(self._now, until)
