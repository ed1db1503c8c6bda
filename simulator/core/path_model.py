"""The analytic model with path events: the exchange walked instant by instant.

:func:`simulator.core.model.predict` follows one flow that idles from the request on. Path
events add instants of their own (a restart that forgets the flow, a blackhole that swallows
packets, a termination), so with events the model walks the exchange's instants in time
order instead: the flow's expiry, the client's keepalive probes, the server's answer and its
retransmissions, the client's timeout and the events. The rules at each instant are the
same as :func:`~simulator.core.model.predict`'s (the tests check that both agree on every
shipped scenario without events), plus:

* a packet sent into a blackhole (or to a failed inspection target) is lost before the
  appliance sees it: it refreshes nothing; the server's kernel retransmits its answer with
  exponential backoff (real, uncompressed wall seconds: ``retransmits``), the client's
  kernel repeats an unanswered probe every ``keepalive_interval`` and gives up after
  ``keepalive_count`` of them, sending an RST;
* a restart or replacement forgets the flow: its next packet meets the late-packet rule;
* an appliance that tracks a late inside packet anew (``pass``) lets a keepalive probe
  re-open the flow: the server's next retransmission of an answer it dropped then passes
  as a reply, and a server whose socket the appliance reset answers the probe with an RST
  (:func:`~simulator.core.model.predict` walks such an exchange here, events or not);
* a deregistration with connection termination resets both ends.

The client's late network attach (seed 002) is :func:`predict_attach`: it decides which of
the client's attempts can reach the network at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from simulator.core.appliances import LateAction
from simulator.core.model import Exchange, Prediction, keepalive_give_up
from simulator.core.path_events import PathEvent, PathKind

RTO_MIN = 0.2
"""Linux's minimum retransmission timeout (``TCP_RTO_MIN``), wall seconds: on a path with a
sub-millisecond round trip the first retransmission comes after it, then doubles."""
RETRIES2 = 15
"""``net.ipv4.tcp_retries2``: retransmissions before the kernel gives up."""


RTO_MAX = 120.0
"""The cap of the doubling (``TCP_RTO_MAX``), wall seconds."""


def retransmits(speed: float) -> tuple[float, ...]:
    """When the server's kernel retransmits an unacknowledged answer, in model seconds after
    the first send, at ``speed`` (kernel timers are not compressed): 200 ms doubling, capped
    at 120 s, ``RETRIES2`` times (the fake backend's kernel does the same)."""
    out, at, rto = [], 0.0, RTO_MIN
    for _ in range(RETRIES2):
        at += rto
        out.append(speed * at)
        rto = min(2 * rto, RTO_MAX)
    return tuple(out)


@dataclass(frozen=True)
class PathEffects:
    """What the appliance's events do to one flow, in model seconds."""

    forgets: tuple[float, ...] = ()
    windows: tuple[tuple[float, float], ...] = ()
    """Intervals [start, end) in which every packet is lost (end may be infinite)."""
    terminate: float | None = None
    story: tuple[str, ...] = ()
    replaced: float | None = None
    """When the appliance was first replaced: the server's packets for the flow go to the
    old public address from then on, which the new appliance never sees."""

    @classmethod
    def of(cls, events: Sequence[PathEvent]) -> PathEffects:
        forgets, windows, terminate = [], [], None
        replaced = min((e.at for e in events if e.kind is PathKind.REPLACE), default=None)
        for e in events:
            if e.kind in (PathKind.RESTART, PathKind.REPLACE):
                forgets.append(e.at)
            elif e.kind is PathKind.BLACKHOLE:
                assert e.ends is not None
                windows.append((e.at, e.ends))
            elif e.kind is PathKind.TARGET_FAILURE:  # either failover mode ends in drops
                windows.append((e.at, math.inf))
            elif e.kind is PathKind.DEREGISTER and e.termination:
                terminate = e.at + e.delay
        return cls(tuple(sorted(forgets)), tuple(windows), terminate,
                   tuple(e.describe() for e in events if not e.on_host), replaced)

    @property
    def active(self) -> bool:
        """Whether the events change anything for the flow (else the plain model holds)."""
        return bool(self.forgets or self.windows or self.terminate is not None)

    def lost(self, t: float) -> bool:
        return any(a <= t < b for a, b in self.windows)

    def unseen(self, what: str, t: float) -> bool:
        """Whether packet ``what`` (``probe`` or ``answer``) sent at ``t`` decides nothing
        by its order with other instants: lost in a blackhole, or an answer sent to the
        public address a replacement gave up (no appliance ever sees it)."""
        return self.lost(t) or (what == "answer" and self.replaced is not None
                                and t >= self.replaced)

    def instants(self) -> list[float]:
        edges = [x for w in self.windows for x in w if math.isfinite(x)]
        return [*self.forgets, *edges, *([self.terminate] if self.terminate else [])]


@dataclass
class _Walk:
    """The state of one walk (see :func:`predict_path`)."""

    ex: Exchange
    fx: PathEffects
    alive: bool = True
    last: float = 0.0
    client: tuple[str, float] | None = None
    server: str | None = None
    unanswered_since: float | None = None
    gone_at: float | None = None
    closing: bool = False
    story: list[str] = field(default_factory=list)
    margins: list[float] = field(default_factory=list)
    """At each instant, how far ahead of the next candidate it was."""

    def flow_gone(self, t: float, why: str) -> None:
        self.alive = False
        self.gone_at = t if self.gone_at is None else self.gone_at
        self.story.append(why)

    def client_done(self, outcome: str, t: float, why: str) -> None:
        if self.client is None:
            self.client = (outcome, t)
            self.story.append(why)


def predict_path(ex: Exchange, fx: PathEffects, resend: Sequence[float]) -> Prediction:
    """Walk the exchange with the path's events (see the module docstring)."""
    return _walk(ex, fx, resend)[0]


def path_gap(ex: Exchange, fx: PathEffects, resend: Sequence[float]) -> float:
    """The smallest lead an instant of the walk had over the next candidate: below a few
    wall milliseconds, jitter could swap them and change the outcome."""
    return min(_walk(ex, fx, resend)[1].margins, default=math.inf)


def _walk(ex: Exchange, fx: PathEffects,  # noqa: C901
          resend: Sequence[float]) -> tuple[Prediction, _Walk]:
    # long: one loop over the instants; its branches are the story's branches
    w = _Walk(ex, fx, story=list(fx.story))
    ka = ex.keepalive_idle if ex.keepalive_idle is not None else math.inf
    next_probe = ka
    tries = [ex.answer_delay + r for r in (0.0, *resend)]
    forgets = list(fx.forgets)
    terminate = fx.terminate
    while w.client is None or w.server is None:
        candidates: list[tuple[float, int, str]] = []
        if w.alive:
            lasts = ex.closing_timeout if w.closing and ex.closing_timeout is not None \
                else ex.idle_timeout
            candidates.append((w.last + lasts, 0, "expire"))
        if forgets:
            candidates.append((forgets[0], 1, "forget"))
        if terminate is not None:
            candidates.append((terminate, 2, "terminate"))
        if w.client is None:
            candidates.append((ex.client_timeout, 5, "limit"))
            if math.isfinite(next_probe):
                candidates.append((next_probe, 3, "probe"))
        # a dropped answer is retransmitted while the client still waits: one may yet get
        # through (after a probe re-opens the flow, after a blackhole ends)
        resending = w.server == "unacknowledged" and w.client is None
        if tries and (w.server is None or resending):
            candidates.append((tries[0], 4, "answer"))
        if not candidates:
            break
        candidates.sort()
        t, _, what = candidates[0]
        w.margins.append(_margin(fx, candidates))
        if what == "expire":
            _expire(w, t)
        elif what == "forget":
            forgets.pop(0)
            if w.alive:
                w.flow_gone(t, f"the appliance forgets the flow at {t:g} s")
        elif what == "terminate":
            terminate = None
            if w.alive:
                w.flow_gone(t, f"the load balancer terminates the connection at {t:g} s "
                            "(RST to both ends)")
                w.client_done("reset", t, "the client's connection is reset")
                w.server = w.server or "reset"
        elif what == "limit":
            w.client_done("timeout", t, f"the client hears nothing and times out at {t:g} s")
            if not fx.lost(t) and (w.alive or ex.late_from_inside is LateAction.PASS):
                if not w.alive:
                    w.story.append("its FIN is tracked anew (the appliance lets it out)")
                w.alive, w.last, w.closing = True, t, True  # its FIN crosses: closing
        elif what == "probe":
            next_probe = _probe(w, t, ka)
        else:
            tries.pop(0)
            _answer(w, t, last_try=not tries)
    client, at = w.client or ("timeout", ex.client_timeout)
    return Prediction(client, at, w.server or "unacknowledged", w.gone_at,
                      ex.idle_timeout if ex.probes_refresh else 0.0, w.story), w


def _margin(fx: PathEffects, candidates: list[tuple[float, int, str]]) -> float:
    """How far the first candidate is from anything whose order with it matters: the
    events' instants, and the next candidate unless either is a packet lost anyway (a
    lost probe or retransmission decides nothing by coming first)."""
    t, _, what = candidates[0]
    packet = ("probe", "answer")
    lost = what in packet and fx.unseen(what, t)
    edges = [abs(t - x) for x in fx.instants()] if what in packet else []
    rivals = [c[0] - t for c in candidates[1:]
              if not lost and not (c[2] in packet and fx.unseen(c[2], c[0]))]
    return min([*edges, *rivals], default=math.inf)


def _expire(w: _Walk, t: float) -> None:
    if w.ex.reset_at_expiry:
        w.flow_gone(t, f"the flow expires at {t:g} s and the appliance resets both ends")
        w.client_done("reset", t, "the client's connection is reset")
        w.server = w.server or "reset"
    else:
        w.flow_gone(t, f"the flow is idle from {w.last:g} s and expires silently at {t:g} s")


def _probe(w: _Walk, t: float, ka: float) -> float:
    """A keepalive probe at ``t`` (or the client's kernel giving up); the next probe."""
    ex = w.ex
    if w.unanswered_since is not None \
            and t >= keepalive_give_up(ex, w.unanswered_since) - 1e-9:
        why = (f"{ex.keepalive_count} unanswered probes" if ex.keepalive_user_timeout is None
               else f"TCP_USER_TIMEOUT {ex.keepalive_user_timeout:g} s without an answer")
        w.client_done("keepalive_failed", t, f"the client's kernel gives up at {t:g} s after "
                      f"{why}, and sends an RST")
        if not w.fx.lost(t) and (w.alive or ex.late_from_inside is LateAction.PASS):
            w.server = w.server or "reset"
        return math.inf
    rule = None if w.alive else ex.late_from_inside
    if w.fx.lost(t) or rule is LateAction.DROP:
        w.story.append(f"the client's keepalive probe at {t:g} s is lost" if w.fx.lost(t)
                       else f"the client's keepalive probe at {t:g} s is dropped")
        if w.unanswered_since is None:
            w.unanswered_since = t
        return t + ex.keepalive_interval
    if rule is LateAction.RST:
        w.client_done("reset", t, f"the client's keepalive probe at {t:g} s gets an RST")
        return math.inf
    if rule is LateAction.PASS:
        w.story.append(f"the client's keepalive probe at {t:g} s is tracked anew")
        w.alive = True
        if w.server == "reset":  # the appliance's RST closed the server's socket
            w.client_done("reset", t, "it reaches the server's kernel, whose socket the "
                          "appliance's RST closed: RST")
            return math.inf
    if ex.probes_refresh or rule is LateAction.PASS:
        w.last = t
    w.unanswered_since = None
    return t + ka


def _answer(w: _Walk, t: float, last_try: bool) -> None:
    """The server's answer (or a retransmission of it) at ``t``."""
    ex = w.ex
    if w.fx.lost(t):
        if last_try:
            w.server = "unacknowledged"
            w.story.append("the server's answer is lost in every retransmission")
        elif t == ex.answer_delay:
            w.story.append(f"the server's answer at {t:g} s is lost; its kernel retransmits")
        return
    rule = None if w.alive else ex.late_from_outside
    if rule is not None and w.fx.replaced is not None and t >= w.fx.replaced:
        rule = LateAction.DROP  # sent to the old address: the new appliance never sees it
        if w.server is None:
            w.story.append("the answer goes to the old public address, which the new "
                           "appliance never sees")
    if rule is LateAction.RST:
        w.server = "reset"
        w.story.append(f"the server's answer at {t:g} s gets an RST from the appliance")
    elif rule is LateAction.DROP:
        if w.server is None:
            w.story.append(f"the server's answer at {t:g} s is dropped; its kernel "
                           "retransmits it")
        w.server = "unacknowledged"
    elif w.client is not None:  # it reaches the client's kernel, whose socket is gone
        w.server = "reset"
        w.story.append(f"the answer at {t:g} s reaches a closed socket: RST")
    else:
        again = w.server == "unacknowledged"
        w.server = "delivered"
        w.client_done("answer", t, f"the server's retransmission at {t:g} s passes as a "
                      "reply on the flow tracked anew: the answer arrives" if again else
                      f"the answer arrives at {t:g} s")


@dataclass(frozen=True)
class Attempts:
    """A client that tries ``1 + retries`` times, waiting ``backoff`` then doubling."""

    retries: int
    backoff: float
    resolve_each: bool

    def times(self) -> list[float]:
        return [self.backoff * (2 ** i - 1) for i in range(self.retries + 1)]


def predict_attach(attach_at: float, attempts: Attempts, then: Prediction) -> Prediction:
    """The client's interface is attached at ``attach_at``: which attempt gets through.

    ``then`` is the exchange's prediction once connected (its times from the request).
    """
    times = attempts.times()
    story = [f"the client starts with no network; its interface is attached at "
             f"{attach_at:g} s",
             f"the client tries at {', '.join(f'{t:g}' for t in times)} s"]
    before = [t for t in times if t < attach_at]
    if before:
        story.append(f"before it, the attempt{'s' if len(before) > 1 else ''} at "
                     f"{', '.join(f'{t:g}' for t in before)} s fail at once (the name "
                     "cannot be resolved: EAI_AGAIN)")
    first = next((t for t in times if t >= attach_at), None)
    if not attempts.resolve_each and before:
        story.append("the client resolved the name once, at start, and keeps the failure: "
                     "every later attempt fails the same way")
        return Prediction("connect_failed", times[-1], "no_client", None,
                          then.latest_keepalive_idle, story)
    if first is None:
        story.append("no attempt comes after the attach")
        return Prediction("connect_failed", times[-1], "no_client", None,
                          then.latest_keepalive_idle, story)
    story.append(f"the attempt at {first:g} s resolves the name and connects")
    story += [f"then (from its request): {line}" for line in then.story]
    return Prediction(then.client, first + then.client_at, then.server,
                      None if then.expires_at is None else first + then.expires_at,
                      then.latest_keepalive_idle, story)


PROXY_SERVER_OUTCOME = "reset"
"""What the server of an exchange cut by an idle L4 proxy sees when it answers (measured
with HAProxy: see ``scenarios/l4-proxy-keepalive.yaml``)."""


def predict_proxy(ex: Exchange) -> Prediction:
    """An L4 proxy (HAProxy in TCP mode) where the appliance stands, its client and server
    timeouts at the appliance's idle timeout.

    The proxy terminates TCP on both sides: the client's keepalive probes are answered by the
    proxy's own kernel and never reach the server side, and the proxy's timeouts count only
    data it relays. So the connection is cut at the timeout whatever the keepalive settings:
    the proxy closes both of its connections (a FIN to each).
    """
    t_out, delay, limit = ex.idle_timeout, ex.answer_delay, ex.client_timeout
    story = []
    if ex.keepalive_idle is not None and ex.keepalive_idle < t_out:
        story.append(f"the client's keepalive probes every {ex.keepalive_idle:g} s end at the "
                     "proxy's own socket: the proxy's idle timer does not see them")
    if delay < t_out and delay < limit:
        story.append(f"the answer at {delay:g} s comes before the proxy's {t_out:g} s timeout")
        return Prediction("answer", delay, "delivered", None, t_out, story)
    if t_out >= limit:
        story.append(f"the client times out at {limit:g} s")
        return Prediction("timeout", limit, PROXY_SERVER_OUTCOME, None, t_out, story)
    story.append(f"the proxy's timeout at {t_out:g} s closes both connections (a FIN to "
                 "each): the client's read ends without an answer")
    story.append(f"the server's answer at {delay:g} s goes to a proxy that has closed")
    return Prediction("closed", t_out, PROXY_SERVER_OUTCOME, t_out, 0.0, story)
