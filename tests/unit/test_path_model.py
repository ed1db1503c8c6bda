"""The model with path events: the walk, the late attach, the L4 proxy."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.core.appliances import LateAction
from simulator.core.model import Exchange, predict
from simulator.core.path_events import PathEvent, PathKind
from simulator.core.path_model import (
    Attempts,
    PathEffects,
    path_gap,
    predict_attach,
    predict_path,
    predict_proxy,
    retransmits,
)
from simulator.spec.compression import _exchange, _keepalive_model
from simulator.spec.scenario import load_scenario, scenario_names

RST, DROP = LateAction.RST, LateAction.DROP
NO_EVENTS = PathEffects()


def ex(**kw: object) -> Exchange:
    base: dict[str, object] = {"idle_timeout": 350.0, "late_from_inside": RST,
                               "late_from_outside": RST, "answer_delay": 400.0,
                               "client_timeout": 900.0}
    base.update(kw)
    return Exchange(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", scenario_names())
def test_the_walk_agrees_with_the_plain_model_on_every_shipped_exchange(name: str) -> None:
    s = load_scenario(name)
    if s.load is not None or s.protocol != "tcp" or s.events or s.proxy:
        return
    exchange = _exchange(s, s.appliance.tcp_idle_timeout, s.server_delay, s.client_timeout,
                         *_keepalive_model(s))
    assert predict_path(exchange, NO_EVENTS, retransmits(1.0)).outcome() == \
        predict(exchange).outcome()


@settings(max_examples=400, deadline=None)
@given(delay=st.floats(1, 2000), limit=st.floats(1, 2000),
       ka=st.one_of(st.none(), st.floats(1, 2000)), interval=st.floats(1, 100),
       count=st.integers(1, 9), inside=st.sampled_from([RST, DROP]),
       outside=st.sampled_from([RST, DROP]),
       closing=st.one_of(st.none(), st.floats(1, 500)), refresh=st.booleans(),
       reset=st.booleans())
def test_the_walk_agrees_with_the_plain_model_without_events(
        delay: float, limit: float, ka: float | None, interval: float, count: int,
        inside: LateAction, outside: LateAction, closing: float | None, refresh: bool,
        reset: bool) -> None:
    exchange = ex(answer_delay=delay, client_timeout=limit, keepalive_idle=ka,
                  keepalive_interval=interval, keepalive_count=count,
                  late_from_inside=inside, late_from_outside=outside,
                  closing_timeout=closing, probes_refresh=refresh, reset_at_expiry=reset)
    if path_gap(exchange, NO_EVENTS, ()) < 1e-6:
        return  # a tie: the order of two simultaneous instants is undefined anyway
    assert predict_path(exchange, NO_EVENTS, ()).outcome() == predict(exchange).outcome()


def test_a_restart_forgets_a_flow_that_keepalive_kept_alive() -> None:
    fx = PathEffects.of([PathEvent(PathKind.RESTART, at=200)])
    p = predict_path(ex(keepalive_idle=300.0, keepalive_interval=15, keepalive_count=5),
                     fx, ())
    assert p.outcome() == ("reset", "reset") and p.client_at == 300.0
    assert any("forgets the flow at 200" in line for line in p.story)


def test_a_blackhole_swallows_the_probes_until_the_kernel_gives_up() -> None:
    fx = PathEffects.of([PathEvent(PathKind.BLACKHOLE, at=290, duration=140)])
    p = predict_path(ex(keepalive_idle=300.0, keepalive_interval=30, keepalive_count=3,
                        answer_delay=450.0), fx, ())
    assert p.outcome() == ("keepalive_failed", "reset") and p.client_at == 390.0


def test_an_answer_retransmitted_after_a_blackhole_arrives() -> None:
    fx = PathEffects.of([PathEvent(PathKind.BLACKHOLE, at=150, duration=50)])
    resend = retransmits(35.0)  # 7, 21, 49, ... model s after the first send
    p = predict_path(ex(answer_delay=180.0), fx, resend)
    assert p.outcome() == ("answer", "delivered") and p.client_at == 180.0 + 21.0
    # a blackhole that outlasts every retransmission: unacknowledged
    fx = PathEffects.of([PathEvent(PathKind.TARGET_FAILURE, at=150)])
    assert predict_path(ex(answer_delay=180.0), fx, resend).outcome() == (
        "timeout", "unacknowledged")


def test_termination_resets_both_ends_and_draining_changes_nothing() -> None:
    stop = PathEffects.of([PathEvent(PathKind.DEREGISTER, at=100, delay=60,
                                     termination=True)])
    assert predict_path(ex(), stop, ()).outcome() == ("reset", "reset")
    drain = PathEffects.of([PathEvent(PathKind.DEREGISTER, at=100, delay=60)])
    assert not drain.active


def test_the_gap_sees_an_event_next_to_a_packet() -> None:
    fx = PathEffects.of([PathEvent(PathKind.RESTART, at=399.5)])
    assert path_gap(ex(), fx, ()) == pytest.approx(0.5)


def test_a_late_attach_decides_which_attempt_gets_through() -> None:
    then = predict(ex(answer_delay=5.0))
    once = predict_attach(25.0, Attempts(3, 10.0, resolve_each=False), then)
    assert once.outcome() == ("connect_failed", "no_client") and once.client_at == 70.0
    each = predict_attach(25.0, Attempts(3, 10.0, resolve_each=True), then)
    assert each.outcome() == ("answer", "delivered") and each.client_at == 35.0
    late = predict_attach(100.0, Attempts(3, 10.0, resolve_each=True), then)
    assert late.outcome() == ("connect_failed", "no_client")


def test_a_proxy_cuts_the_keepalive_client_at_its_timeout() -> None:
    p = predict_proxy(ex(keepalive_idle=300.0))
    assert p.outcome() == ("closed", "reset") and p.client_at == 350.0
    assert predict_proxy(ex(answer_delay=200.0)).outcome() == ("answer", "delivered")
