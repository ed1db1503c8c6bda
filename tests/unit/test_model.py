from __future__ import annotations

import pytest

from simulator.core.appliances import LateAction
from simulator.core.model import Exchange, decisive_gap, predict
from simulator.spec.compression import nominal_prediction
from simulator.spec.scenario import load_scenario, scenario_names

RST, DROP = LateAction.RST, LateAction.DROP


def ex(**kw: object) -> Exchange:
    base: dict[str, object] = dict(idle_timeout=350.0, late_from_inside=RST,
                                   late_from_outside=RST, answer_delay=400.0,
                                   client_timeout=900.0)
    base.update(kw)
    return Exchange(**base)  # type: ignore[arg-type]


def test_no_keepalive_answer_after_timeout() -> None:
    p = predict(ex())
    assert p.outcome() == ("timeout", "reset")
    assert p.expires_at == 350.0 and p.client_at == 900.0


def test_answer_before_timeout_survives() -> None:
    assert predict(ex(answer_delay=349.0)).outcome() == ("answer", "delivered")


def test_keepalive_below_timeout_survives() -> None:
    p = predict(ex(keepalive_idle=300.0))
    assert p.outcome() == ("answer", "delivered") and p.client_at == 400.0


def test_keepalive_at_or_above_timeout_is_too_late() -> None:
    # a probe exactly at the deadline finds the flow gone: the client is reset by it
    assert predict(ex(keepalive_idle=350.0)).outcome() == ("reset", "reset")
    # OS defaults: the first probe would come long after the client gave up
    assert predict(ex(keepalive_idle=7200.0)).outcome() == ("timeout", "reset")
    # a probe after expiry but before the client gives up: the client learns by RST
    p = predict(ex(keepalive_idle=500.0, answer_delay=600.0))
    assert p.outcome() == ("reset", "reset") and p.client_at == 500.0


def test_drop_rules() -> None:
    assert predict(ex(late_from_outside=DROP)).outcome() == ("timeout", "unacknowledged")
    p = predict(ex(late_from_inside=DROP, keepalive_idle=400.0, keepalive_interval=10.0,
                   keepalive_count=3))
    assert p.outcome() == ("keepalive_failed", "reset") and p.client_at == 430.0


def test_decisive_gap() -> None:
    assert decisive_gap(ex(answer_delay=351.0)) == 1.0
    assert decisive_gap(ex(keepalive_idle=300.0)) == 50.0


@pytest.mark.parametrize("name", scenario_names())
def test_model_agrees_with_every_shipped_scenario(name: str) -> None:
    s = load_scenario(name)
    assert nominal_prediction(s).outcome() == (s.expect_client, s.expect_server)


def test_udp_mapping_expires_silently() -> None:
    from simulator.core.model import DatagramExchange, predict_udp  # noqa: PLC0415

    assert predict_udp(DatagramExchange(120, 150, 300)).outcome() == ("timeout", "answered")
    assert predict_udp(DatagramExchange(120, 100, 300)).outcome() == ("answer", "answered")
    assert predict_udp(DatagramExchange(120, 150, 300, heartbeat=60)).outcome() == (
        "answer", "answered")
    assert predict_udp(DatagramExchange(120, 150, 300, heartbeat=130)).outcome() == (
        "timeout", "answered")


def test_a_late_heartbeat_recreates_the_flow_only_without_translation() -> None:
    """Through an NLB (no translation of the client) a heartbeat after the expiry creates
    the request's 5-tuple again and the answer 70 s later passes; through a NAT the new
    mapping has a new public port; heartbeats from new ports keep nothing."""
    from simulator.core.model import DatagramExchange, predict_udp  # noqa: PLC0415

    nlb = DatagramExchange(120, 200, 400, heartbeat=130, recreates=True)
    assert predict_udp(nlb).outcome() == ("answer", "answered")
    assert predict_udp(DatagramExchange(120, 300, 400, heartbeat=130, recreates=True)
                       ).outcome() == ("answer", "answered")  # 40 s after the one at 260
    assert predict_udp(DatagramExchange(120, 255, 400, heartbeat=130, recreates=True)
                       ).outcome() == ("timeout", "answered")  # 125 s after the one at 130
    assert predict_udp(DatagramExchange(120, 200, 400, heartbeat=130)).outcome() == (
        "timeout", "answered")
    assert predict_udp(DatagramExchange(120, 200, 400, heartbeat=60, own_flows=True)
                       ).outcome() == ("timeout", "answered")


def test_capacity_predictions() -> None:
    from simulator.core.appliances import get_appliance  # noqa: PLC0415
    from simulator.core.model import capacity_towards_one_destination, predict_load  # noqa: PLC0415

    nat = get_appliance("nat-gw")
    assert capacity_towards_one_destination(nat) == 55_000
    two = nat.with_overrides({"public_ips": ["203.0.113.1", "203.0.113.2"]})
    assert capacity_towards_one_destination(two) == 110_000
    assert predict_load([nat], 56_000) == (55_000, 1_000)
    assert predict_load([two], 56_000) == (56_000, 0)
    eni = get_appliance("hyperplane-eni")
    assert predict_load([eni], 66_000) == (65_000, 1_000)
    assert predict_load([eni.with_overrides({"enis": 2})], 66_000) == (66_000, 0)
    scaled = nat.with_overrides({"capacity_scale": 0.01})
    assert predict_load([scaled], 560) == (550, 10)
    assert capacity_towards_one_destination(get_appliance("nlb")) is None


def test_probes_that_do_not_count_make_no_margin_of_their_own() -> None:
    """Found by the keepalive matrix: node's 1 s probes behind Global Accelerator, whose
    340 s timeout is a multiple of 1 s, made the probe and the expiry "coincide" and the
    scenario unsafe at every speed; the order of those two decides nothing."""
    from simulator.runs.matrix import load_matrix  # noqa: PLC0415
    from simulator.spec.compression import max_safe_speed  # noqa: PLC0415

    cell = next(c for c in load_matrix("keepalive").cells
                if c.client == "node-http-agent" and c.scenario.appliance.name
                == "global-accelerator")
    assert cell.scenario.expect_client == "reset"
    assert max_safe_speed(cell.scenario) >= 35  # (the 1 s probes round up at high speeds)


def test_an_answer_after_the_client_left_meets_its_closed_socket() -> None:
    """The client gave up first and closed: its FIN crossed and kept the flow, so even an
    appliance that drops late packets delivers the answer, and the client's kernel resets
    it (a real GWLB run showed it: the server sees EPIPE after the FIN)."""
    drop = ex(late_from_inside=LateAction.DROP, late_from_outside=LateAction.DROP,
              answer_delay=200.0, client_timeout=100.0)
    p = predict(drop)
    assert p.outcome() == ("timeout", "reset")
    assert any("closed socket" in line for line in p.story)
    # after the flow expired (the FIN refreshed it at 100 s: gone at 450 s) the late rule
    assert predict(ex(late_from_outside=LateAction.DROP, answer_delay=460.0,
                      client_timeout=100.0)).outcome() == ("timeout", "unacknowledged")
    # an appliance with a short timeout once a FIN crossed forgets it sooner
    assert predict(ex(late_from_outside=LateAction.DROP, answer_delay=200.0,
                      client_timeout=100.0, closing_timeout=60.0)).outcome() == (
        "timeout", "unacknowledged")


def test_tcp_user_timeout_replaces_the_probe_count() -> None:
    """Linux tcp_keepalive_timer: with TCP_USER_TIMEOUT the kernel gives up at the first
    probe timer after the first probe at which the timeout has passed since the peer was
    last heard; the count no longer matters."""
    from simulator.core.appliances import LateAction  # noqa: PLC0415
    from simulator.core.model import Exchange, keepalive_give_up, predict  # noqa: PLC0415

    def gwlb(user: float | None, count: int = 9) -> Exchange:
        return Exchange(350.0, LateAction.DROP, LateAction.DROP, 600.0, 900.0, 400.0, 75.0,
                        count, keepalive_user_timeout=user)

    assert keepalive_give_up(gwlb(None), 400.0) == 1075.0
    assert keepalive_give_up(gwlb(30.0), 400.0) == 475.0  # the second probe's timer
    assert keepalive_give_up(gwlb(30.0, count=1), 400.0) == 475.0  # the count is ignored
    assert keepalive_give_up(gwlb(600.0), 400.0) == 625.0  # 600 s after 0: the 4th timer
    assert predict(gwlb(None)).outcome() == ("timeout", "unacknowledged")
    assert predict(gwlb(30.0)).outcome() == ("keepalive_failed", "unacknowledged")
    assert predict(gwlb(30.0)).client_at == 475.0
