"""The dataplane's clock: model time as compressed wall time."""

from __future__ import annotations

import time

__all__ = ["CompressedClock"]


class CompressedClock:
    """Model seconds since ``origin`` (a ``time.monotonic()`` value), ``speed`` times wall."""

    def __init__(self, speed: float, origin: float | None = None) -> None:
        self.speed = speed
        self.origin = time.monotonic() if origin is None else origin

    def now(self) -> float:
        return (time.monotonic() - self.origin) * self.speed

    def wall_until(self, model_t: float) -> float:
        return max(0.0, (model_t - self.now()) / self.speed)
