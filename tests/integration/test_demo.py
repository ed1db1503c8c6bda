from __future__ import annotations

import io

from simulator.demo import run_demo


def test_demo_tells_both_stories_side_by_side() -> None:
    out = io.StringIO()
    assert run_demo(speed=100, width=140, out=out) == 0
    text = out.getvalue()
    print(text)
    rows = text.splitlines()
    expiry = next(r for r in rows if "NAT Gateway forgets" in r)
    probe = next(r for r in rows if "keepalive probe" in r)
    # the expiry is told in the left column only, the probe in the right column only
    assert expiry.index("forgets") < 70 and probe.index("keepalive probe") > 70
    assert "client timeout, server reset" in text
    assert "client answer, server delivered" in text
    assert text.count("PASS") == 2
