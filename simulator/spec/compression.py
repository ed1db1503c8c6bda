"""Time compression of one scenario: the wall-clock settings of a run at speed K.

:func:`plan` turns a scenario and a speed into the wall-clock settings of one run, with the
effective model value of every rounded kernel setting, and refuses a speed at which the
rounding or the timing margin could change the outcome that the analytic model predicts
(DESIGN.md §3). :func:`nominal_prediction` is the model's answer at speed 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from simulator.core.appliances import ExpiryAction
from simulator.core.jsonvalue import JsonObject
from simulator.core.model import (
    MIN_WALL_MARGIN,
    DatagramExchange,
    Exchange,
    Prediction,
    decisive_gap,
    decisive_gap_udp,
    predict,
    predict_load,
    predict_udp,
    resolve_late,
)
from simulator.core.path_model import (
    Attempts,
    PathEffects,
    path_gap,
    predict_attach,
    predict_path,
    predict_proxy,
    retransmits,
)
from simulator.core.plan import load_wall
from simulator.core.pool_model import (
    PoolExchange,
    PoolModelError,
    PoolPrediction,
    predict_pool,
)
from simulator.core.retransmission import (
    TCP_RTO_MAX,
    Retransmission,
    at_speed,
    in_model_seconds,
    world_sysctls,
)
from simulator.core.timescale import (
    Scaled,
    kernel_seconds,
    kernel_timer_lateness,
    scale,
    scale_kernel,
)
from simulator.spec.scenario import MAX_SPEED, MIN_SPEED, Scenario, load_outcome


@dataclass(frozen=True)
class Plan:
    """One run of a scenario at one speed: every duration in model and wall seconds."""

    scenario: Scenario
    speed: float
    idle_timeout: Scaled
    server_delay: Scaled
    client_timeout: Scaled
    keepalive_idle: Scaled | None
    keepalive_interval: Scaled | None
    keepalive_count: int | None
    sysctls: dict[str, Scaled | int]
    prediction: Prediction
    notes: list[str] = field(default_factory=list)
    heartbeat: Scaled | None = None
    retransmission: Retransmission | None = None
    """A scripted client's world: the retransmission settings on the wall clock."""

    def wall_sysctls(self) -> dict[str, int]:
        """The client's keepalive sysctls as the kernel takes them (whole wall seconds),
        and a scripted client's retransmission sysctls."""
        return {**{k: v if isinstance(v, int) else int(v.wall) for k, v in self.sysctls.items()},
                **self.retransmission_sysctls()}

    def retransmission_sysctls(self) -> dict[str, int]:
        """Every host's retransmission sysctls (none but a scripted client's world's)."""
        return {} if self.retransmission is None else world_sysctls(self.retransmission)

    def settings(self) -> list[JsonObject]:
        rows = [self.idle_timeout, self.server_delay, self.client_timeout]
        rows += [s for s in (self.keepalive_idle, self.keepalive_interval, self.heartbeat)
                 if s is not None]
        rows += [v for v in self.sysctls.values() if isinstance(v, Scaled)]
        out: list[JsonObject] = [r.to_dict() for r in rows]
        if self.keepalive_count is not None:
            out.append({"setting": "client.keepalive.count", "count": self.keepalive_count})
        probes = self.sysctls["tcp_keepalive_probes"]
        assert not isinstance(probes, Scaled)  # a count: never scaled
        out.append({"setting": "sysctl net.ipv4.tcp_keepalive_probes", "count": probes})
        wall = self.retransmission
        if wall is not None:
            k = self.speed
            out += [scale("sysctl net.ipv4.tcp_rto_min_us (RTO floor)", wall.rto_min * k,
                          k).to_dict(),
                    {**scale("sysctl net.ipv4.tcp_rto_max_ms (RTO cap)", TCP_RTO_MAX, k)
                     .to_dict(), "wall_s": wall.rto_max, "effective_model_s": wall.rto_max * k},
                    {"setting": "sysctl net.ipv4.tcp_retries2", "count": wall.retries2,
                     "model_count": self.scenario.tcp_retries2,
                     "give_up_model_s": round(in_model_seconds(wall, k).give_up(), 1)}]
            user = self.scenario.keepalive.user_timeout
            if wall.user_timeout is not None and user is not None:
                out.append(Scaled("client.keepalive.user_timeout (TCP_USER_TIMEOUT)", user,
                                  wall.user_timeout, wall.user_timeout * k, False).to_dict())
        return out



def _exchange(s: Scenario, timeout: float, delay: float, limit: float,
              ka_idle: float | None, ka_intvl: float | None, ka_count: int | None) -> Exchange:
    app = s.appliance
    inside = resolve_late(app, app.late_from_inside,
                          ka_idle if ka_idle is not None else limit)
    return Exchange(idle_timeout=timeout, late_from_inside=inside,
                    late_from_outside=resolve_late(app, app.late_from_outside, delay),
                    answer_delay=delay, client_timeout=limit, keepalive_idle=ka_idle,
                    keepalive_interval=ka_intvl if ka_intvl is not None else 75.0,
                    keepalive_count=ka_count if ka_count is not None else 9,
                    reset_at_expiry=app.on_expiry is ExpiryAction.RST_BOTH,
                    probes_refresh=app.keepalive_refreshes,
                    closing_timeout=app.transitory_timeout,
                    keepalive_user_timeout=s.keepalive.user_timeout if ka_idle is not None
                    else None)


def _keepalive_model(s: Scenario) -> tuple[float | None, float | None, int | None]:
    """The keepalive timing the client socket really gets, before compression."""
    ka = s.keepalive
    if ka.mode == "socket":
        return ka.idle, ka.interval, ka.count
    if ka.mode == "os":
        return (float(s.sysctls["tcp_keepalive_time"]), float(s.sysctls["tcp_keepalive_intvl"]),
                s.sysctls["tcp_keepalive_probes"])
    return None, None, None


def _datagram_exchange(s: Scenario) -> DatagramExchange:
    timeout = min(a.udp_idle_timeout for a in s.chain or (s.appliance,))
    chain = s.chain or (s.appliance,)
    # a heartbeat from the request's socket after the expiry creates the request's flow
    # again: the same 5-tuple through an appliance that does not translate the client
    return DatagramExchange(timeout, s.server_delay, s.client_timeout, s.heartbeat,
                            recreates=s.heartbeat_port == "same" and not any(
                                a.nat for a in chain),
                            own_flows=s.heartbeat_port == "new")


def _pool_exchange(s: Scenario, k: float) -> tuple[PoolExchange, Retransmission]:
    """A scripted client's requests as the world at speed ``k`` times them (model seconds),
    and the retransmission settings the world gets (wall seconds)."""
    wall = at_speed(Retransmission(retries2=s.tcp_retries2,
                                   user_timeout=s.keepalive.user_timeout), k)
    idle = _effective_exchange(s, k).keepalive_idle
    return PoolExchange(s.requests, s.pool, s.retry, s.server_delay, s.client_timeout,
                        in_model_seconds(wall, k), idle, **s.habits), wall


def _pool_prediction(s: Scenario, k: float) -> tuple[Prediction, PoolPrediction]:
    pool = predict_pool(s.appliance, _pool_exchange(s, k)[0])
    return Prediction(pool.client, pool.end, pool.server, pool.expires_at,
                      s.appliance.tcp_idle_timeout, pool.story), pool


def nominal_prediction(s: Scenario) -> Prediction:
    """What the scenario leads to at speed 1 (no rounding at all)."""
    if s.scripted:
        return _pool_prediction(s, 1.0)[0]
    if s.load is not None:
        established, timed_out = predict_load(list(s.chain), s.load.connections)
        story = [f"{s.load.connections} connections to one destination; the path carries "
                 f"{established}"]
        if timed_out:
            story.append(f"the other {timed_out} SYNs are dropped and time out")
        return Prediction(load_outcome(established, timed_out, 0), s.client_timeout,
                          f"accepted={established}", None, s.appliance.tcp_idle_timeout, story)
    if s.protocol == "udp":
        return predict_udp(_datagram_exchange(s))
    idle, intvl, count = _keepalive_model(s)
    return _predict(s, _exchange(s, s.appliance.tcp_idle_timeout, s.server_delay,
                                 s.client_timeout, idle, intvl, count), 1.0)


ATTACH_WALL = 0.1
"""Wall seconds the runner may take to attach the client's interface (measured: about
0.03 s at speed 100, which made a 5 s gap at that speed too thin)."""


def _predict(s: Scenario, ex: Exchange, k: float) -> Prediction:
    """The model's outcome of exchange ``ex`` at speed ``k``, with the scenario's path: an
    L4 proxy, path events (a walk), a late attach."""
    if s.proxy is not None:
        return predict_proxy(ex)
    fx = PathEffects.of(s.events)
    then = predict_path(ex, fx, retransmits(k)) if fx.active else predict(ex, retransmits(k))
    if not fx.active:  # events that leave this flow alone still belong in its story
        then.story[:0] = fx.story
    attach = s.attach
    if attach is None:
        return then
    return predict_attach(attach.at, Attempts(s.retries, s.backoff, s.resolve == "each"),
                          then)


def _gap(s: Scenario, ex: Exchange, k: float) -> float:
    """The smallest model-time distance between instants whose order decides the outcome."""
    fx = PathEffects.of(s.events)
    gap = path_gap(ex, fx, retransmits(k)) if fx.active else decisive_gap(ex, retransmits(k))
    attach = s.attach
    if attach is not None:
        # the runner's netlink calls that bring the link up take tens of wall milliseconds:
        # an attempt must not come within that (and the usual margin) of the attach
        attempts = Attempts(s.retries, s.backoff, s.resolve == "each").times()
        gap = min(gap, *(abs(t - attach.at) - ATTACH_WALL * k for t in attempts))
    return gap


class SpeedError(ValueError):
    """The requested time compression would change or blur the outcome."""


def _effective_exchange(s: Scenario, k: float) -> Exchange:
    """The exchange as the kernel will really time it at speed ``k`` (whole wall seconds)."""
    idle, intvl, count = _keepalive_model(s)

    def kernel(v: float | None) -> float | None:
        return None if v is None else kernel_seconds(v, k) * k

    return _exchange(s, s.appliance.tcp_idle_timeout, s.server_delay, s.client_timeout,
                     kernel(idle), kernel(intvl), count)


def _problem(s: Scenario, k: float) -> str | None:
    """Why speed ``k`` is unsafe for ``s`` ("rounding" or "margin"), or None if it is safe."""
    if s.load is not None:  # held connections must not idle out during the hold
        return "margin" if load_wall(s, k) * k >= s.appliance.tcp_idle_timeout else None
    if s.protocol == "udp":  # nothing kernel-timed: only the margin can be too thin
        return "margin" if decisive_gap_udp(_datagram_exchange(s)) / k < MIN_WALL_MARGIN \
            else None
    if s.scripted:
        return _pool_problem(s, k)
    exchange = _effective_exchange(s, k)
    if _predict(s, exchange, k).outcome() != nominal_prediction(s).outcome():
        return "rounding"
    if _gap(s, exchange, k) / k < MIN_WALL_MARGIN:
        return "margin"
    return _late_probe(exchange, k)


def _late_probe(exchange: Exchange, k: float) -> str | None:
    """"kernel timer" if a keepalive probe that should beat the expiry may come after it:
    the kernel's timer may fire late (:func:`kernel_timer_lateness`)."""
    ka = exchange.keepalive_idle
    if ka is not None and ka < exchange.idle_timeout and exchange.probes_refresh:
        slack = MIN_WALL_MARGIN + kernel_timer_lateness(ka / k)
        if (exchange.idle_timeout - ka) / k < slack:
            return "kernel timer"
    return None


def _pool_problem(s: Scenario, k: float) -> str | None:
    try:
        effective, pool = _pool_prediction(s, k)
    except PoolModelError:  # rounding made a keepalive probe meet the forgotten flow
        return "rounding"
    if effective.outcome() != nominal_prediction(s).outcome():
        return "rounding"
    if any((distance - tolerance) / k < MIN_WALL_MARGIN for distance, tolerance in pool.margins):
        return "margin"
    return _late_probe(_effective_exchange(s, k), k)


def max_safe_speed(s: Scenario, ceiling: int = 1000) -> float:
    """The largest whole speed K such that every speed from 1 to K is safe."""
    best = 0
    for k in range(1, ceiling + 1):
        if _problem(s, float(k)) is not None:
            break
        best = k
    return float(best)


def _scaled_sysctls(s: Scenario, k: float) -> dict[str, Scaled | int]:
    """The client namespace's keepalive sysctls at speed ``k`` (whole wall seconds)."""
    return {
        "tcp_keepalive_time": scale_kernel("sysctl net.ipv4.tcp_keepalive_time",
                                           s.sysctls["tcp_keepalive_time"], k),
        "tcp_keepalive_intvl": scale_kernel("sysctl net.ipv4.tcp_keepalive_intvl",
                                            s.sysctls["tcp_keepalive_intvl"], k),
        "tcp_keepalive_probes": s.sysctls["tcp_keepalive_probes"],
    }


def plan(s: Scenario, speed: float | None = None) -> Plan:
    """Compress the scenario to ``speed``; raise :class:`SpeedError` where that is unsafe."""
    k = float(speed if speed is not None else s.speed)
    if not math.isfinite(k) or not MIN_SPEED <= k <= MAX_SPEED:
        raise SpeedError(f"speed must be a number from {MIN_SPEED:g} to {MAX_SPEED:g}, "
                         f"got {speed!r}")
    timeout = scale("appliance.tcp_idle_timeout", s.appliance.tcp_idle_timeout, k)
    delay = scale("server.delay", s.server_delay, k)
    limit = scale("client.timeout", s.client_timeout, k)
    sysctls = _scaled_sysctls(s, k)
    ka_time, ka_sys_intvl = sysctls["tcp_keepalive_time"], sysctls["tcp_keepalive_intvl"]
    assert isinstance(ka_time, Scaled) and isinstance(ka_sys_intvl, Scaled)
    ka_idle = ka_intvl = None
    if s.keepalive.mode == "socket":
        assert s.keepalive.idle is not None and s.keepalive.interval is not None
        ka_idle = scale_kernel("client.keepalive.idle (TCP_KEEPIDLE)", s.keepalive.idle, k)
        ka_intvl = scale_kernel("client.keepalive.interval (TCP_KEEPINTVL)",
                                s.keepalive.interval, k)

    if s.protocol == "udp":
        return _plan_udp(s, k)
    if s.load is not None:
        return _plan_load(s, k)
    if s.scripted:
        return _plan_pool(s, k, timeout, delay, limit, ka_idle, ka_intvl, sysctls)
    exchange = _effective_exchange(s, k)
    effective = _predict(s, exchange, k)
    problem = _problem(s, k)
    if problem == "rounding":
        nominal = nominal_prediction(s)
        rounded = [x for x in (ka_idle, ka_intvl, ka_time, ka_sys_intvl)
                   if x is not None and x.rounded]
        detail = "; ".join(f"{x.name} {x.model:g} s becomes {x.wall:g} wall s = "
                           f"{x.effective_model:g} model s" for x in rounded)
        raise SpeedError(
            f"{s.name}: at speed {k:g} the kernel's whole-second rounding changes the outcome "
            f"(client {nominal.client} -> {effective.client}, server {nominal.server} -> "
            f"{effective.server}): {detail}. Largest safe speed: {max_safe_speed(s):g}.")
    if problem == "kernel timer":
        ka = exchange.keepalive_idle
        assert ka is not None
        raise SpeedError(
            f"{s.name}: at speed {k:g} the first keepalive probe ({ka:g} model s = "
            f"{ka / k:g} wall s) comes only {1000 * (exchange.idle_timeout - ka) / k:.0f} wall "
            f"ms before the expiry, and a kernel timer of {ka / k:g} s may fire up to "
            f"{1000 * kernel_timer_lateness(ka / k):.0f} ms late. Largest safe speed: "
            f"{max_safe_speed(s):g}.")
    if problem == "margin":
        gap = _gap(s, exchange, k)
        raise SpeedError(
            f"{s.name}: at speed {k:g} the decisive instants are only {gap:g} model s = "
            f"{1000 * gap / k:.0f} wall ms apart (at least {1000 * MIN_WALL_MARGIN:.0f} ms "
            f"needed for a deterministic outcome). Largest safe speed: {max_safe_speed(s):g}.")
    notes = []
    if s.keepalive.mode == "off":
        notes.append("client socket without SO_KEEPALIVE: the namespace sysctls do not apply")
    return Plan(s, k, timeout, delay, limit, ka_idle, ka_intvl, s.keepalive.count, sysctls,
                effective, notes)


def _plan_udp(s: Scenario, k: float) -> Plan:
    ex = _datagram_exchange(s)
    if _problem(s, k) is not None:
        gap = decisive_gap_udp(ex)
        raise SpeedError(
            f"{s.name}: at speed {k:g} the decisive instants are only {gap:g} model s = "
            f"{1000 * gap / k:.0f} wall ms apart (at least {1000 * MIN_WALL_MARGIN:.0f} ms "
            f"needed for a deterministic outcome). Largest safe speed: {max_safe_speed(s):g}.")
    sysctls = _scaled_sysctls(s, k)
    notes = ["UDP: the keepalive sysctls do not apply"]
    heartbeat = scale("client.heartbeat", s.heartbeat, k) if s.heartbeat else None
    return Plan(s, k, scale("appliance.udp_idle_timeout", ex.idle_timeout, k),
                scale("server.delay", s.server_delay, k),
                scale("client.timeout", s.client_timeout, k), None, None, None, sysctls,
                predict_udp(ex), notes, heartbeat)


def _plan_load(s: Scenario, k: float) -> Plan:
    if _problem(s, k) is not None:
        raise SpeedError(f"{s.name}: the connections would be held past the idle timeout "
                         f"({load_wall(s, k) * k:g} >= {s.appliance.tcp_idle_timeout:g} "
                         "model s)")
    sysctls = _scaled_sysctls(s, k)
    return Plan(s, k, scale("appliance.tcp_idle_timeout", s.appliance.tcp_idle_timeout, k),
                scale("server.delay", 0.0, k),
                scale("load (whole run)", load_wall(s, k) * k, k),
                None, None, None, sysctls, nominal_prediction(s),
                ["capacity scenario: the load generator opens and holds connections"])


def _plan_pool(s: Scenario, k: float, timeout: Scaled, delay: Scaled, limit: Scaled,
               ka_idle: Scaled | None, ka_intvl: Scaled | None,
               sysctls: dict[str, Scaled | int]) -> Plan:
    """A scripted client: the pool model, and the world's retransmission timer."""
    problem = _pool_problem(s, k)
    if problem == "rounding":
        nominal = nominal_prediction(s)
        raise SpeedError(
            f"{s.name}: at speed {k:g} the kernel's rounding (whole-second keepalive, the "
            f"retransmission give-up) changes the outcome (client {nominal.client} -> "
            f"{_safe_client(s, k)}). Largest safe speed: {max_safe_speed(s):g}.")
    if problem == "kernel timer":
        raise SpeedError(
            f"{s.name}: at speed {k:g} the keepalive probe that keeps the pooled connection "
            "comes too close to the expiry for a kernel timer that may fire late. Largest "
            f"safe speed: {max_safe_speed(s):g}.")
    if problem == "margin":
        raise SpeedError(
            f"{s.name}: at speed {k:g} two decisive instants come closer than the kernel's "
            f"timers can tell apart (within {1000 * MIN_WALL_MARGIN:.0f} wall ms, or a "
            "retransmission give-up within one RTO cap of the client's timeout). Largest "
            f"safe speed: {max_safe_speed(s):g}.")
    prediction, _ = _pool_prediction(s, k)
    wall = _pool_exchange(s, k)[1]
    kernel = world_sysctls(wall)
    decides = "TCP_USER_TIMEOUT decides the give-up" if wall.user_timeout is not None else (
        f"tcp_retries2 {s.tcp_retries2} -> {wall.retries2}, because the kernel computes the "
        "give-up from a fixed 200 ms")
    notes = [f"retransmission timer compressed on every host: tcp_rto_min_us "
             f"{kernel['tcp_rto_min_us']}, tcp_rto_max_ms {kernel['tcp_rto_max_ms']}; "
             f"{decides}; the SYN's 1 s timeout and delayed ACKs stay uncompressed"]
    if s.keepalive.mode == "off":
        notes.append("client socket without SO_KEEPALIVE: the namespace sysctls do not apply")
    return Plan(s, k, timeout, delay, limit, ka_idle, ka_intvl, s.keepalive.count, sysctls,
                prediction, notes, retransmission=wall)


def _safe_client(s: Scenario, k: float) -> str:
    try:
        return _pool_prediction(s, k)[0].client
    except PoolModelError as exc:
        return str(exc)
