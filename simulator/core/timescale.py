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

from simulator.core.jsonvalue import JsonObject


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

    def to_dict(self) -> JsonObject:
        return {"setting": self.name, "model_s": self.model, "wall_s": self.wall,
                "effective_model_s": self.effective_model, "kernel_whole_seconds": self.kernel}


def scale(name: str, model: float, speed: float) -> Scaled:
    """A duration our own code waits for: divided exactly."""
    return Scaled(name, model, model / speed, model, False)


def kernel_seconds(model: float, speed: float) -> int:
    """The one rounding rule for what the kernel times in whole seconds (the ``TCP_KEEP*``
    options, the ``tcp_keepalive_*`` sysctls): ``model / speed``, rounded, at least 1. A
    run at that speed really models ``kernel_seconds(model, speed) * speed``."""
    return max(1, round(model / speed))


def scale_kernel(name: str, model: float, speed: float) -> Scaled:
    """A kernel setting in whole seconds (minimum 1): divided, then rounded."""
    wall = kernel_seconds(model, speed)
    return Scaled(name, model, float(wall), wall * speed, True)


_HZ_CHOICES = (100, 250, 300, 1000)
"""CONFIG_HZ values kernels are built with; the machine's own is not visible from user space."""


def kernel_timer_lateness(wall_seconds: float) -> float:
    """How late (wall seconds) a kernel timer of this length may fire, at worst.

    Keepalive timers live in the kernel's timer wheel, whose slots grow with the timeout:
    level n holds timers of 64*8**(n-1) to 64*8**n ticks with a granularity of 8**n ticks,
    and a timer is rounded up to its slot. With CONFIG_HZ unknown, take the worst of the
    usual values. (A 3-second TCP_KEEPIDLE was seen firing 140 ms late on a HZ=250 kernel.)
    """
    worst = 0.0
    for hz in _HZ_CHOICES:
        ticks = wall_seconds * hz
        level = 0
        while ticks >= 64 * 8 ** level:
            level += 1
        worst = max(worst, 8 ** level / hz)
    return worst
