"""The analytic model of an idle pool: requests on kept connections, with idle spells between.

The seeds' story (:mod:`simulator.core.model`) is one request waiting for a slow answer. A
pool's story is the other failure: a connection kept open between requests sits idle past
the appliance's timeout, and the next request on it meets the appliance's late rule. The
client is the built-in scripted client (:mod:`simulator.workloads.pool_client`): requests at
given model times, over ``pool`` connections used in turn, one request at a time, each
retried on a fresh connection up to ``retry`` times after a reset (as pools do).

Per request, by the rule its packet meets:

* the flow is alive (the connection is new, or it was used less than the idle timeout ago,
  or keepalive probes refresh it): the answer comes after the server's delay;
* ``rst`` (NAT Gateway, NLB, endpoints), or an appliance that reset both ends at expiry
  (Azure with TCP reset): the request fails at once with a reset, and a retrying client
  opens a new connection, which is a new flow, and is answered;
* ``drop`` (GWLB, Network Firewall, Azure without TCP reset): the request is retransmitted
  in vain until the kernel gives up (:mod:`simulator.core.retransmission`:
  ``tcp_retries2`` or ``TCP_USER_TIMEOUT``), unless the client's own timeout comes first;
* ``pass`` (conntrack that picks the flow up anew): the request goes through, answered.

What this model does not follow, and refuses rather than guesses: keepalive probes that
meet a forgotten flow during the idle spell (the seeds' model has that story), and answers
slower than the idle timeout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from simulator.core.appliances import Appliance, ExpiryAction, LateAction
from simulator.core.model import resolve_late
from simulator.core.retransmission import Retransmission

RESET, ANSWER, TIMEOUT, GAVE_UP = "reset", "answer", "timeout", "retransmit_timeout"
DELIVERED = "delivered"


class PoolModelError(ValueError):
    """A pool the model cannot follow (the message says which field to change)."""


@dataclass(frozen=True, slots=True)
class PoolExchange:
    """A scripted client's requests, in model seconds from the first."""

    requests: tuple[float, ...]
    pool: int
    retry: int
    answer_delay: float
    client_timeout: float
    retransmission: Retransmission
    keepalive_idle: float | None = None
    discard_after: float | None = None
    """The pool closes a connection idle this long when it next needs it, and opens a new
    one (httpx's ``keepalive_expiry``, Kafka's ``connections.max.idle.ms``)."""
    ping_every: float | None = None
    """The pool sends a ping (data, answered) on a connection idle this long (HikariCP's
    ``keepaliveTime``, AMQP heartbeats)."""
    validate: float | None = None
    """The pool checks a connection idle over ``VALIDATE_BYPASS`` with a ping before handing
    it out, waiting this long for the answer; a failed check discards it, and the request
    goes on a new connection (HikariCP's ``isValid`` with ``validationTimeout``)."""


VALIDATE_BYPASS = 0.5
"""Seconds of idleness under which a validating pool trusts a connection unchecked
(HikariCP's ``aliveBypassWindowMs``)."""


@dataclass(frozen=True, slots=True)
class RequestFate:
    """What became of one request: its attempts' outcomes, when it was sent, how long it
    took (from its send to its last attempt's end)."""

    attempts: tuple[str, ...]
    sent: float
    took: float

    @property
    def text(self) -> str:
        return "+".join(self.attempts)


@dataclass(frozen=True, slots=True)
class PoolPrediction:
    requests: tuple[RequestFate, ...]
    answers: tuple[str, ...]
    """The server's answers' fates, in the order it sent them."""
    expires_at: float | None
    story: list[str] = field(default_factory=list)
    margins: tuple[tuple[float, float], ...] = ()
    """(distance, tolerance) in model seconds for each pair of instants whose order decides
    the outcome: the run is deterministic where every distance exceeds its tolerance plus
    the wall margin."""

    @property
    def client(self) -> str:
        return ", ".join(r.text for r in self.requests)

    @property
    def server(self) -> str:
        return ", ".join(self.answers) or "no_request"

    @property
    def end(self) -> float:
        last = self.requests[-1]
        return last.sent + last.took


def _refreshed(app: Appliance, ex: PoolExchange) -> bool:
    """Whether keepalive probes every ``keepalive_idle`` s of silence keep the flow."""
    ka = ex.keepalive_idle
    return ka is not None and ka < app.tcp_idle_timeout and app.keepalive_refreshes


def _alive(app: Appliance, ex: PoolExchange, gap: float, margins: list[tuple[float, float]]
           ) -> bool:
    ka, ping = ex.keepalive_idle, ex.ping_every
    if ping is not None and ping < app.tcp_idle_timeout:
        return True  # data: it counts even where keepalive probes do not
    if ping is not None and ping < gap:
        raise PoolModelError(f"client.ping_every: a ping during the idle spell ({ping:g} s) "
                             "would meet the forgotten flow; the pool model follows only "
                             "pings that keep the flow alive or never fire")
    if _refreshed(app, ex):
        return True
    if ka is not None and ka < gap:
        raise PoolModelError("client.keepalive: a keepalive probe during the idle spell "
                             f"({ka:g} s) would meet the forgotten flow; the pool model "
                             "follows only probes that keep the flow alive or never fire")
    margins.append((abs(gap - app.tcp_idle_timeout), 0.0))
    return gap < app.tcp_idle_timeout


class _Walk:
    """The state of the walk: when each connection was last used, what was said."""

    def __init__(self, app: Appliance, ex: PoolExchange) -> None:
        self.app, self.ex = app, ex
        self.last_use: list[float | None] = [None] * ex.pool
        self.story: list[str] = []
        self.answers: list[str] = []
        self.expires: float | None = None
        self.give_up = ex.retransmission.give_up()
        self.margins = [(app.tcp_idle_timeout - ex.answer_delay, 0.0),
                        (abs(ex.client_timeout - ex.answer_delay), 0.0)]
        if _refreshed(app, ex):
            assert ex.keepalive_idle is not None
            self.margins.append((app.tcp_idle_timeout - ex.keepalive_idle, 0.0))
            self.story.append(f"keepalive probes after {ex.keepalive_idle:g} s of silence "
                              f"refresh the {app.tcp_idle_timeout:g} s idle timer")
        if ex.ping_every is not None and ex.ping_every < app.tcp_idle_timeout:
            self.margins.append((app.tcp_idle_timeout - ex.ping_every, 0.0))
            self.story.append(f"the pool pings idle connections every {ex.ping_every:g} s: "
                              f"data, which refreshes the {app.tcp_idle_timeout:g} s idle "
                              "timer")

    def attempt(self, i: int, slot: int, sent: float, at: float, retried: bool
                ) -> tuple[str, float, bool]:
        """One attempt of request ``i`` at ``at``: its outcome, when it ended, and whether
        it was the pool's own check (the request itself follows on a new connection)."""
        app, ex = self.app, self.ex
        used = self.last_use[slot]
        gap = 0.0 if used is None else at - used
        if used is not None and ex.discard_after is not None:
            self.margins.append((abs(gap - ex.discard_after), 0.0))
            if gap >= ex.discard_after:
                self.story.append(f"request {i + 1} at {at:g} s: the pool closes connection "
                                  f"{slot + 1}, idle {gap:g} s (over {ex.discard_after:g} s), "
                                  "and opens a new one")
                used = self.last_use[slot] = None
        if used is None or _alive(app, ex, gap, self.margins):
            return (*self._served(i, slot, sent, at, used, gap, retried), False)
        if self.expires is None:
            self.expires = used + app.tcp_idle_timeout
        if ex.validate is not None and gap > VALIDATE_BYPASS:
            return (*self._checked(i, slot, at, gap), True)
        return (*self._late(i, slot, at, used, gap), False)

    def _checked(self, i: int, slot: int, at: float, gap: float) -> tuple[str, float]:
        """The pool's check of a forgotten connection: it fails, the connection goes."""
        app, ex = self.app, self.ex
        assert ex.validate is not None
        self.last_use[slot] = None
        rule = resolve_late(app, app.late_from_inside, gap)
        lead = f"request {i + 1} at {at:g} s: the pool checks connection {slot + 1} first"
        if app.on_expiry is ExpiryAction.RST_BOTH or rule is LateAction.RST:
            self.story.append(f"{lead}; the check gets a reset and the connection is "
                              "discarded")
            return RESET, at
        if rule is LateAction.PASS:  # tracked anew: the check passes, the request is served
            self.story.append(f"{lead}; it passes (the flow is tracked anew)")
            self.last_use[slot] = at
            return ANSWER, at
        wait = min(ex.validate, self.give_up)
        self.margins.append((abs(ex.validate - self.give_up), ex.retransmission.tolerance()))
        self.story.append(f"{lead}; the check is dropped silently and fails after {wait:g} s; "
                          "the connection is discarded")
        return TIMEOUT if ex.validate <= self.give_up else GAVE_UP, at + wait

    def _late(self, i: int, slot: int, at: float, used: float, gap: float
              ) -> tuple[str, float]:
        """The request itself on a connection whose flow the appliance forgot."""
        app, ex = self.app, self.ex
        forgot = used + app.tcp_idle_timeout
        lead = (f"request {i + 1} at {at:g} s, after {gap:g} s idle (the flow was forgotten "
                f"at {forgot:g} s)")
        self.last_use[slot] = None
        rule = resolve_late(app, app.late_from_inside, gap)
        if app.on_expiry is ExpiryAction.RST_BOTH or rule is LateAction.RST:
            self.story.append(f"{lead}: " + ("the appliance reset the connection then; the "
                                             "send fails at once"
                                             if app.on_expiry is ExpiryAction.RST_BOTH
                                             else "the appliance answers with an RST"))
            return RESET, at
        if rule is LateAction.PASS:
            self.story.append(f"{lead}: it is tracked anew and answered at "
                              f"{at + ex.answer_delay:g} s")
            self.answers.append(DELIVERED)
            self.last_use[slot] = at + ex.answer_delay
            return ANSWER, at + ex.answer_delay
        self.margins.append((abs(ex.client_timeout - self.give_up),
                             ex.retransmission.tolerance()))
        if self.give_up < ex.client_timeout:
            self.story.append(f"{lead}: dropped silently; the kernel retransmits and gives up "
                              f"(ETIMEDOUT) at about {at + self.give_up:.0f} s, "
                              f"{self.give_up:.0f} s later")
            return GAVE_UP, at + self.give_up
        self.story.append(f"{lead}: dropped silently; the client's own timeout ends the wait "
                          f"at {at + ex.client_timeout:g} s")
        return TIMEOUT, at + ex.client_timeout

    def _served(self, i: int, slot: int, sent: float, at: float, used: float | None,
                gap: float, retried: bool) -> tuple[str, float]:
        ex = self.ex
        if ex.answer_delay >= ex.client_timeout:
            self.last_use[slot] = None
            self.story.append(f"request {i + 1} at {sent:g} s: the client gives up at "
                              f"{at + ex.client_timeout:g} s before the answer")
            return TIMEOUT, at + ex.client_timeout
        end = at + ex.answer_delay
        self.answers.append(DELIVERED)
        self.last_use[slot] = end
        if retried:
            self.story.append(f"then a new connection, a new flow: answered at {end:g} s")
        elif used is not None:
            self.story.append(f"request {i + 1} at {sent:g} s, after {gap:g} s idle: answered "
                              f"at {end:g} s")
        else:
            self.story.append(f"request {i + 1} at {sent:g} s opens connection {slot + 1}: "
                              f"answered at {end:g} s")
        return ANSWER, end


def predict_pool(app: Appliance, ex: PoolExchange) -> PoolPrediction:
    """Walk the script request by request (see the module docstring); the client sends
    one request at a time, so a request waits for the one before it."""
    if ex.answer_delay >= app.tcp_idle_timeout:
        raise PoolModelError(f"server.delay: {ex.answer_delay:g} s is not shorter than the "
                             f"{app.tcp_idle_timeout:g} s idle timeout; a pool's answers come "
                             "quickly (the slow answer is the seeds' story)")
    walk = _Walk(app, ex)
    fates = []
    free = 0.0
    for i, planned in enumerate(ex.requests):
        sent = at = max(planned, free)
        attempts: list[str] = []
        retries = 0
        while True:
            outcome, at, checked = walk.attempt(i, i % ex.pool, sent, at, bool(attempts))
            attempts.append(outcome)
            if checked and outcome != ANSWER:
                continue  # the pool's check failed: the request goes on a new connection
            if checked:
                outcome, at, _ = walk.attempt(i, i % ex.pool, sent, at, False)
                attempts[-1] = outcome
            if outcome != RESET or retries == ex.retry:
                break
            retries += 1
        fates.append(RequestFate(tuple(attempts), sent, at - sent))
        free = at
    return PoolPrediction(tuple(fates), tuple(walk.answers), walk.expires, walk.story,
                          tuple(walk.margins))
