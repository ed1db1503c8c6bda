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
