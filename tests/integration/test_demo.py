from __future__ import annotations

import io
import re
from pathlib import Path

from simulator.views.demo import run_demo
from tests.integration.browser import Browser

METERS = ("Array.from(document.querySelectorAll('iframe')).map(f => "
          "f.contentDocument.getElementById('meters').innerText)")


def test_demo_tells_the_three_stories_side_by_side(tmp_path: Path) -> None:
    out = io.StringIO()
    page = tmp_path / "demo.html"
    assert run_demo(speed=100, width=200, out=out, page=page) == 0
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
    assert f"Page: {page}" in text
    _step_through_the_page(page, tmp_path / "profile")


def _step_through_the_page(page: Path, profile: Path) -> None:
    """The projector's page: one step button moves the three stories to the same moment."""
    browser = Browser(profile, 1500, 850)
    try:
        browser.open(page)
        browser.wait_for("document.getElementById('now').textContent === 'model time 0.0 s'")
        seen = []
        for _ in range(40):  # every decisive moment of the three stories, then the end
            browser.click("#step")
            now = browser.evaluate("document.getElementById('now').textContent")
            seen.append((now, browser.evaluate(METERS)))
            if browser.evaluate("Array.from(document.querySelectorAll('iframe')).every(f => "
                                "f.contentDocument.getElementById('stamp')"
                                ".getAttribute('visibility') === 'visible')"):
                break
        # the first step at which the NAT Gateway has forgotten the idle flow: about 350 s
        now, at_expiry = next((now, meters) for now, meters in seen
                              if "forgotten at" in meters[0])
        assert 350 <= float(now.split()[2]) < 352, seen
        idle = re.search(r"idle ([\d.]+) s of 350 s", at_expiry[1])
        assert idle and float(idle.group(1)) < 60, seen  # a probe restarted its idle timer
        proxy = re.search(r"idle ([\d.]+)", at_expiry[2])  # the probes did not count
        assert proxy and float(proxy.group(1)) >= 349, seen
        stamps = browser.evaluate("Array.from(document.querySelectorAll('iframe')).map(f => "
                                  "f.contentDocument.getElementById('stamp').textContent)")
        assert stamps == ["PASS: client timeout, server reset",
                          "PASS: client answer, server delivered",
                          "PASS: client closed, server reset"], stamps
        assert browser.errors() == []
    finally:
        browser.close()


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
    # (the first may come at 0 s when the worlds start slowly on a busy machine)
    assert ticks and ticks[0] < 350 and any(10 < t < 350 for t in ticks), rows
    assert "client answer, reset+answer" in text
    assert "client answer, retransmit_timeout" in text
    assert "client answer, answer" in text
    assert text.count("PASS: as the model predicts") == 3
