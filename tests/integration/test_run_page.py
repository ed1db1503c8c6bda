"""A nat-gw run's ``index.html``, looked at in headless Chromium as a person would: real
clicks on the late answer and on the play button, no console error, a screenshot."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.browser import Browser

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    chromium = Browser(tmp_path / "profile")
    try:
        yield chromium
    finally:
        chromium.close()


def test_the_run_page_shows_the_late_answer_its_rst_and_the_verdict(
        tmp_path: Path, browser: Browser) -> None:
    results = tmp_path / "r"
    done = subprocess.run([sys.executable, "-m", "simulator", "run", "nat-gw", "--speed", "100",
                           "--results", str(results)], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "index.html" in done.stdout  # the run names its page among its files
    page = results / "index.html"
    assert page.stat().st_size < 1_000_000
    browser.open(page)
    assert browser.evaluate("document.querySelectorAll('.frame').length") >= 9
    assert browser.evaluate("document.querySelectorAll('svg .lane').length") == 3
    assert browser.evaluate("document.getElementById('verdict').textContent") == "PASS"

    # the server's answer at 400 s, dropped: what it was, why, and the RST it earned
    browser.click(".frame[data-outcome=dropped]")
    details = browser.evaluate("document.getElementById('details').innerText")
    assert "server → appliance (dropped)" in details, details
    assert "dropped PA packet from server of expired flow #1" in details
    # the flow is forgotten 350 s after its last packet, and the page counts from the
    # request: a loaded host moves the two apart by a tenth of a second either way (349.98
    # and 350.1 seen in CI), so the page must say the time the run recorded
    expired = browser.evaluate("JSON.parse(document.getElementById('data').textContent)"
                               ".flows.find((f) => f.id === 1).expired")
    assert 349.0 < expired < 352.0, expired
    assert f"forgotten at {expired:.1f} s after 350 s idle" in details, details
    assert "What followed" in details and "RST sent back to the server" in details
    browser.click("#details button.followed")
    details = browser.evaluate("document.getElementById('details').innerText")
    assert "appliance → server (made)" in details and "flags\tR" in details, details

    # play: the verdict is hidden at 0 s, the meter climbs, the verdict shows at the end
    browser.evaluate("document.getElementById('pace').value = '4'")
    browser.click("#play")
    stamp = "document.getElementById('stamp').getAttribute('visibility')"
    assert browser.evaluate(stamp) == "hidden"
    meter = browser.wait_for("(() => { const m = document.querySelector('.meter'); "
                             "return m && m.innerText.includes('idle ') && "
                             "!m.innerText.includes('idle 0.0 s') && m.innerText; })()")
    assert "of 350 s" in meter
    browser.wait_for(f"{stamp} === 'visible'")
    assert f"forgotten at {expired:.1f} s" in browser.evaluate(
        "document.getElementById('meters').innerText")
    assert "PASS: client timeout, server reset" in browser.evaluate(
        "document.getElementById('stamp').textContent")
    shot = tmp_path / "page.png"
    browser.screenshot(shot)
    assert shot.stat().st_size > 20_000
    assert browser.errors() == []
