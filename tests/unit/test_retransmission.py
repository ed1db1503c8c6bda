"""The kernel's retransmission give-up, as :mod:`simulator.core.retransmission` models it
(the same rule is checked against real sockets in tests/integration/test_retransmission.py)."""

from __future__ import annotations

import pytest

from simulator.core.retransmission import (
    RTO_MAX_FLOOR,
    WORLD_RTT,
    Retransmission,
    at_speed,
    in_model_seconds,
    world_sysctls,
)


def test_fifteen_retries_stand_for_924_6_seconds() -> None:
    """``tcp_model_timeout``: 31 x 200 ms doubling, then 6 steps of 120 s."""
    assert Retransmission().model_timeout() == pytest.approx(924.6)
    assert Retransmission(retries2=3).model_timeout() == pytest.approx(3.0)
    assert Retransmission(retries2=9).model_timeout() == pytest.approx(204.6)


def test_the_duration_starts_from_the_fixed_200_ms_whatever_the_floor() -> None:
    """A namespace's tcp_rto_min_us changes the timer, not the give-up's duration; its
    tcp_rto_max_ms caps the steps of both (thresh = log2(3.428 / 0.2) = 4)."""
    compressed = Retransmission(rto_min=0.0057, rto_max=3.428)
    assert compressed.model_timeout() == pytest.approx(31 * 0.2 + 11 * 3.428)


def test_the_give_up_comes_at_the_first_firing_past_the_duration() -> None:
    # the firings: 0.4, 0.8, 1.6, 3.2, 6.4 after the send; 3.2 - 0.4 < 3.0 <= 6.4 - 0.4
    assert Retransmission(retries2=3).give_up() == pytest.approx(6.4)
    # measured on Linux 6.18 (HZ=250): 45.5 s with an 8 ms RTO capped at 3.428 s
    assert Retransmission(rto_min=0.008, rto_max=3.428).give_up() == pytest.approx(45.232)


def test_an_rto_of_exactly_200_ms_would_wait_one_more_step() -> None:
    """The kernel's comparison is knife-edged at 15 retries: the 16th firing comes 0.2 s
    short of 924.6 s after the first; a real RTO (200 ms plus the round trip) reaches it."""
    assert Retransmission(rtt=0.0).give_up() == pytest.approx(1044.8)
    assert Retransmission(rtt=WORLD_RTT).give_up() == pytest.approx(925.8, abs=0.1)


def test_a_user_timeout_replaces_the_retries() -> None:
    for retries2 in (3, 15, 100):
        ut = Retransmission(retries2=retries2, user_timeout=30.0)
        assert ut.give_up() == pytest.approx(0.4 + 30.0)  # from the first retransmission


@pytest.mark.parametrize("speed", [1, 2, 10, 35, 80, 100, 150, 300, 1000])
def test_a_compressed_world_gives_up_near_the_model_time(speed: float) -> None:
    model = Retransmission()
    wall = at_speed(model, speed)
    assert wall.rto_max >= RTO_MAX_FLOOR  # the kernel refuses less than 1000 ms
    on_model_clock = in_model_seconds(wall, speed)
    nominal = at_speed(model, 1).give_up()
    assert on_model_clock.give_up() == pytest.approx(nominal, abs=on_model_clock.tolerance())
    if speed == 1:
        assert wall.retries2 == 15 and world_sysctls(wall) == {
            "tcp_rto_min_us": 200_000, "tcp_rto_max_ms": 120_000, "tcp_retries2": 15}
    else:
        assert wall.retries2 < 15  # the give-up's duration does not compress by itself


def test_a_user_timeout_compresses_exactly() -> None:
    wall = at_speed(Retransmission(user_timeout=30.0), 35)
    assert wall.user_timeout == pytest.approx(30 / 35, abs=1e-3)
    assert in_model_seconds(wall, 35).give_up() == pytest.approx(30.4, abs=0.1)
    assert world_sysctls(wall)["tcp_rto_min_us"] == 5714
