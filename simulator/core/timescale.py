"""Time compression: model seconds to wall seconds, and what rounding does to them.

A scenario speaks in model seconds. At speed K one wall second is K model seconds, so every
duration is divided by K. Durations that our own code waits for (server delay, client
timeout, the middlebox's idle timeout) stay exact floats. Durations the *kernel* owns (the
``TCP_KEEP*`` socket options and ``net.ipv4.tcp_keepalive_*`` sysctls) are whole seconds of at
least 1, so they are rounded, and the value the run really models is ``round(model / K) * K``.
Each :class:`Scaled` records both so that reports show the effective model value.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Scaled:
    """One duration as written (model), as applied (wall), and as it really behaves."""

    name: str
    model: float
    wall: float
    effective_model: float
    kernel: bool
    """True if the kernel applies it in whole seconds (so ``wall`` is an integer)."""

    @property
    def rounded(self) -> bool:
        return abs(self.effective_model - self.model) > 1e-9

    def to_dict(self) -> dict[str, object]:
        return {"setting": self.name, "model_s": self.model, "wall_s": self.wall,
                "effective_model_s": self.effective_model, "kernel_whole_seconds": self.kernel}


def scale(name: str, model: float, speed: float) -> Scaled:
    """A duration our own code waits for: divided exactly."""
    return Scaled(name, model, model / speed, model, False)


def scale_kernel(name: str, model: float, speed: float) -> Scaled:
    """A kernel setting in whole seconds (minimum 1): divided, then rounded."""
    wall = max(1, round(model / speed))
    return Scaled(name, model, float(wall), wall * speed, True)
