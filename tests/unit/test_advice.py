from __future__ import annotations

from pathlib import Path

import pytest

from simulator.cli.main import main
from simulator.core.advice import check, suggested_keepalive
from simulator.core.appliances import get_appliance
from simulator.core.profiles import PROFILES, get_profile
from simulator.spec.scenario import ScenarioError, load_scenario


def test_every_profile_cites_its_source() -> None:
    for profile in PROFILES.values():
        assert profile.source, profile.name
        assert profile.keepalive in ("off", "os", "socket")
        if profile.keepalive == "socket":
            assert profile.idle and profile.interval and profile.count


def test_sdk_flag_without_os_tuning_fails_and_the_fix_is_the_sysctl() -> None:
    advice = check(get_appliance("nat-gw"), get_profile("boto3-tcp-keepalive"), idle=400)
    assert not advice.survives
    assert advice.keepalive_idle == 7200
    assert "net.ipv4.tcp_keepalive_time=300" in advice.fixes[0]


def test_the_same_flag_survives_once_the_sysctl_is_set() -> None:
    advice = check(get_appliance("nat-gw"), get_profile("boto3-tcp-keepalive"), idle=400,
                   sysctl_time=300)
    assert advice.survives and advice.fixes == []


def test_the_fix_is_in_the_librarys_own_words() -> None:
    advice = check(get_appliance("nat-gw"), get_profile("dotnet-socketshttphandler"), 400)
    assert not advice.survives
    assert "SocketOptionName.TcpKeepAliveTime, 300" in advice.fixes[0]
    # boto3 cannot set TCP_KEEPIDLE: its fix is its Config plus the sysctl, nothing generic
    boto = check(get_appliance("nat-gw"), get_profile("boto3-default"), 400)
    assert "Config(tcp_keepalive=True)" in boto.fixes[0]
    assert "tcp_keepalive_time=300" in boto.fixes[0]
    assert not any("SO_KEEPALIVE=1 and TCP_KEEPIDLE" in fix for fix in boto.fixes)
    libpq = check(get_appliance("gwlb"), get_profile("libpq-default"), 400)
    assert libpq.fixes == ["PostgreSQL libpq default: keepalives_idle=300 in the connection "
                           "string"]


def test_every_profile_carries_its_fix() -> None:
    from simulator.core.profiles import PROFILES  # noqa: PLC0415

    assert [p.name for p in PROFILES.values() if "{idle" not in p.fix] == []


def test_keepalive_too_slow_for_azure() -> None:
    advice = check(get_appliance("azure-nat-gw"), get_profile("dotnet-connectcallback-300"),
                   idle=280)
    assert not advice.survives  # 300 s is fine for AWS, too slow for Azure's 240 s
    assert "from 300 s to 190 s" in advice.fixes[0]
    assert "TcpKeepAliveTime 190 in the ConnectCallback" in advice.fixes[0]


def test_configured_nlb_needs_nothing() -> None:
    nlb = get_appliance("nlb").with_overrides({"tcp_idle_timeout": 1000})
    assert check(nlb, get_profile("dotnet-socketshttphandler"), idle=900).survives


def test_suggestion_is_below_the_timeout() -> None:
    for timeout in (60.0, 240.0, 350.0, 1200.0, 432000.0):
        assert 0 < suggested_keepalive(timeout) < timeout


def test_scenario_profile_field(tmp_path: Path) -> None:
    s = load_scenario("nat-gw-go-dialer")
    assert (s.keepalive.mode, s.keepalive.idle) == ("socket", 15)
    bad = tmp_path / "bad.yaml"
    bad.write_text("appliance: nat-gw\nclient: {profile: cobol}\nserver: {delay: 1}\n"
                   "expect: {client: answer, server: delivered}\n")
    with pytest.raises(ScenarioError, match=r"client.profile: unknown client profile 'cobol'"):
        load_scenario(str(bad))


def test_check_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--client-profile", "go-net-dialer", "--idle", "400"]) == 0
    assert "SURVIVES" in capsys.readouterr().out
    assert main(["check", "--client-profile", "java-sdk-apache", "--appliance", "gwlb",
                 "--idle", "400"]) == 1
    out = capsys.readouterr().out
    assert "FAILS" in out and "dropped" in out
    assert main(["check", "nat-gw"]) == 1  # as the file expects: the client does not survive
    assert "the model agrees" in capsys.readouterr().out
    assert main(["check", "--appliance", "nope", "--idle", "1"]) == 2
