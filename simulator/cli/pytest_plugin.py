"""pytest plugin: put your own client behind a simulated appliance in a test.

Registered through the ``pytest11`` entry point, so installing natsim is enough::

    import pytest

    @pytest.mark.natsim(appliance="nat-gw", speed=50)
    def test_my_client_survives_a_400_second_wait(natsim_world):
        natsim_world.start("server", ["my-server", "--answer-after", "400"])
        natsim_world.wait_for_port("server", 8080)
        answer = natsim_world.call("client", my_client, "server", 8080)
        assert answer == b"done"

The ``natsim_world`` fixture builds client, middlebox and server namespaces for one test and
removes them afterwards (with every process the test started in them). The ``natsim`` marker
configures it:

* ``appliance`` (default ``nat-gw``), ``timeout`` (idle timeout, model seconds),
  ``late_from_outside`` (``rst`` or ``drop``), ``speed`` (default 50), ``sysctls`` (the
  client namespace's keepalive sysctls, model seconds);
* ``appliances=[...]`` parametrizes the test across appliances; each item is a catalogue
  name or a mapping ``{"name": ..., <overrides>}``;
* ``fail_on="unsafe"`` (or ``--natsim-fail-on unsafe``, ``natsim_fail_on = unsafe`` in the
  ini file, for every test): the test fails when the appliance killed one of its world's
  connections while it was in use (the capture replayed, as ``natsim down`` reports it),
  whatever the test asserted: the gate ``natsim matrix --fail-on unsafe`` is for a matrix;
* ``capture=False``: no ``capture.pcap`` (a capture has every frame cross the Python
  dataplane; without one, hot established flows take its compiled fast path: for tests
  that move a lot of data).
* ``ip="nat64"``: an IPv6-only client, the IPv4 server behind the NAT Gateway's NAT64 (the
  client's ``/etc/hosts`` names it ``server``, 64:ff9b::c613:10a); ``ip="6"``: both hosts
  IPv6-only behind a transparent appliance (``server`` is 2001:db8:2::10).

Everything a test starts in a host runs on the world's clock (:mod:`simulator.world.modeltime`):
programs given to ``start`` and ``run``, and functions given to ``call`` (in a fresh
interpreter; such a function must be importable, defined at a module's top level). Their
timeouts, sleeps and socket keepalive are model seconds, nobody tells them the speed, and
``scaled()`` lists the socket timers that were scaled for them. ``wall_time=True`` (on the
marker, or per call) runs on the wall clock instead, where :meth:`NatsimWorld.wall` turns
model seconds into the wall seconds to give them.

No verdict without a live middlebox: the world's middlebox is checked before and after
every call into the world (``run``, ``start``, ``call``, ``wait_for_port``, ``events``,
``status``) and asked for its final report at teardown. When it died, stalled or could not
report, the test fails (at teardown: an error), whatever the test itself concluded: a client
that times out because nothing forwards its packets proves nothing.

The fixture needs root (network namespaces); without it the test is skipped with a reason
that says so, never silently. In CI, where a skip would pass unnoticed, ``--natsim-require``
(or ``natsim_require = true`` in the ini file) makes it a failure.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from simulator.cli.replay import replay_world, unsafe
from simulator.core.appliances import Appliance, get_appliance
from simulator.core.jsonvalue import JsonObject
from simulator.core.path_events import PathKind
from simulator.core.replay import Fate
from simulator.spec.scenario import LINUX_KEEPALIVE_DEFAULTS
from simulator.world.live import LiveWorld, call_in, call_on_clock

T = TypeVar("T")

DEFAULT_SPEED = 50.0
FAIL_ON = ("none", "unsafe")


class NatsimWorld:
    """A live world for one test: run commands and functions in its hosts."""

    def __init__(self, live: LiveWorld, wall_time: bool = False) -> None:
        self.live = live
        self.wall_time = wall_time
        """The marker's default for what this test starts (model time unless it says)."""
        self._procs: list[subprocess.Popen[str]] = []

    def check(self, during: str = "") -> None:
        """Fail the test unless the world's middlebox is alive and its loop running."""
        health = self.live.health()
        if health is not None:
            pytest.fail(f"natsim: world {self.live.name}: {health}"
                        f"{f' (checked after {during})' if during else ''}: nothing crosses "
                        "it, so what the test saw proves nothing", pytrace=False)

    @property
    def speed(self) -> float:
        return self.live.speed

    @property
    def addresses(self) -> dict[str, str]:
        return self.live.addresses

    @property
    def results_dir(self) -> Path:
        return Path(self.live.results_dir)

    def wall(self, model_seconds: float) -> float:
        """Wall seconds for a duration in model seconds (``wall(400)`` at speed 50 is 8)."""
        return self.live.wall(model_seconds)

    def _model_time(self, wall_time: bool | None) -> bool:
        return not (self.wall_time if wall_time is None else wall_time)

    def run(self, host: str, argv: Sequence[str], wall_time: bool | None = None,
            **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run a command in ``host`` to completion (output captured as text), on the
        world's clock unless ``wall_time``."""
        self.check()
        done = self.live.run(host, argv, self._model_time(wall_time), **kwargs)
        self.check(f"run {list(argv)[:1]}")
        return done

    def start(self, host: str, argv: Sequence[str], wall_time: bool | None = None,
              **kwargs: Any) -> subprocess.Popen[str]:
        """Start a command in ``host`` in the background, on the world's clock unless
        ``wall_time``; it is killed when the test ends."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.STDOUT)
        self.check()
        proc = self.live.popen(host, argv, self._model_time(wall_time),
                               start_new_session=True, **kwargs)
        self._procs.append(proc)
        return proc

    def call(self, host: str, func: Callable[..., T], *args: object,
             wall_time: bool | None = None, **kwargs: object) -> T:
        """Run ``func(*args, **kwargs)`` inside ``host`` and return its result.

        On the world's clock, ``func`` runs in a fresh interpreter started in the host
        (so it must be importable: a module's top-level function); with ``wall_time``, in
        a forked child that has joined the host's namespace (any function, closures too).
        Either way its sockets are the host's, the name ``server`` resolves, and its
        exceptions come back raised.
        """
        self.check()
        if self._model_time(wall_time):
            value = call_on_clock(self.live, host, func, args, kwargs)
        else:
            value = call_in(self.live.namespace(host), func, args, kwargs)
        self.check(f"call {getattr(func, '__name__', func)}")
        return value

    def wait_for_port(self, host: str, port: int, timeout: float = 10.0) -> None:
        """Wait until something in ``host`` accepts TCP connections on ``port``."""
        self.check()
        if not call_in(self.live.namespace(host), _wait_for_local_port, (port, timeout),
                       limit=timeout + 5):
            raise TimeoutError(f"nothing listens on port {port} in {host} after {timeout:g} s")

    def events(self) -> list[dict[str, Any]]:
        """The middlebox's events so far (``kind``: flow_created, keepalive, flow_expired,
        dropped, rst_sent, ...)."""
        self.check()
        return self.live.events()

    def kinds(self) -> list[str]:
        return [str(e["kind"]) for e in self.events()]

    def expire(self, flow: int | None = None) -> None:
        """The appliance forgets flow number ``flow`` (every flow without it) now, as at its
        idle timeout: the next packet of it meets the late-packet rule (``natsim expire``)."""
        self.check()
        self.live.path_event(PathKind.EXPIRE, flow=flow)

    def restart(self) -> None:
        """The appliance restarts now: its flow table is lost (``natsim restart``)."""
        self.check()
        self.live.path_event(PathKind.RESTART)

    def replace(self) -> None:
        """The appliance is replaced now: flows lost, new public addresses."""
        self.check()
        self.live.path_event(PathKind.REPLACE)

    def blackhole(self, seconds: float) -> None:
        """Every packet is lost, silently, for ``seconds`` model seconds from now."""
        self.check()
        self.live.path_event(PathKind.BLACKHOLE, seconds)

    def status(self) -> dict[str, Any]:
        self.check()
        return self.live.status()

    def connections(self) -> list[JsonObject]:
        """Each connection of the world's capture so far, through its appliance's rules (as
        ``natsim replay`` tells them): ``verdict`` is ``untouched``, ``expired``,
        ``late-rst``, ``late-drop`` or ``late-pass``, with its idle gap and probes. Needs
        the capture (``capture=True``, the default)."""
        self.check()
        done = replay_world(self.live)
        if done is None:
            raise RuntimeError("natsim_world.connections() reads the world's capture: this "
                               "world has none (capture=False on the natsim marker)")
        return [c.to_dict() for c in done.connections]

    def scaled(self) -> list[JsonObject]:
        """The socket timers scaled for this test's programs (option, model and wall
        values, and what the wall value really is in model time)."""
        return self.live.scaled()

    def close(self) -> JsonObject | None:
        """Stop what the test started and remove the world; the middlebox's final report,
        or None when it could give none."""
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        return self.live.down()


def _wait_for_local_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        time.sleep(0.05)
    return False


def _appliance(spec: object, marker_kwargs: Mapping[str, object]) -> Appliance:
    if not isinstance(spec, Mapping):
        spec = {"name": str(spec)}
    overrides = {str(k): v for k, v in spec.items() if k != "name"}
    if "timeout" in marker_kwargs:
        overrides.setdefault("tcp_idle_timeout", marker_kwargs["timeout"])
        overrides.setdefault("udp_idle_timeout", marker_kwargs["timeout"])
    if "late_from_outside" in marker_kwargs:
        overrides.setdefault("late_from_outside", marker_kwargs["late_from_outside"])
    return get_appliance(str(spec.get("name", "nat-gw"))).with_overrides(overrides)


def _spec_id(spec: object) -> str:
    if not isinstance(spec, Mapping):
        return str(spec)
    extra = ",".join(f"{k}={v}" for k, v in spec.items() if k != "name")
    return f"{spec.get('name', 'nat-gw')}[{extra}]" if extra else str(spec.get("name"))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("natsim")
    group.addoption("--natsim-require", action="store_true", default=None,
                    help="fail, instead of skipping, a test whose natsim world cannot be "
                         "built here (no root): for CI, where a skip passes unnoticed")
    parser.addini("natsim_require", type="bool", default=False,
                  help="as --natsim-require")
    group.addoption("--natsim-fail-on", choices=FAIL_ON, default=None,
                    help="unsafe: fail a test when a connection of its world was killed by "
                         "the appliance while in use (the world's capture replayed: a packet "
                         "after the expiry met an RST or silence), whatever the test "
                         "asserted; as matrix --fail-on unsafe. Default none")
    parser.addini("natsim_fail_on", default="none", help="as --natsim-fail-on")


def _required(config: pytest.Config) -> bool:
    return bool(config.getoption("natsim_require") or config.getini("natsim_require"))


def _fail_on(config: pytest.Config, marker_kwargs: Mapping[str, object]) -> str:
    chosen = str(marker_kwargs.get("fail_on") or config.getoption("natsim_fail_on")
                 or config.getini("natsim_fail_on") or "none")
    if chosen not in FAIL_ON:
        raise pytest.UsageError(f"natsim fail_on={chosen!r}: give one of {', '.join(FAIL_ON)}")
    return chosen


def _unsafe_connections(live: LiveWorld) -> str | None:
    """Why the test fails under ``fail_on="unsafe"``: the connections of the world's capture
    that the appliance killed while they were in use (None: every one survived)."""
    done = replay_world(live)
    if done is None:
        return ("fail_on='unsafe' judges the world's capture through its appliance, and "
                "this world has no capture (capture=False) or no appliance record to replay "
                "it with")
    bad = unsafe(done)
    if not bad:
        return None
    lines = [f"  {c.name}: {c.fate}, expired at {c.expired_at:.1f} s, "
             f"the {c.late_from}'s packet at {c.late_at:.1f} s met "
             f"{'an RST' if c.fate is Fate.LATE_RST else 'silence'}" for c in bad[:10]]
    return (f"{len(bad)} connection(s) did not survive {done.appliance.title} (idle timeout "
            f"{done.appliance.tcp_idle_timeout:g} s; fail_on='unsafe'):\n" + "\n".join(lines))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "natsim(appliance='nat-gw', appliances=[...], timeout=S, late_from_outside='rst', "
        "speed=K, sysctls={...}, capture=True, wall_time=False, fail_on='none'): configure "
        "the natsim_world fixture",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("natsim")
    if marker is None or "natsim_world" not in metafunc.fixturenames:
        return
    specs = marker.kwargs.get("appliances")
    if specs:
        metafunc.parametrize("natsim_world", list(specs), indirect=True,
                             ids=[_spec_id(s) for s in specs])


@pytest.fixture
def natsim_world(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsimWorld]:
    """A client/middlebox/server world for this test, removed afterwards."""
    if os.geteuid() != 0:
        why = "natsim_world builds network namespaces and needs root (run the tests with sudo)"
        if _required(request.config):
            pytest.fail(f"{why}; --natsim-require turns this skip into a failure",
                        pytrace=False)
        pytest.skip(why)
    marker = request.node.get_closest_marker("natsim")
    kwargs: dict[str, Any] = dict(marker.kwargs) if marker else {}
    spec = getattr(request, "param", kwargs.get("appliance", "nat-gw"))
    fail_on = _fail_on(request.config, kwargs)
    appliance = _appliance(spec, kwargs)
    sysctls = dict(LINUX_KEEPALIVE_DEFAULTS)
    sysctls.update(kwargs.get("sysctls", {}))
    results = tmp_path_factory.mktemp("natsim")
    live = LiveWorld.up(f"pytest-{secrets.token_hex(3)}", appliance,
                        float(kwargs.get("speed", DEFAULT_SPEED)), sysctls, results,
                        capture=bool(kwargs.get("capture", True)),
                        ip=str(kwargs.get("ip", "4")))
    world = NatsimWorld(live, wall_time=bool(kwargs.get("wall_time", False)))
    try:
        yield world
    finally:
        final = world.close()
    if final is None:
        pytest.fail(f"natsim: world {live.name}: its middlebox gave no final report at the "
                    "end of the test (it died, was stopped or hung): what the test saw "
                    "cannot be trusted", pytrace=False)
    if fail_on == "unsafe" and (killed := _unsafe_connections(live)) is not None:
        pytest.fail(f"natsim: world {live.name}: {killed}", pytrace=False)
