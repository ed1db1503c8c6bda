"""Clocks in model seconds.

The engine never asks what time it is; callers pass ``now`` in. A clock object is the
caller's side of that contract: :class:`ManualClock` for tests, and the compressed wall clock
that the dataplane builds (``simulator.dataplane.packet_loop.CompressedClock``) for real
runs, where one wall second is ``speed`` model seconds.
"""

from __future__ import annotations

from typing import Protocol


class Clock(Protocol):
    """Anything that can tell the current model time, in seconds since the run started."""

    def now(self) -> float: ...


class ManualClock:
    """A clock that moves only when told to: ``advance(350)`` takes no real time."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError(f"a clock cannot go backwards (advance({seconds}))")
        self._now += seconds
        return self._now
