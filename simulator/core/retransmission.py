"""The kernel's retransmission rules: when Linux gives up on data nobody acknowledges.

A request sent on a connection whose flow the appliance forgot, and dropped there silently,
is retransmitted by the client's kernel until it gives up with ``ETIMEDOUT``. When it gives
up is Linux's rule, not RFC 6298's, and it is modelled here from ``net/ipv4/tcp_timer.c``
and measured against real sockets (``tests/integration/test_retransmission.py``):

* **The timer.** The first retransmission timeout is the socket's RTO, at least
  ``tcp_rto_min`` (200 ms); it doubles at each firing up to ``tcp_rto_max`` (120 s). Before
  the first firing a tail-loss probe goes out after about one RTO (seen on the wire as one
  more retransmission). So the firings after a send come at ``p + r, p + 3r, p + 7r, ...``,
  ``r`` the RTO and ``p`` the probe's delay, then every ``rto_max``.
* **The give-up, without ``TCP_USER_TIMEOUT``.** ``tcp_retries2`` (15) is not a count of
  retransmissions: the kernel turns it into a duration, ``tcp_model_timeout``: the time
  ``tcp_retries2`` doublings from a *fixed* 200 ms (``TCP_RTO_MIN``, the constant, whatever
  ``tcp_rto_min_us`` says) would take, with the steps capped at the namespace's
  ``tcp_rto_max_ms``: 924.6 s for 15. At each firing after the first it compares that with
  the time since the first retransmission, and gives up at the first firing past it.
* **With ``TCP_USER_TIMEOUT``** the duration is the option's value, and the timer is clamped
  to fire exactly when it runs out: the give-up comes ``user_timeout`` after the first
  retransmission.

**Compression.** A world at speed K needs the give-up at ``924.6 / K`` wall seconds. Linux
6.11+ has a per-namespace ``tcp_rto_min_us`` and 6.15+ a ``tcp_rto_max_ms`` (at least
1000 ms), which compress the timer itself; but the give-up's duration is computed from the
constant 200 ms, so natsim also chooses the world's ``tcp_retries2`` that lands the
kernel's give-up nearest to the model's (:func:`compressed_retries2`), and the model then
predicts with the values the world really has. What stays uncompressed: the SYN's initial
timeout (1 s, ``TCP_TIMEOUT_INIT``), delayed ACKs (40 ms and more), and the timer wheel's
rounding (a 3.4 s timer fires up to 256 ms late on a HZ=250 kernel): the give-up instant is
known to within one ``rto_max`` step, which is the tolerance the model allows it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

TCP_RTO_MIN = 0.2
"""Seconds: the kernel constant ``tcp_model_timeout`` starts from, and the default minimum."""
TCP_RTO_MAX = 120.0
"""Seconds: the default cap of the doubling timer (``tcp_rto_max_ms`` 120000)."""
TCP_RETRIES2 = 15
RTO_MAX_FLOOR = 1.0
"""Seconds: the smallest ``tcp_rto_max_ms`` the kernel accepts (1000)."""


@dataclass(frozen=True, slots=True)
class Retransmission:
    """One socket's retransmission settings, in the seconds of one clock (model or wall).

    ``base`` is the kernel's fixed ``TCP_RTO_MIN`` on that clock: 0.2 s on the wall clock,
    ``0.2 * K`` model seconds in a world at speed K (it is not compressed).
    """

    rto_min: float = TCP_RTO_MIN
    rto_max: float = TCP_RTO_MAX
    retries2: int = TCP_RETRIES2
    user_timeout: float | None = None
    base: float = TCP_RTO_MIN
    rtt: float = 0.0
    """The path's round trip: the socket's RTO is ``rto_min`` plus about this much (which is
    why 15 retries give up at 925 s and not at 1045 s: see :meth:`give_up`)."""

    def firings(self) -> Iterator[float]:
        """When the retransmission timer fires after a send that nobody acknowledges: the
        tail-loss probe is not one of them (it comes one RTO after the send)."""
        rto = self.rto_min + self.rtt
        at, step = rto, rto
        while True:
            at += step
            yield at
            step = min(2 * step, self.rto_max)

    def model_timeout(self) -> float:
        """``tcp_model_timeout``: the duration ``retries2`` stands for."""
        thresh = int(math.log2(self.rto_max / self.base)) if self.rto_max > self.base else 0
        if self.retries2 <= thresh:
            return ((2 << self.retries2) - 1) * self.base
        return ((2 << thresh) - 1) * self.base + (self.retries2 - thresh) * self.rto_max

    def give_up(self) -> float:
        """Seconds from the send to ``ETIMEDOUT``, the peer silent all along.

        The comparison is the kernel's: the time since the first retransmission against
        :meth:`model_timeout`. With an RTO of exactly 200 ms the 16th firing would come
        0.2 s short of 924.6 s and the kernel would wait one more 120 s step; a real RTO is
        200 ms plus the round trip (and a timer tick), which reaches it.
        """
        firings = self.firings()
        first = next(firings)
        if self.user_timeout is not None:
            return first + self.user_timeout
        limit = self.model_timeout()
        for at in firings:
            if at - first >= limit - 1e-9:
                return at
        raise AssertionError("unreachable: the firings never end")  # pragma: no cover

    def tolerance(self) -> float:
        """How far a real kernel's give-up may land from :meth:`give_up`: one capped step
        (its firings drift with the timer wheel and the RTT), or, with a user timeout,
        the first timeout's doubling."""
        return 2 * self.rto_min if self.user_timeout is not None else self.rto_max


WORLD_RTT = 0.001
"""Wall seconds: a round trip through natsim's middlebox (a userspace hop, under 1 ms)."""


def at_speed(model: Retransmission, speed: float) -> Retransmission:
    """The settings a world at ``speed`` gets (in wall seconds) for model settings
    ``model``: the timer compressed, ``tcp_retries2`` chosen to land the give-up nearest."""
    rto_min = model.rto_min / speed
    rto_max = max(RTO_MAX_FLOOR, model.rto_max / speed)
    user = None if model.user_timeout is None else round(model.user_timeout / speed, 3)
    wall = Retransmission(rto_min, rto_max, model.retries2, user, TCP_RTO_MIN, WORLD_RTT)
    if user is not None:
        return wall
    want = replace(model, rtt=WORLD_RTT).give_up() / speed  # what speed 1 would see
    low, high = 1, 255  # the give-up grows with retries2: the first that reaches ``want``
    while low < high:
        middle = (low + high) // 2
        if replace(wall, retries2=middle).give_up() >= want:
            high = middle
        else:
            low = middle + 1
    best = min({max(1, low - 1), low},
               key=lambda b: (abs(replace(wall, retries2=b).give_up() - want), b))
    return replace(wall, retries2=best)


def in_model_seconds(wall: Retransmission, speed: float) -> Retransmission:
    """The same kernel settings on the model clock (every duration times ``speed``)."""
    return Retransmission(wall.rto_min * speed, wall.rto_max * speed, wall.retries2,
                          None if wall.user_timeout is None else wall.user_timeout * speed,
                          wall.base * speed, wall.rtt * speed)


def world_sysctls(wall: Retransmission) -> dict[str, int]:
    """The namespace's sysctls for ``wall`` (``net.ipv4.`` omitted)."""
    return {"tcp_rto_min_us": max(1, round(wall.rto_min * 1e6)),
            "tcp_rto_max_ms": round(wall.rto_max * 1000), "tcp_retries2": wall.retries2}


REQUIRED_SYSCTLS = ("tcp_rto_min_us", "tcp_rto_max_ms")
"""What a kernel needs to compress retransmissions (Linux 6.11 and 6.15)."""
