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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from simulator.core.appliances import Appliance, LateAction

MIN_WALL_MARGIN = 0.05
"""Wall seconds that must separate two competing instants (answer vs. expiry, ...).

Process start-up, scheduling and delayed ACKs jitter a run by a few milliseconds; 50 ms
keeps the outcome deterministic on a loaded two-core machine.
"""


@dataclass(frozen=True, slots=True)
class Exchange:
    """Everything that decides the outcome, in (effective) model seconds.

    The late rules here are RST, DROP or PASS: a Gateway Load Balancer's REHASH is resolved
    beforehand by :func:`resolve_late`, because whether it delivers depends on timing.
    """

    idle_timeout: float
    late_from_inside: LateAction
    late_from_outside: LateAction
    answer_delay: float
    client_timeout: float
    keepalive_idle: float | None = None
    keepalive_interval: float = 75.0
    keepalive_count: int = 9
    reset_at_expiry: bool = False
    probes_refresh: bool = True
    """False: keepalive probes cross the appliance but do not refresh its idle timer
    (Global Accelerator needs data)."""
    closing_timeout: float | None = None
    """The timeout of a flow once a FIN has crossed (the appliance's transitory timeout;
    None: the idle timeout goes on)."""
    keepalive_user_timeout: float | None = None
    """``TCP_USER_TIMEOUT`` on the client's socket: with keepalive on, the kernel gives up
    on unanswered probes by it instead of by their count (:func:`keepalive_give_up`)."""


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


def resolve_late(appliance: Appliance, rule: LateAction, idle_gap: float) -> LateAction:
    """What a REHASH rule amounts to for a packet after ``idle_gap`` seconds of silence.

    With 3- or 2-tuple stickiness the packet returns to the same inspection host, which
    delivers it if it still remembers the flow; with 5-tuple stickiness it lands on another
    host, which drops it (see the catalogue's Gateway Load Balancer entry).
    """
    if rule is not LateAction.REHASH:
        return rule
    if appliance.stickiness != 5 and idle_gap < appliance.target_idle_timeout:
        return LateAction.PASS
    return LateAction.DROP


def _server_after_client_left(rule: LateAction) -> str:
    """The server's fate when its answer arrives after the client's side is gone."""
    return "unacknowledged" if rule is LateAction.DROP else "reset"


def server_after_leaving(ex: Exchange, left_at: float, alive: bool,
                         story: list[str] | None = None) -> str:
    """The server's fate when it answers after the client closed its socket at ``left_at``
    (the reason goes to ``story`` when the answer meets that socket).

    If the flow was alive then, the client's FIN crossed and refreshed it: until the flow's
    closing (or idle) timeout the answer still reaches the client's kernel, which resets it
    (the socket is closed). Later the flow is gone and the late rule decides, unless the
    appliance reset both ends when it expired.
    """
    lasts = ex.closing_timeout if ex.closing_timeout is not None else ex.idle_timeout
    if alive and ex.answer_delay < left_at + lasts:
        if story is not None:
            story.append(f"its FIN keeps the flow going; the answer at {ex.answer_delay:g} s "
                         "reaches its closed socket, whose kernel resets it")
        return "reset"
    if alive and ex.reset_at_expiry:
        return "reset"
    return _server_after_client_left(ex.late_from_outside)


def predict(ex: Exchange, resend: Sequence[float] | None = None) -> Prediction:  # noqa: C901
    """Walk the exchange's few possible instants in order; see the module docstring.

    An appliance that tracks a late inside packet anew (``late_from_inside: pass``, a
    security group, a conntrack firewall) lets a keepalive probe re-open the forgotten
    flow, and the server's next retransmission of a dropped answer then passes as a reply:
    the outcome depends on the server kernel's retransmission times (``resend``, model
    seconds after the answer; Linux's own by default), which the walk of
    :mod:`simulator.core.path_model` follows instant by instant.
    """
    # long: the model is one walk through time, instant by instant; its branches are the
    # story's branches, and reading them in one place is the point
    if ex.late_from_inside is LateAction.PASS:
        return _walked(ex, resend)[0]
    t_out, delay, limit = ex.idle_timeout, ex.answer_delay, ex.client_timeout
    ka = ex.keepalive_idle if ex.keepalive_idle is not None else math.inf
    inside, outside = ex.late_from_inside, ex.late_from_outside
    story: list[str] = []

    def done(client: str, at: float, server: str, expires: float | None) -> Prediction:
        return Prediction(client, at, server, expires, t_out if ex.probes_refresh else 0.0,
                          story)

    if not ex.probes_refresh and ka < math.inf:
        story.append(f"keepalive probes every {ka:g} s cross the appliance but do not "
                     f"refresh its {t_out:g} s idle timer (it needs data)")
        ka = first_probe_after(ka, t_out)
    elif ka < t_out:
        story.append(f"keepalive every {ka:g} s refreshes the {t_out:g} s idle timer")
        if delay < limit:
            story.append(f"the answer arrives at {delay:g} s")
            return done("answer", delay, "delivered", None)
        story.append(f"the client gives up at {limit:g} s before the answer")
        return done("timeout", limit, server_after_leaving(ex, limit, True, story), None)

    if delay < t_out and delay < limit:
        story.append(f"the answer at {delay:g} s comes before the {t_out:g} s idle timeout")
        return done("answer", delay, "delivered", None)

    expires = t_out
    if ex.reset_at_expiry and t_out < limit:
        story.append(f"the flow expires at {expires:g} s and the appliance resets both ends")
        return done("reset", expires, "reset", expires)
    story.append(f"the flow is idle from 0 s and expires silently at {expires:g} s")

    # Whoever sends first after the expiry meets the appliance's late rule for its side.
    if ka < delay and ka < limit:
        return _client_probes_first(ex, ka, story, done, expires)
    if delay < limit:
        if outside is LateAction.PASS:
            story.append(f"the server's answer at {delay:g} s is tracked anew and delivered")
            return done("answer", delay, "delivered", expires)
        if outside is LateAction.RST:
            server = "reset"
            story.append(f"the server's answer at {delay:g} s gets an RST from the appliance")
        else:
            server = "unacknowledged"
            story.append(f"the server's answer at {delay:g} s is dropped; it retransmits in "
                         "vain")
        if ka < limit:
            if inside is LateAction.DROP:
                failed = keepalive_give_up(ex, ka)
                if failed < limit:
                    story.append(f"the client's probes go unanswered; its kernel gives up "
                                 f"at {failed:g} s")
                    return done("keepalive_failed", failed, server, expires)
            else:
                story.append(f"the client's keepalive probe at {ka:g} s gets an RST")
                return done("reset", ka, server, expires)
        story.append(f"the client hears nothing and times out at {limit:g} s")
        return done("timeout", limit, server, expires)
    story.append(f"the client hears nothing and times out at {limit:g} s, before the answer")
    return done("timeout", limit, server_after_leaving(ex, limit, limit < expires, story),
                expires)


Done = Callable[[str, float, str, float | None], Prediction]


def keepalive_give_up(ex: Exchange, first_unanswered: float) -> float:
    """When the client's kernel gives up on keepalive probes that go unanswered from
    ``first_unanswered`` on (Linux ``tcp_keepalive_timer``): after ``keepalive_count`` of
    them; with ``TCP_USER_TIMEOUT`` the count is ignored and it gives up at the first probe
    timer, after the first probe, at which the user timeout has passed since the peer was
    last heard (one keepalive idle time before the first unanswered probe)."""
    interval, user = ex.keepalive_interval, ex.keepalive_user_timeout
    if user is None:
        return first_unanswered + interval * ex.keepalive_count
    heard = first_unanswered - (ex.keepalive_idle or 0.0)
    steps = max(1, math.ceil((heard + user - first_unanswered) / interval - 1e-9))
    return first_unanswered + interval * steps


def first_probe_after(ka: float, t_out: float) -> float:
    """The first keepalive probe at or after the expiry, probes going out every ``ka``."""
    return math.floor(t_out / ka) * ka + ka if t_out % ka else t_out


def _client_probes_first(ex: Exchange, ka: float, story: list[str], done: Done,
                         expires: float) -> Prediction:
    delay, limit = ex.answer_delay, ex.client_timeout
    if ex.late_from_inside is LateAction.RST:
        story.append(f"the client's keepalive probe at {ka:g} s gets an RST")
        story.append(f"the server's answer at {delay:g} s finds no connection")
        return done("reset", ka, _server_after_client_left(ex.late_from_outside), expires)
    # (a ``pass`` inside rule never comes here: :func:`predict` walks such an exchange)
    failed = keepalive_give_up(ex, ka)
    server = _server_after_client_left(ex.late_from_outside) if delay >= failed else (
        "reset" if ex.late_from_outside is LateAction.RST else "unacknowledged")
    if failed < limit:
        story.append(f"the client's probes go unanswered; its kernel gives up at {failed:g} s")
        return done("keepalive_failed", failed, server, expires)
    story.append(f"the client hears nothing and times out at {limit:g} s")
    return done("timeout", limit, server, expires)


@dataclass(frozen=True, slots=True)
class DatagramExchange:
    """A UDP request answered after ``answer_delay``; optional client heartbeats."""

    idle_timeout: float
    answer_delay: float
    client_timeout: float
    heartbeat: float | None = None
    recreates: bool = False
    """A heartbeat after the expiry creates the request's flow again, with the same 5-tuple
    (an appliance that does not translate the client, such as a Network Load Balancer,
    which hashes it to the same target): the answer passes if it comes within the idle
    timeout of the last heartbeat. Through a NAT the new mapping takes a new public port,
    and the answer, sent to the old one, is dropped."""
    own_flows: bool = False
    """The heartbeats leave from fresh sockets (new source ports): flows of their own,
    which keep nothing of the request's alive."""

    def last_beat(self) -> float:
        """The client's last datagram for the request's flow before the answer."""
        beat = self.heartbeat
        if beat is None or self.own_flows:
            return 0.0
        return math.floor(self.answer_delay / beat) * beat


def predict_udp(ex: DatagramExchange) -> Prediction:
    """A UDP mapping lives while datagrams keep coming; the late answer is dropped silently."""
    t_out, delay, limit = ex.idle_timeout, ex.answer_delay, ex.client_timeout
    beat = ex.heartbeat if ex.heartbeat is not None and not ex.own_flows else math.inf
    story: list[str] = []
    if delay >= limit:
        story.append(f"the client gives up at {limit:g} s, before the answer")
        return Prediction("timeout", limit, "answered", None, t_out, story)
    if ex.own_flows and ex.heartbeat is not None:
        story.append(f"the heartbeats every {ex.heartbeat:g} s leave from new source ports: "
                     "flows of their own, which keep nothing of the request's flow alive")
    if beat < t_out:
        story.append(f"a heartbeat every {beat:g} s keeps the {t_out:g} s UDP mapping alive")
        story.append(f"the answer arrives at {delay:g} s")
        return Prediction("answer", delay, "answered", None, t_out, story)
    if delay < t_out:
        story.append(f"the answer at {delay:g} s comes before the {t_out:g} s UDP timeout")
        return Prediction("answer", delay, "answered", None, t_out, story)
    story.append(f"the UDP mapping expires silently at {t_out:g} s")
    last = ex.last_beat()
    if ex.recreates and last > 0 and delay - last < t_out:
        story.append(f"the heartbeat at {last:g} s, with the request's own 5-tuple, creates "
                     "the flow again (a 5-tuple hash: the same target)")
        story.append(f"the answer at {delay:g} s, {delay - last:g} s after it, passes")
        return Prediction("answer", delay, "answered", t_out, t_out, story)
    if not ex.recreates and math.isfinite(beat) and beat < delay:
        story.append(f"the heartbeat at {beat:g} s gets a new mapping (a new public port)")
    story.append(f"the answer at {delay:g} s is dropped; nobody is told")
    story.append(f"the client times out at {limit:g} s")
    return Prediction("timeout", limit, "answered", t_out, t_out, story)


def decisive_gap_udp(ex: DatagramExchange) -> float:
    heartbeat = None if ex.own_flows else ex.heartbeat
    instants = sorted(x for x in (ex.idle_timeout, ex.answer_delay, ex.client_timeout,
                                  heartbeat) if x is not None)
    gaps = [b - a for a, b in pairwise(instants)]
    if ex.recreates and heartbeat is not None:  # the answer against the last heartbeat's
        since = ex.answer_delay - ex.last_beat()  # flow (and a heartbeat at the same time)
        gaps += [abs(since - ex.idle_timeout), since]
    return min(gaps, default=math.inf)


def _walked(ex: Exchange, resend: Sequence[float] | None) -> tuple[Prediction, float]:
    """The walk's prediction and its decisive gap (see :func:`predict`)."""
    from simulator.core import path_model  # noqa: PLC0415  (the walk builds on this module)

    times = path_model.retransmits(1.0) if resend is None else resend
    effects = path_model.PathEffects()
    return (path_model.predict_path(ex, effects, times),
            path_model.path_gap(ex, effects, times))


def decisive_gap(ex: Exchange, resend: Sequence[float] | None = None) -> float:
    """The smallest distance between two instants whose order decides the outcome."""
    if ex.late_from_inside is LateAction.PASS:
        return _walked(ex, resend)[1]
    instants = [ex.idle_timeout, ex.answer_delay, ex.client_timeout]
    probe_after = None
    if ex.keepalive_idle is not None and ex.keepalive_idle < 2 * ex.client_timeout:
        instants.append(ex.keepalive_idle)
        if not ex.probes_refresh:  # the first probe after the expiry meets the late rule
            probe_after = first_probe_after(ex.keepalive_idle, ex.idle_timeout)
            instants.append(probe_after)
    instants.sort()
    # A probe that does not refresh the timer meets the expiry whichever comes first of the
    # two (the next probe does, at the latest): that pair decides nothing.
    return min((b - a for a, b in pairwise(instants)
                if not (probe_after is not None and {a, b} == {ex.idle_timeout, probe_after})),
               default=math.inf)


def capacity_towards_one_destination(appliance: Appliance) -> int | None:
    """How many concurrent connections to one destination the appliance lets through."""
    limits = []
    if appliance.nat:
        per_ip = min(appliance.scaled(appliance.ports_per_destination),
                     appliance.port_max - appliance.port_min + 1)
        limits.append(per_ip * len(appliance.public_ips))
    if appliance.connection_limit is not None:
        limits.append(appliance.connection_limit)
    return min(limits) if limits else None


def predict_load(appliances: list[Appliance], connections: int) -> tuple[int, int]:
    """(established, timed out) for ``connections`` opened together to one destination.

    Over the limit the SYN is dropped (NAT Gateway's ErrorPortAllocation, a Hyperplane ENI
    full), so the client's connect times out; the connections within it are unaffected.
    """
    caps = [c for a in appliances if (c := capacity_towards_one_destination(a)) is not None]
    established = min([connections, *caps])
    return established, connections - established
