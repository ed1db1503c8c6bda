from __future__ import annotations

import io

from simulator.views.demo import run_demo


def test_demo_tells_the_three_stories_side_by_side() -> None:
    out = io.StringIO()
    assert run_demo(speed=100, width=200, out=out) == 0
    text = out.getvalue()
    print(text)
    rows = text.splitlines()
    # three columns of 61 characters after the 10-character time stamp
    expiry = next(r for r in rows if "NAT Gateway forgets" in r)
    probe = next(r for r in rows if "keepalive probe: zero bytes" in r)
    proxied = next(r for r in rows if "reaches the proxy's socket" in r)
    assert expiry.index("forgets") < 72
    assert 72 < probe.index("keepalive probe: zero bytes") < 135
    assert proxied.index("reaches the proxy's socket") > 135
    assert "client timeout, server reset" in text
    assert "client answer, server delivered" in text
    assert "client closed, server reset" in text
    assert text.count("PASS: as the model predicts") == 3


def test_the_idle_pool_story_tells_the_reset_the_hang_and_the_kept_connection() -> None:
    out = io.StringIO()
    assert run_demo(speed=45, width=200, out=out, story="idle-pool") == 0
    text = out.getvalue()
    print(text)
    rows = text.splitlines()
    rst = next(r for r in rows if "it answers with an RST" in r)
    probe = next(r for r in rows if "TCP keepalive probe on the idle pooled" in r)
    gave_up = next(r for r in rows if "The kernel gives up: ETIMEDOUT" in r)
    assert rst.index("answers with an RST") < 72
    assert 72 < gave_up.index("The kernel gives up") < 135
    assert probe.index("TCP keepalive probe") > 135
    # the hang: the request at 400 s, the give-up near 400 + 925 model s
    assert 1200 < int(gave_up.split()[0]) < 1500, gave_up
    assert sum("Retransmission" in r for r in rows) >= 8
    # the quiet minutes are told as passing time, not a frozen screen
    ticks = [int(r.split()[0]) for r in rows if r.split()[1:] == ["..."] * 3]
    assert ticks and all(10 < t < 350 for t in ticks[:1]), rows
    assert "client answer, reset+answer" in text
    assert "client answer, retransmit_timeout" in text
    assert "client answer, answer" in text
    assert text.count("PASS: as the model predicts") == 3
