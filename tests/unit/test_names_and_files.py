"""Names and files that an ordinary user could plant or pass must not steer root: world names
by one rule, state files with explicit modes, results never written through a symlink, and
``make scenario NAME=...`` passed to natsim as one argument."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from simulator.support import results
from simulator.support.results import ResultsError
from simulator.world import live as world
from simulator.world import topology
from simulator.world.live import LiveWorld, WorldError, check_name

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["../../tmp/x", "a/b", "..", "", "-x", "A", "x" * 21,
                                  "dup\n", "wörld"])
def test_world_names_that_are_paths_or_odd_are_refused_everywhere(name: str) -> None:
    with pytest.raises(WorldError, match="world name"):
        check_name(name)
    with pytest.raises(WorldError, match="world name"):
        LiveWorld.load(name)
    with pytest.raises(WorldError, match="world name"):
        LiveWorld.state_file(name)


@pytest.fixture
def worlds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "worlds"
    folder.mkdir(mode=0o755)
    monkeypatch.setattr(world, "WORLDS", folder)
    return folder


def _state(name: str, run_id: str = "abc123") -> str:
    return json.dumps({"name": name, "run_id": run_id, "speed": 35.0, "appliance": {},
                       "namespaces": {}, "addresses": {}, "results_dir": "/nonexistent",
                       "middlebox_pid": 1, "started": "now"})


def test_a_planted_state_file_is_not_trusted(worlds: Path) -> None:
    (worlds / "mine.json").write_text(_state("mine"))
    os.chmod(worlds / "mine.json", 0o666)  # anyone could have written it
    with pytest.raises(WorldError, match="not natsim's own"):
        LiveWorld.load("mine")
    os.chmod(worlds / "mine.json", 0o644)
    assert LiveWorld.load("mine").name == "mine"
    (worlds / "other.json").symlink_to(worlds / "mine.json")
    assert "other" not in LiveWorld.names()
    with pytest.raises(WorldError, match="no world named"):
        LiveWorld.load("other")


def test_a_state_file_naming_another_world_or_a_path_is_refused(worlds: Path) -> None:
    (worlds / "mine.json").write_text(_state("theirs"))
    with pytest.raises(WorldError, match="names another world"):
        LiveWorld.load("mine")
    (worlds / "mine.json").write_text(_state("mine", run_id="../../etc"))
    with pytest.raises(WorldError, match="names another world"):
        LiveWorld.load("mine")


def test_state_files_get_explicit_modes_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        target = tmp_path / "state.json"
        results.replace_private(target, "{}")
        folder = tmp_path / "registry"
        topology.private_dir(folder)
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o644
    assert folder.stat().st_mode & 0o777 == 0o755


def test_results_are_never_written_through_a_planted_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    planted = tmp_path / "shared"
    planted.mkdir()
    (planted / "result.json").symlink_to(victim)
    with pytest.raises(ResultsError, match="not empty"):
        results.Folder.create(planted)
    with pytest.raises(OSError):
        results.write_private(planted / "result.json", "{}")
    with results.Folder.create(planted, reuse=True) as folder:  # a matrix resumes in place
        with pytest.raises(ResultsError, match="symbolic link"):
            folder.write("result.json", "{}")
        (planted / "cells").symlink_to(tmp_path)
        with pytest.raises(ResultsError, match="symbolic link"):
            folder.sub("cells")
        folder.remove("cells")  # the link goes, never what it points to
    assert victim.read_text() == "precious" and tmp_path.is_dir()
    assert not (planted / "cells").exists()


def test_results_folder_rules(tmp_path: Path) -> None:
    with results.Folder.create(tmp_path / "a" / "b") as fresh:
        assert fresh.path.is_dir() and fresh.path.stat().st_mode & 0o777 == 0o755
        assert (tmp_path / "a").stat().st_mode & 0o777 == 0o755
    with results.Folder.create(tmp_path / "a" / "b") as again:  # still empty: fine
        assert again.path == fresh.path
    link = tmp_path / "link"
    link.symlink_to(fresh.path)
    with pytest.raises(ResultsError, match="symbolic link"):
        results.Folder.create(link)
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    with pytest.raises(ResultsError, match="other users"):
        results.Folder.create(open_dir)
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(ResultsError, match="not a directory"):
        results.Folder.create(file)


def test_a_folder_whose_parent_others_can_write_is_refused(tmp_path: Path) -> None:
    """Another user could swap the new folder for one full of links while the run goes:
    refused unless the parent has the sticky bit (as /tmp has)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(ResultsError, match=f"{shared} can be written by other users"):
        results.Folder.create(shared / "run")
    with pytest.raises(ResultsError, match="other users"):
        results.Folder.create(shared / "deeper" / "run")
    assert not (shared / "run").exists() and not (shared / "deeper").exists()
    os.chmod(shared, 0o1777)
    with results.Folder.create(shared / "run") as folder:
        folder.write("result.json", "{}")
    assert (shared / "run" / "result.json").read_text() == "{}"


def test_writes_go_through_the_descriptor_not_the_path(tmp_path: Path) -> None:
    """Once open, the folder is the one checked: renaming it away and putting another in
    its place changes nothing about where the files go."""
    with results.Folder.create(tmp_path / "run") as folder:
        (tmp_path / "run").rename(tmp_path / "moved")
        (tmp_path / "run").mkdir()
        folder.write("result.json", "{}")
        with folder.sub("logs") as logs:
            logs.write("client.stderr", "x")
        folder.replace("result.json", "{1}")
        assert folder.read_text("result.json") == "{1}"
    assert sorted(p.name for p in (tmp_path / "moved").iterdir()) == ["logs", "result.json"]
    assert not any((tmp_path / "run").iterdir())


def test_a_requested_file_is_written_only_where_it_is_safe(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "rows.json").symlink_to(victim)
    with pytest.raises(ResultsError, match="symbolic link"), \
            results.new_file(tmp_path / "rows.json") as f:
        f.write("[]")
    assert victim.read_text() == "precious"
    with results.new_file(tmp_path / "ok.json") as f:
        f.write("[]")
    assert (tmp_path / "ok.json").read_text() == "[]"


def test_default_results_follow_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.setenv(results.RESULTS_VAR, str(tmp_path))
    assert results.default_dir("nat-gw", "abc123").parent == tmp_path


def test_run_prefix_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(topology.RUN_PREFIX_VAR, "ok12")
    assert topology.new_run_id().startswith("ok12")
    assert topology.RUN_ID_RE.fullmatch(topology.new_run_id())
    monkeypatch.setenv(topology.RUN_PREFIX_VAR, "../x")
    with pytest.raises(topology.TopologyError):
        topology.new_run_id()


@pytest.mark.skipif(not (REPO / ".venv" / "bin" / "natsim").exists() or not shutil.which("make"),
                    reason="needs `make setup` (the Makefile's natsim)")
def test_make_passes_name_as_one_argument(tmp_path: Path) -> None:
    marker = tmp_path / "F"
    done = subprocess.run(["make", "-s", "scenario", f"NAME=x; touch {marker}"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)
    assert not marker.exists(), done.stdout + done.stderr
    assert done.returncode != 0  # natsim refused the name, and make says so
    assert "no such scenario" in done.stderr


def test_the_final_report_is_found_however_long_it_is(tmp_path: Path) -> None:
    """The middlebox's last line lists every flow it still holds: 10,000 closed flows made
    it 518 KB, past what a fixed tail read, and `natsim down` called a clean stop a failure."""
    live = LiveWorld(**{**json.loads(_state("w")), "results_dir": str(tmp_path)})
    events = tmp_path / "events.jsonl"
    flows = [{"flow": i, "state": "CLOSING", "idle": 1.0} for i in range(20_000)]
    stopped = json.dumps({"kind": "stopped", "counters": {"IdleTimeoutCount": 3},
                          "flows": flows})
    assert len(stopped) > 900_000
    events.write_text('{"kind": "ready"}\n' + '{"kind": "flow_created"}\n' * 50)
    assert live.final_report() is None  # still running
    with events.open("a") as f:
        f.write(stopped[:300_000])  # being written
    assert live.final_report() is None
    events.write_text('{"kind": "ready"}\n' + stopped + "\n")
    report = live.final_report()
    assert report is not None and report["counters"] == {"IdleTimeoutCount": 3}
