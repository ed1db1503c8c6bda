from __future__ import annotations

from pathlib import Path

import pytest

from simulator import rootless
from simulator.cli import main


def test_list_shows_scenarios_and_largest_safe_speed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "nat-gw-edge" in out and "largest safe 20" in out
    assert "AWS NAT Gateway" in out
    assert "model disagrees" not in out


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--help"])
    assert info.value.code == 0
    assert "--speed K" in capsys.readouterr().out


def test_unsafe_speed_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "nat-gw-edge", "--speed", "100"]) == 2
    assert "Largest safe speed: 20" in capsys.readouterr().err


def test_bad_scenario_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "nope"]) == 2
    assert "no such scenario" in capsys.readouterr().err


def test_rootless_errors_say_which_setting_and_how(tmp_path: Path) -> None:
    (tmp_path / "kernel").mkdir()
    (tmp_path / "user").mkdir()
    assert rootless.why_unavailable(tmp_path) is None
    (tmp_path / "user" / "max_user_namespaces").write_text("0\n")
    assert "sysctl -w user.max_user_namespaces=" in str(rootless.why_unavailable(tmp_path))
    (tmp_path / "kernel" / "unprivileged_userns_clone").write_text("0\n")
    assert "sysctl -w kernel.unprivileged_userns_clone=1" in str(
        rootless.why_unavailable(tmp_path))
    (tmp_path / "kernel" / "unprivileged_userns_clone").write_text("1\n")
    (tmp_path / "user" / "max_user_namespaces").write_text("100\n")
    (tmp_path / "kernel" / "apparmor_restrict_unprivileged_userns").write_text("1\n")
    assert "apparmor_restrict_unprivileged_userns=0" in str(rootless.why_unavailable(tmp_path))
