"""The one world driver, on the fake backend: its start order, its ready-wait, its watch on
the middlebox and its teardown, with no root and no capability, in virtual time.

Each stage is tested by what goes wrong without it: a middlebox or a server that takes
seconds to be ready is waited for (a driver that did not wait would have the client's SYN
dropped, or refused); a middlebox that dies or hangs makes the run an ERROR; every program
is stopped and the world destroyed whatever happened.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from simulator.core.appliances import get_appliance
from simulator.core.configs import ClientConfig, Port, ServerConfig
from simulator.core.messages import Kind, Message, MiddleboxStopped, Role, Verdict
from simulator.core.plan import keepalive_sysctls, middlebox_config, world_plan
from simulator.runs.runner import RunResult, run_scenario
from simulator.spec.scenario import LINUX_KEEPALIVE_DEFAULTS, load_scenario
from simulator.support.results import Folder
from simulator.world import driver as driver_module
from simulator.world.backends.fake import FakeBackend
from simulator.world.driver import MiddleboxFailedError, StartError, WorldDriver
from simulator.world.process import Program


def run(name: str, tmp: Path, backend: FakeBackend, pictures: bool = False) -> RunResult:
    return run_scenario(load_scenario(name), results_dir=tmp / "results", out=io.StringIO(),
                        backend=backend, pictures=pictures)


def test_a_whole_scenario_through_natsim_runs_driver(tmp_path: Path) -> None:
    """What ``natsim run`` does, files and pictures included, on the fake backend."""
    backend = FakeBackend()
    result = run("nat-gw", tmp_path, backend, pictures=True)
    assert result.verdict == Verdict.PASS and result.judgement.model_agrees
    assert (result.client, result.server) == ("timeout", "reset")
    written = {p.name for p in (tmp_path / "results").iterdir()}
    assert {"result.json", "timeline.png", "ladder.png", "logs"} <= written
    assert len(backend.destroyed) == 1


@pytest.mark.parametrize("late", ["middlebox", "server"])
def test_the_driver_waits_for_each_program_to_be_ready(late: str, tmp_path: Path) -> None:
    """A middlebox that takes 3 s to bind its ports, or a server 3 s to listen: the client
    starts after, so its connection goes through (without the wait, its SYNs would be
    dropped for 10 s, or refused, and the run would FAIL)."""
    result = run("nat-gw-keepalive", tmp_path, FakeBackend(startup={late: 3.0}))
    assert result.verdict == Verdict.PASS, (result.client, result.server)
    assert not [e for e in result.events if e.kind == Kind.CONNECT_FAILED]


def test_without_the_wait_the_client_would_have_failed(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The test above can fail: with the ready-wait taken out of the driver, the same run
    starts the client before the middlebox forwards, and its connection fails."""
    real = WorldDriver.wait_ready

    def no_wait(self: WorldDriver, program: Program) -> tuple[Message, list[Message]]:
        if program is self.middlebox:
            return real(self, program)
        return Message(program.role, Kind.READY), []

    monkeypatch.setattr(WorldDriver, "wait_ready", no_wait)
    result = run("nat-gw-keepalive", tmp_path, FakeBackend(startup={"server": 3.0}))
    assert result.verdict == Verdict.FAIL and result.client == "connect_failed"


def test_a_middlebox_that_never_gets_ready_is_an_error_not_a_verdict(tmp_path: Path) -> None:
    result = run("nat-gw", tmp_path, FakeBackend(startup={"middlebox": 60.0}))
    assert result.verdict == Verdict.ERROR
    assert "gave no 'ready' line within 15 s" in (result.error or "")


def test_a_server_that_never_listens_stops_the_run_naming_it(tmp_path: Path) -> None:
    backend = FakeBackend(startup={"server": 60.0})
    with pytest.raises(StartError, match="the server did not start"):
        run("nat-gw", tmp_path, backend)
    assert len(backend.destroyed) == 1  # the world is gone all the same
    assert all(p.poll() is not None for p in backend.programs)


@pytest.mark.parametrize(("knob", "said"), [
    ("die_at", "the middlebox was killed by signal 9 during the run"),
    ("hang_at", "the middlebox stopped responding (no heartbeat for"),
])
def test_a_middlebox_that_dies_or_hangs_mid_run_makes_it_an_error(knob: str, said: str,
                                                                  tmp_path: Path) -> None:
    """5 s of wall time after it is ready: inside the client's wait for its answer."""
    backend = FakeBackend(die_at=5.0) if knob == "die_at" else FakeBackend(hang_at=5.0)
    result = run("nat-gw", tmp_path, backend)
    assert result.verdict == Verdict.ERROR
    assert said in (result.error or "")


def test_every_program_is_stopped_and_the_world_destroyed(tmp_path: Path) -> None:
    backend = FakeBackend()
    result = run("nat-gw-keepalive", tmp_path, backend)
    assert result.verdict == Verdict.PASS
    assert len(backend.destroyed) == 1
    assert {p.role for p in backend.programs} == {Role.MIDDLEBOX, Role.SERVER, Role.CLIENT}
    assert all(p.poll() is not None for p in backend.programs)
    # the middlebox was asked to stop and answered with its counters: a clean end
    assert result.counters.get("ActiveConnectionCount", 0) >= 0
    assert result.judgement.error is None


def test_a_middlebox_that_gives_no_final_report_makes_it_an_error(tmp_path: Path) -> None:
    """Hung 1.7 s before the end of the story (nat-gw's client gives up at 25.7 s wall),
    too late for the heartbeat check to tell: asked to stop, it does not answer."""
    backend = FakeBackend(hang_at=24.0)
    result = run("nat-gw", tmp_path, backend)
    assert (result.client, result.server) == ("timeout", "reset")  # what it would have said
    assert result.verdict == Verdict.ERROR
    assert result.error == ("the middlebox gave no final report at the end of the run: it "
                            "did not answer the request to stop (stopped or hung), and was "
                            "killed")


def test_up_style_start_a_program_exec_into_it_status_down(tmp_path: Path) -> None:
    """``natsim up`` is the same driver left running: a world, its middlebox, a server a
    user started and a client they exec'd, the middlebox's health while they talk, and at
    ``down`` its final report -- all without root."""
    backend = FakeBackend()
    folder = Folder.create(tmp_path / "world")
    driver = WorldDriver(backend, folder)
    plan = world_plan("fakeup1", keepalive_sysctls(LINUX_KEEPALIVE_DEFAULTS, 35.0),
                      server_sysctls=keepalive_sysctls(LINUX_KEEPALIVE_DEFAULTS, 35.0))
    world = driver.build(plan)
    inside, outside = world.ports()
    ready, _ = driver.start_middlebox(middlebox_config([get_appliance("nat-gw")], 35.0,
                                                       inside, outside, heartbeat=True))
    assert ready.kind == Kind.READY and "origin" in ready.data
    driver.start_program(Role.SERVER, world.server_ns, ServerConfig(
        port=8080, delay=1.0, delay_label="35 s", answer="hello", wait_limit=5.0))
    client, started, _ = driver.start_program(Role.CLIENT, world.client_ns, ClientConfig(
        host="server", port=8080, request="GET", timeout=5.0, keepalive="off"))
    assert started is not None and started.kind == Kind.READY
    said: list[tuple[str, str]] = []
    deadline = driver.now() + 10
    while client.poll() is None and driver.now() < deadline:
        assert driver.trouble() is None  # status: alive, beating
        said += [(p.role, m.kind) for p, m in driver.take()]
        driver.wait(0.1)
    said += [(p.role, m.kind) for p, m in driver.take()]
    assert (Role.CLIENT, Kind.ANSWER) in said
    assert (Role.MIDDLEBOX, "flow_created") in said
    final = [m for p, m in driver.stop_all() if m.kind == Kind.STOPPED]
    driver.destroy()
    folder.close()
    assert final and final[0].payload(MiddleboxStopped).counters["ActiveConnectionCount"] >= 1
    assert backend.destroyed == ["fakeup1"]


def test_start_middlebox_refuses_before_build(tmp_path: Path) -> None:
    driver = WorldDriver(FakeBackend(), Folder.create(tmp_path / "w"))
    with pytest.raises(AssertionError, match="build"):
        driver.start_middlebox(middlebox_config([get_appliance("nat-gw")], 1.0,
                                                *_ports()))


def _ports() -> tuple[Port, list[Port]]:
    return Port("inside", "02:00:00:00:00:02"), [Port("outside", "02:00:00:00:00:03")]


def test_a_middlebox_failure_is_its_own_error_type(tmp_path: Path) -> None:
    folder = Folder.create(tmp_path / "w")
    driver = WorldDriver(FakeBackend(startup={"middlebox": 30.0}), folder)
    world = driver.build(world_plan("fakeup2", {}))
    inside, outside = world.ports()
    with pytest.raises(MiddleboxFailedError, match="before the run could start"):
        driver.start_middlebox(middlebox_config([get_appliance("nat-gw")], 1.0, inside,
                                                outside))
    driver.destroy()
    folder.close()


def test_stop_all_asks_then_kills_what_will_not_stop(tmp_path: Path) -> None:
    """A hung middlebox does not answer SIGTERM: after the grace period it is killed, before
    the world is destroyed (a process left running would keep its sockets)."""
    backend = FakeBackend(hang_at=1.0)
    folder = Folder.create(tmp_path / "w")
    driver = WorldDriver(backend, folder)
    world = driver.build(world_plan("fakeup3", {}))
    inside, outside = world.ports()
    driver.start_middlebox(middlebox_config([get_appliance("nat-gw")], 35.0, inside, outside))
    server, _, _ = driver.start_program(Role.SERVER, world.server_ns, ServerConfig(
        port=8080, delay=1.0, delay_label="35 s", answer="a", wait_limit=60.0))
    while driver.now() < 2.0:  # the middlebox hangs at 1 s
        list(driver.take())
        driver.wait(0.1)
    before = driver.now()
    said = driver.stop_all()
    assert driver.middlebox is not None and driver.middlebox.poll() == -9  # killed
    assert server.poll() == -15  # stopped when asked
    assert driver.now() - before >= driver_module.STOP_GRACE  # it was given its chance
    assert not [m for _, m in said if m.kind == Kind.STOPPED]
    assert backend.destroyed == []  # not yet: the world goes after its programs
    driver.destroy()
    folder.close()
    assert backend.destroyed == ["fakeup3"]


def test_a_user_can_never_get_the_fake_backend() -> None:
    """A fake kernel never gives a user's verdict: only the unit suite builds one."""
    from simulator.world.backends import BackendError, get_backend  # noqa: PLC0415

    with pytest.raises(BackendError, match="never gives a user's verdict"):
        get_backend("fake")
