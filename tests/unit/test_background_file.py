"""The dataplane's status file is written off the packet loop
(``simulator/dataplane/background_file.py``):
a slow disk must not hold up packets, which the engine judges at the time it handles them."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bench.fuzz import SteppedClock
from simulator.core.appliances import get_appliance
from simulator.core.engine import Middlebox
from simulator.core.events import Side
from simulator.dataplane import background_file
from simulator.dataplane import packet_loop as dataplane
from simulator.dataplane.background_file import BackgroundFile
from simulator.dataplane.packet_loop import Dataplane
from simulator.support.results import replace_private

STALL = 0.5
"""Wall seconds each write takes here, as a rename over an existing file took on ext4."""


@pytest.fixture
def slow_disk(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    written: list[str] = []

    def slow_replace(path: Path, data: str | bytes, mode: int = 0o644) -> None:
        time.sleep(STALL)
        replace_private(path, data, mode)
        written.append(data if isinstance(data, str) else data.decode())

    monkeypatch.setattr(background_file, "replace_private", slow_replace)
    # wherever else the dataplane might write its status from (it once did, in its loop)
    monkeypatch.setattr(dataplane, "replace_private", slow_replace, raising=False)
    return written


def test_a_slow_status_write_does_not_hold_up_the_packet_loop(
        tmp_path: Path, slow_disk: list[str]) -> None:
    ports: Any = {Side.INSIDE: [], Side.OUTSIDE: []}
    plane = Dataplane(Middlebox(get_appliance("nat-gw")), SteppedClock(0.001), ports,
                      io.StringIO())
    plane.status_path = tmp_path / "status.json"
    started = time.monotonic()
    for _ in range(3):
        plane._write_status()
    took = time.monotonic() - started
    assert took < STALL / 2, f"the loop waited {took:.3f} s for the disk"
    assert plane._status_file is not None
    plane._status_file.close()
    status = json.loads(plane.status_path.read_text())
    assert status["appliance"] == "nat-gw"
    # the newest snapshot is written; versions given while a write was slow are skipped
    assert 1 <= len(slow_disk) <= 2


def test_close_writes_what_is_pending_and_ends_the_thread(tmp_path: Path) -> None:
    target = BackgroundFile(tmp_path / "f.json")
    for n in range(100):
        target.write(json.dumps({"n": n}))
    target.close()
    assert json.loads((tmp_path / "f.json").read_text()) == {"n": 99}
    assert not any(t.name == "write f.json" for t in threading.enumerate())


def test_a_write_that_fails_is_said_once_and_the_next_one_still_lands(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "run"
    target = BackgroundFile(folder / "status.json")
    target.write("{}")
    time.sleep(0.2)  # the folder does not exist: the write fails
    target.write("{}")
    time.sleep(0.2)
    folder.mkdir()
    target.write('{"ok": true}')
    target.close()
    assert capsys.readouterr().err.count("cannot write") == 1
    assert json.loads((folder / "status.json").read_text()) == {"ok": True}
