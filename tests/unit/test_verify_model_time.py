"""``make verify-model-time``'s comparison, on the timelines of its first full run here
(nat-gw, answer after 400 s, speed 35 in model time against speed 1)."""

from __future__ import annotations

from bench.verify_model_time import Timeline, compare


def test_the_probe_is_where_the_kernels_whole_seconds_put_it() -> None:
    # Node's agent asks for a probe after 1 s idle: 1 wall s, 35 model s, at speed 35
    node = compare(Timeline(True, 35.35, None, 400.126), Timeline(True, 1.004, None, 400.005),
                   35)
    curl = compare(Timeline(True, 70.406, None, 400.088), Timeline(True, 61.344, None, 400.008),
                   35)  # 60 s: 2 wall s, 70 model s
    python = compare(Timeline(True, 35.982, None, 400.073),
                     Timeline(True, 30.6, None, 400.007), 35)  # 30 s: 1 wall s
    assert node == curl == python == []


def test_disagreements_are_named() -> None:
    wrong = compare(Timeline(False, 35.0, 350.2, None), Timeline(True, 30.0, None, 400.0), 35)
    assert any(w.startswith("verdict") for w in wrong)
    assert any(w.startswith("expiry") for w in wrong) and any(w.startswith("answer")
                                                              for w in wrong)
    late = compare(Timeline(True, 70.0, None, 400.0), Timeline(True, 30.0, None, 400.0), 35)
    assert late and late[0].startswith("first probe: 70 s")
