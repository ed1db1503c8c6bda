"""The analytic model: what a request/response exchange will experience, without running it.

The emulation shows; this model explains. Both read the same appliance record, and the test
suite checks that they agree on every shipped scenario. The runner also uses the model to
refuse a time compression at which rounding (kernel keepalive settings are whole seconds) or
timer jitter could change the outcome.

The exchange: the client connects, sends a request at t = 0 and waits up to
``client_timeout``; the server answers after ``answer_delay``. The only packets that can cross
the appliance in between are keepalive probes: the client's kernel sends one after
``keepalive_idle`` seconds without traffic, and as each probe is acknowledged the next comes
``keepalive_idle`` later. Unanswered probes are repeated every ``keepalive_interval`` seconds,
``keepalive_count`` times, before the client's kernel gives up on the connection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import pairwise

from simulator.core.appliances import LateAction

MIN_WALL_MARGIN = 0.05
"""Wall seconds that must separate two competing instants (answer vs. expiry, ...).

Process start-up, scheduling and delayed ACKs jitter a run by a few milliseconds; 50 ms
keeps the outcome deterministic on a loaded two-core machine.
"""


@dataclass(frozen=True, slots=True)
class Exchange:
    """Everything that decides the outcome, in (effective) model seconds."""

    idle_timeout: float
    late_from_inside: LateAction
    late_from_outside: LateAction
    answer_delay: float
    client_timeout: float
    keepalive_idle: float | None = None
    keepalive_interval: float = 75.0
    keepalive_count: int = 9


@dataclass(frozen=True, slots=True)
class Prediction:
    client: str
    """``answer``, ``timeout``, ``reset`` or ``keepalive_failed``."""
    client_at: float
    server: str
    """``delivered``, ``reset`` or ``unacknowledged``."""
    expires_at: float | None
    latest_keepalive_idle: float
    """Keepalive idle times strictly below this keep the flow alive."""
    story: list[str] = field(default_factory=list)

    def outcome(self) -> tuple[str, str]:
        return self.client, self.server


def predict(ex: Exchange) -> Prediction:
    """Walk the exchange's few possible instants in order; see the module docstring."""
    t_out, delay, limit = ex.idle_timeout, ex.answer_delay, ex.client_timeout
    ka = ex.keepalive_idle if ex.keepalive_idle is not None else math.inf
    story: list[str] = []

    if ka < t_out:
        story.append(f"keepalive every {ka:g} s refreshes the {t_out:g} s idle timer")
        if delay < limit:
            story.append(f"the answer arrives at {delay:g} s")
            return Prediction("answer", delay, "delivered", None, t_out, story)
        story.append(f"the client gives up at {limit:g} s before the answer")
        return Prediction("timeout", limit, "reset" if ex.late_from_outside is LateAction.RST
                          else "unacknowledged", None, t_out, story)

    if delay < t_out and delay < limit:
        story.append(f"the answer at {delay:g} s comes before the {t_out:g} s idle timeout")
        return Prediction("answer", delay, "delivered", None, t_out, story)

    expires = t_out
    story.append(f"the flow is idle from 0 s and expires silently at {expires:g} s")
    # The server's answer is the first packet from outside after expiry (if it comes first
    # from the server at all; the client's own FIN after its timeout does not reach it).
    if ex.late_from_outside is LateAction.RST:
        server = "reset"
        story.append(f"the server's answer at {delay:g} s gets an RST from the appliance")
    else:
        server = "unacknowledged"
        story.append(f"the server's answer at {delay:g} s is dropped; it retransmits in vain")

    # The client hears of the expiry only through its own packets: a keepalive probe.
    if ka < limit:
        if ex.late_from_inside is LateAction.RST:
            story.append(f"the client's keepalive probe at {ka:g} s gets an RST")
            return Prediction("reset", ka, server, expires, t_out, story)
        failed = ka + ex.keepalive_interval * ex.keepalive_count
        if failed < limit:
            story.append(f"the client's probes go unanswered; its kernel gives up at "
                         f"{failed:g} s")
            return Prediction("keepalive_failed", failed, server, expires, t_out, story)
    story.append(f"the client hears nothing and times out at {limit:g} s")
    return Prediction("timeout", limit, server, expires, t_out, story)


def decisive_gap(ex: Exchange) -> float:
    """The smallest distance between two instants whose order decides the outcome."""
    instants = [ex.idle_timeout, ex.answer_delay, ex.client_timeout]
    if ex.keepalive_idle is not None and ex.keepalive_idle < 2 * ex.client_timeout:
        instants.append(ex.keepalive_idle)
    instants.sort()
    return min((b - a for a, b in pairwise(instants)), default=math.inf)
