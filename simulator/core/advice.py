"""``natsim check``: will this client survive this wait behind this appliance, and the fix.

Answers the question people actually ask, from the analytic model alone (nothing runs):
given a client profile (or explicit keepalive settings), an appliance and how long the
server stays silent, predict the outcome and, if it fails, say which socket option or sysctl
to change and to what.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from simulator.core.appliances import Appliance, ExpiryAction
from simulator.core.model import Exchange, Prediction, predict, resolve_late
from simulator.core.pool_model import (
    ANSWER,
    GAVE_UP,
    RESET,
    TIMEOUT,
    PoolExchange,
    PoolPrediction,
    predict_pool,
)
from simulator.core.profiles import ClientProfile
from simulator.core.retransmission import WORLD_RTT, Retransmission

LINUX_DEFAULT_TIME, LINUX_DEFAULT_INTVL, LINUX_DEFAULT_PROBES = 7200.0, 75.0, 9


@dataclass(frozen=True)
class Advice:
    survives: bool
    prediction: Prediction
    keepalive_idle: float | None
    """When the client's first keepalive probe goes out (None: no keepalive at all)."""
    suggested_idle: float
    fixes: list[str] = field(default_factory=list)


def suggested_keepalive(timeout: float) -> float:
    """A keepalive idle time comfortably below ``timeout`` (300 s for 350 s)."""
    if timeout > 100:
        return float(int((timeout - 50) // 5 * 5))
    return max(1.0, float(int(timeout // 2)))


def effective_keepalive(profile: ClientProfile, sysctl_time: float = LINUX_DEFAULT_TIME,
                        sysctl_intvl: float = LINUX_DEFAULT_INTVL,
                        sysctl_probes: int = LINUX_DEFAULT_PROBES,
                        ) -> tuple[float | None, float, int]:
    """(first probe, interval, count) for a profile, given the namespace's sysctls."""
    if profile.keepalive == "off":
        return None, sysctl_intvl, sysctl_probes
    if profile.keepalive == "os":
        return sysctl_time, sysctl_intvl, sysctl_probes
    assert profile.idle is not None
    return (profile.idle, profile.interval or sysctl_intvl,
            profile.count if profile.count is not None else sysctl_probes)


def in_its_words(profile: ClientProfile, idle: float) -> str | None:
    """The profile's own fix for a keepalive idle time of ``idle`` seconds."""
    if not profile.fix:
        return None
    return (f"{profile.title}: " +
            profile.fix.format(idle=f"{idle:g}", idle_ms=f"{idle * 1000:.0f}"))


def check(appliance: Appliance, profile: ClientProfile, idle: float,
          client_timeout: float | None = None, sysctl_time: float = LINUX_DEFAULT_TIME,
          sysctl_intvl: float = LINUX_DEFAULT_INTVL,
          sysctl_probes: int = LINUX_DEFAULT_PROBES) -> Advice:
    """Predict a request answered after ``idle`` silent seconds, and advise."""
    limit = client_timeout if client_timeout is not None else max(900.0, idle + 300.0)
    ka, intvl, count = effective_keepalive(profile, sysctl_time, sysctl_intvl, sysctl_probes)
    timeout = appliance.tcp_idle_timeout
    exchange = Exchange(
        idle_timeout=timeout,
        late_from_inside=resolve_late(appliance, appliance.late_from_inside,
                                      ka if ka is not None else limit),
        late_from_outside=resolve_late(appliance, appliance.late_from_outside, idle),
        answer_delay=idle, client_timeout=limit, keepalive_idle=ka, keepalive_interval=intvl,
        keepalive_count=count, reset_at_expiry=appliance.on_expiry is ExpiryAction.RST_BOTH,
        probes_refresh=appliance.keepalive_refreshes)
    prediction = predict(exchange)
    survives = prediction.outcome() == ("answer", "delivered")
    suggest = suggested_keepalive(timeout)
    fixes: list[str] = []
    if not survives and idle >= limit:
        fixes.append(f"the client's own timeout ({limit:g} s) ends the wait before the "
                     f"answer: raise it above {idle:g} s")
    elif not survives and not appliance.keepalive_refreshes:
        fixes.append(f"{appliance.title} needs data: TCP keepalive probes carry none and do "
                     f"not count. Send an application heartbeat (at least one byte, e.g. a "
                     f"protocol ping) more often than every {timeout:g} s, in either "
                     "direction")
    elif not survives:
        own = in_its_words(profile, suggest)
        if own is not None and profile.keepalive == "socket" and ka is not None:
            fixes.append(f"lower the keepalive idle time from {ka:g} s to {suggest:g} s "
                         f"(below {timeout:g} s). {own}")
        elif own is not None:  # the library's own words: a generic option may not exist
            fixes.append(own)
        elif profile.keepalive == "off":
            fixes.append(f"enable TCP keepalive on the socket: SO_KEEPALIVE=1 and "
                         f"TCP_KEEPIDLE={suggest:g} (anything below {timeout:g} s)")
            fixes.append(f"or SO_KEEPALIVE=1 and the sysctl net.ipv4.tcp_keepalive_time="
                         f"{suggest:g} in the client's host or pod")
        elif profile.keepalive == "os":
            fixes.append(f"set the sysctl net.ipv4.tcp_keepalive_time={suggest:g} (it is "
                         f"{sysctl_time:g} s; it must be below {timeout:g} s): sysctl -w on "
                         "the host, or the pod's securityContext.sysctls")
            fixes.append(f"or set TCP_KEEPIDLE={suggest:g} on the socket, if the library "
                         "lets you")
        else:
            fixes.append(f"lower TCP_KEEPIDLE from {ka:g} s to {suggest:g} s (below "
                         f"{timeout:g} s)")
    return Advice(survives, prediction, ka, suggest, fixes)


@dataclass(frozen=True)
class ReuseAdvice:
    survives: bool
    """Whether the reused request ends with an answer (after a retry or a check, maybe)."""
    prediction: PoolPrediction
    fixes: list[str] = field(default_factory=list)


def check_reuse(appliance: Appliance, profile: ClientProfile, reuse_after: float,
                client_timeout: float = 1800.0, sysctl_time: float = LINUX_DEFAULT_TIME
                ) -> ReuseAdvice:
    """A pooled connection answered at 0 s and reused ``reuse_after`` seconds later: what
    the profile's library makes of it behind the appliance, and the fix."""
    ka, _, _ = effective_keepalive(profile, sysctl_time)
    exchange = PoolExchange(
        (0.0, reuse_after), 1, profile.retry, 0.5, client_timeout,
        Retransmission(user_timeout=profile.user_timeout, rtt=WORLD_RTT), ka,
        **profile.habits())
    prediction = predict_pool(appliance, exchange)
    last = prediction.requests[-1]
    survives = last.attempts[-1] == ANSWER
    timeout = appliance.tcp_idle_timeout
    suggest = suggested_keepalive(timeout)
    fixes: list[str] = []
    if survives:
        return ReuseAdvice(True, prediction, fixes)
    if last.attempts[-1] == RESET:
        fixes.append("retry a request that fails with a reset on a new connection (the "
                     "reset comes at once: the retry costs a round trip)")
    own = in_its_words(profile, suggest)
    if not appliance.keepalive_refreshes:
        fixes.append(f"{appliance.title} counts only data: ping idle pooled connections "
                     f"more often than every {timeout:g} s (a protocol ping, a validation "
                     "query), or close connections idle longer than that")
    elif own is not None:
        fixes.append(own)
    else:
        fixes.append(f"keep idle pooled connections alive below {timeout:g} s: TCP keepalive "
                     f"(SO_KEEPALIVE with TCP_KEEPIDLE={suggest:g}, or net.ipv4."
                     f"tcp_keepalive_time={suggest:g}), or the pool's own ping")
        fixes.append(f"or let the pool close connections idle longer than {suggest:g} s "
                     "(an idle limit below the appliance's timeout)")
    if last.attempts[-1] in (GAVE_UP, TIMEOUT):
        fixes.append(f"bound the hang: TCP_USER_TIMEOUT (the request waited "
                     f"{last.took:.0f} s for the kernel to give up), or a read timeout")
    return ReuseAdvice(False, prediction, fixes)
