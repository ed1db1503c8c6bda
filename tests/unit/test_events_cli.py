"""``natsim events`` and the GONE rows of ``natsim status``, from a world's files alone."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from simulator.cli.events import gone_lines, line_of, show
from simulator.world.live import LiveWorld, WorldError


def world(tmp_path: Path, events: list[dict[str, object]], speed: float = 100) -> LiveWorld:
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return LiveWorld(name="w", run_id="r", speed=speed, appliance={"title": "t"},
                     namespaces={}, addresses={}, results_dir=str(tmp_path),
                     middlebox_pid=0, started="")


EVENTS: list[dict[str, object]] = [
    {"source": "middlebox", "kind": "ready", "text": ""},
    {"t": 1.0, "source": "middlebox", "kind": "flow_created", "flow": 1, "proto": "TCP",
     "client": "198.18.1.10:1", "server": "198.19.1.10:80", "public": "203.0.113.1:1024",
     "text": "new TCP flow #1"},
    {"t": 2.0, "source": "middlebox", "kind": "flow_created", "flow": 2, "proto": "TCP",
     "client": "198.18.1.10:2", "server": "198.19.1.10:80", "public": "203.0.113.1:1025",
     "text": "new TCP flow #2"},
    {"t": 351.0, "source": "middlebox", "kind": "flow_expired", "flow": 1,
     "text": "flow #1 expired after 350 s idle (nothing sent to either side)"},
]


def test_a_flow_gone_lately_is_kept_marked_then_dropped(tmp_path: Path) -> None:
    live = world(tmp_path, EVENTS)
    rows = gone_lines(live, {"t": 400.0, "flows": [{"flow": 2}]})
    assert len(rows) == 1 and "#1" in rows[0] and "GONE 49 s ago" in rows[0]
    assert "198.18.1.10:1" in rows[0] and "expired after 350 s idle" in rows[0]
    # ten wall seconds later (1000 model s at speed 100) it is no longer shown
    assert gone_lines(live, {"t": 1400.0, "flows": [{"flow": 2}]}) == []
    # a flow still in the table is never GONE
    assert gone_lines(live, {"t": 400.0, "flows": [{"flow": 1}, {"flow": 2}]}) == []


def test_events_print_the_story_without_the_middleboxs_own_lines(tmp_path: Path) -> None:
    out = io.StringIO()
    assert show(world(tmp_path, EVENTS), follow=False, as_json=False, out=out) == 0
    text = out.getvalue()
    assert "ready" not in text and text.count("\n") == 3
    assert line_of(EVENTS[3]) in text and "    351.0  middlebox" in text
    raw = io.StringIO()
    show(world(tmp_path, EVENTS), follow=False, as_json=True, out=raw)
    assert [json.loads(x)["kind"] for x in raw.getvalue().splitlines()] == [
        "flow_created", "flow_created", "flow_expired"]


def test_without_a_name_the_default_world_is_meant_even_beside_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Someone else's world on the machine does not break `natsim exec client -- ...`
    after a `natsim up` without a name."""
    def state(name: str) -> Path:
        return tmp_path / f"{name}.json"

    for name in ("theirs", "default"):
        record: dict[str, object] = {
            "name": name, "run_id": "r0123456789", "speed": 100, "appliance": {},
            "namespaces": {}, "addresses": {}, "results_dir": str(tmp_path),
            "middlebox_pid": 0, "started": ""}
        state(name).write_text(json.dumps(record))
        state(name).chmod(0o600)
    monkeypatch.setattr(LiveWorld, "state_file", staticmethod(state))
    monkeypatch.setattr(LiveWorld, "names", classmethod(lambda cls: ["theirs", "default"]))
    assert LiveWorld.load().name == "default"
    monkeypatch.setattr(LiveWorld, "names", classmethod(lambda cls: ["theirs", "mine"]))
    with pytest.raises(WorldError, match=r"no world called default is up .*say which with"):
        LiveWorld.load()
    # the only world up is someone else's: never theirs (`natsim down` would remove it)
    monkeypatch.setattr(LiveWorld, "names", classmethod(lambda cls: ["theirs"]))
    with pytest.raises(WorldError, match=r"no world called default is up \(up: theirs\)"):
        LiveWorld.load()


def test_picture_labels_never_read_minus_zero() -> None:
    from simulator.views.timeline import seconds_label  # noqa: PLC0415

    assert seconds_label(-0.2) == "0 s"  # a few ms before the request
    assert seconds_label(-0.6) == "-1 s" and seconds_label(350.4) == "350 s"
