from __future__ import annotations

from pathlib import Path

import pytest

from simulator.cli.main import main
from simulator.world import rootless


def test_list_shows_scenarios_and_largest_safe_speed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "nat-gw-edge" in out and "safe up to 20" in out
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


def test_a_typo_suggests_the_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "nat-gww"]) == 2
    assert "did you mean nat-gw?" in capsys.readouterr().err
    assert main(["check", "--appliance", "nat-gateway", "--idle", "400"]) == 2
    assert "did you mean nat-gw?" in capsys.readouterr().err


def test_check_says_one_thing_about_the_keepalive_time(
        capsys: pytest.CaptureFixture[str]) -> None:
    main(["check", "--keepalive-time", "300", "--idle", "400"])
    out = capsys.readouterr().out
    assert "after 300 s idle" in out and "7200" not in out


def test_the_demo_tells_simultaneous_steps_in_the_same_order_in_both_columns() -> None:
    import io  # noqa: PLC0415

    from simulator.views.demo import LEFT, RIGHT, Columns, _print_rows  # noqa: PLC0415

    created = {"source": "middlebox", "kind": "flow_created"}
    sent = {"source": "client", "kind": "request_sent"}
    out = io.StringIO()
    # the two runs' lines at t = 0 arrive in opposite orders
    _print_rows(Columns(out, 120), [(0.0, LEFT, sent), (0.0, LEFT, created),
                                    (0.01, RIGHT, created), (0.02, RIGHT, sent)])
    rows = [line for line in out.getvalue().splitlines() if line[:8].strip()]  # stamped
    assert len(rows) == 2  # each step once, both columns side by side
    assert "connects" in rows[0] and "request" in rows[1]


@pytest.mark.parametrize("args,field", [
    (["--idle", "-5"], "--idle"),  # answered "SURVIVES at -5 s"
    (["--idle", "0"], "--idle"),
    (["--idle", "nan"], "--idle"),
    (["--idle", "400", "--timeout", "-1"], "--timeout"),
    (["--idle", "400", "--client-timeout", "inf"], "--client-timeout"),
    (["--idle", "400", "--keepalive-time", "-30"], "--keepalive-time"),
    (["nat-gw", "--idle", "400"], "--idle"),  # silently ignored before
    (["nat-gw", "--appliance", "nlb"], "--appliance"),
    (["nat-gw", "--client-profile", "curl-default"], "--client-profile"),
])
def test_check_refuses_meaningless_numbers_and_flags_it_would_ignore(
        args: list[str], field: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", *args]) == 2
    err = capsys.readouterr().err
    assert field in err and "SURVIVES" not in err


def test_check_still_answers_with_its_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--idle", "400"]) == 1  # linux-so-keepalive behind nat-gw: fails
    assert "FAILS" in capsys.readouterr().out
    assert main(["check", "nat-gw"]) == 1  # the model agrees: the client does not survive
    assert main(["check", "nat-gw-keepalive"]) == 0
    assert main(["check", "nat-gw-idle-pool"]) == 0  # reset, then the retry is answered


@pytest.mark.parametrize(("profile", "appliance", "code", "words"), [
    ("requests-urllib3", "nat-gw", 1, "FAILS: the reused request: reset, at once"),
    ("requests-urllib3", "gwlb", 1, "TCP_USER_TIMEOUT"),  # the 926 s hang, and its bound
    ("httpx", "gwlb", 0, "the pool closes connection 1, idle 399.5 s (over 5 s)"),
    ("hikaricp", "global-accelerator", 0, "pings idle connections every 120 s"),
    ("hikaricp-keepalive-0", "gwlb", 0, "timeout+answer, after 5.5 s"),
    ("kafka-java", "nat-gw", 0, "reset+answer"),
    ("kafka-java", "gwlb", 1, "retransmit_timeout"),
])
def test_check_answers_the_pool_question(profile: str, appliance: str, code: int, words: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--client-profile", profile, "--appliance", appliance,
                 "--reuse-after", "400"]) == code
    assert words in capsys.readouterr().out


def test_check_takes_one_question_at_a_time(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--idle", "400", "--reuse-after", "400"]) == 2
    assert "--idle" in capsys.readouterr().err
    assert main(["check", "nat-gw", "--reuse-after", "400"]) == 2
    assert main(["check", "--reuse-after", "-1"]) == 2


def test_the_idle_pool_narration_counts_retransmissions_per_column() -> None:
    """The first drop is the request, each later one a retransmission; an RST appliance's
    drop (before its RST) is not told as a silent drop."""
    import io  # noqa: PLC0415

    from simulator.core.jsonvalue import Json  # noqa: PLC0415
    from simulator.views.demo import Columns, _print_rows, idle_pool_story  # noqa: PLC0415
    from simulator.views.demo_pool import RESET_POOL, SILENT_POOL  # noqa: PLC0415

    story = idle_pool_story()
    drop: dict[str, Json] = {"source": "middlebox", "kind": "dropped", "side": "inside"}
    sent: dict[str, Json] = {"source": "client", "kind": "request_sent", "request": 2,
                             "attempt": 1, "t": 400}
    gave_up: dict[str, Json] = {"source": "client", "kind": "retransmit_timeout",
                                "request": 2, "attempt": 1, "t": 1325}
    out = io.StringIO()
    _print_rows(Columns(out, 200, 3), [
        (400.0, SILENT_POOL, sent), (400.0, RESET_POOL, drop), (400.0, SILENT_POOL, drop),
        (400.2, SILENT_POOL, drop), (400.6, SILENT_POOL, drop), (1325.0, SILENT_POOL, gave_up),
    ], story)
    text = out.getvalue()
    assert text.count("drops the request silently") == 1
    assert "retransmits it" in text and "Retransmission 2: dropped" in text
    assert "ETIMEDOUT, 925 s after the request" in text
    with pytest.raises(ValueError, match="idle-pool"):
        from simulator.views.demo import get_story  # noqa: PLC0415

        get_story("idle")


def test_the_demo_tells_the_clients_timeout_before_the_rst_its_fin_meets() -> None:
    import io  # noqa: PLC0415

    from simulator.views.demo import LEFT, Columns, _print_rows  # noqa: PLC0415

    rst = {"source": "middlebox", "kind": "rst_sent", "side": "inside"}
    gave_up = {"source": "client", "kind": "timeout"}
    out = io.StringIO()
    _print_rows(Columns(out, 120), [(900.6, LEFT, rst), (900.7, LEFT, gave_up)])
    text = out.getvalue()
    assert text.index("gives up at 900 s") < text.index("RST to the client")


@pytest.mark.parametrize("story", ["slow-answer", "idle-pool"])
def test_the_demo_fits_an_80_column_terminal(story: str) -> None:
    import io  # noqa: PLC0415

    from simulator.views.demo import Columns, demo_header, get_story  # noqa: PLC0415

    told = get_story(story)
    header = demo_header(told, told.speed, 80)
    assert "The three runs happen now" in header  # both stories tell three runs
    out = io.StringIO()
    cols = Columns(out, 80, len(told.columns))
    cols.row("model s", *(told.headings[n] for n in told.columns))
    cols.rule()
    cols.row("350", *("the NAT Gateway forgets the connection: 350 s without a packet"
                      for _ in told.columns))
    lines = header.splitlines() + out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80, "\n".join(lines)
    assert len(out.getvalue().splitlines()) > 4  # the cells wrapped within their columns
