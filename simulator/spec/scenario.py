"""Scenario files: what a scenario is, and loading one with every field checked.

A scenario is a YAML file in ``scenarios/`` written in model seconds (see README, "Scenario
files"). Loading checks every field (:mod:`simulator.spec.fields`) and raises
:class:`ScenarioError` naming the file, the field and what is allowed. What a scenario
becomes at a given speed is :mod:`simulator.spec.compression`.
"""

from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from simulator.core.appliances import (
    Appliance,
    ApplianceError,
    get_appliance,
)
from simulator.core.messages import ClientOutcome, LoadCounts, ServerOutcome
from simulator.core.path_events import PathEvent, PathKind
from simulator.core.plan import IP_MODES, ip_refusal
from simulator.core.pool_model import PoolExchange, PoolModelError, predict_pool
from simulator.core.profiles import get_profile
from simulator.core.retransmission import Retransmission
from simulator.spec.fields import (
    ScenarioError,
    choice,
    integer,
    mapping,
    number,
    read_yaml,
    text,
)
from simulator.spec.path_fields import parse_events
from simulator.spec.pool_fields import SCRIPT_FIELDS, parse_script


def _shipped_scenarios() -> Path:
    """A clone's ``scenarios/``; an installed wheel's copy under ``share/natsim`` (the
    wheel's data files land in the environment's prefix)."""
    clone = Path(__file__).resolve().parents[2] / "scenarios"
    installed = Path(sys.prefix) / "share" / "natsim" / "scenarios"
    return clone if clone.is_dir() or not installed.is_dir() else installed


SCENARIO_DIR = Path(os.environ.get("NATSIM_SCENARIOS") or _shipped_scenarios())
"""The shipped scenarios (the repository's, or an installed wheel's; natsim's image sets
``NATSIM_SCENARIOS``)."""

CLIENT_OUTCOMES = tuple(map(str, (ClientOutcome.ANSWER, ClientOutcome.TIMEOUT,
                                   ClientOutcome.RESET, ClientOutcome.KEEPALIVE_FAILED,
                                   ClientOutcome.CONNECT_FAILED, ClientOutcome.CLOSED)))
SERVER_OUTCOMES = tuple(map(str, (ServerOutcome.DELIVERED, ServerOutcome.RESET,
                                   ServerOutcome.UNACKNOWLEDGED, ServerOutcome.NO_CLIENT)))
UDP_CLIENT_OUTCOMES = tuple(map(str, (ClientOutcome.ANSWER, ClientOutcome.TIMEOUT)))
UDP_SERVER_OUTCOMES = (str(ServerOutcome.ANSWERED),)
KEEPALIVE_MODES = ("off", "os", "socket")
LINUX_KEEPALIVE_DEFAULTS = {"tcp_keepalive_time": 7200, "tcp_keepalive_intvl": 75,
                            "tcp_keepalive_probes": 9}
__all__ = ["LINUX_KEEPALIVE_DEFAULTS", "MAX_SPEED", "MIN_SPEED", "Keepalive", "LoadSpec",
           "Scenario", "ScenarioError", "load_outcome", "load_scenario", "parse_scenario",
           "scaled", "scenario_names"]
MIN_SPEED, MAX_SPEED = 1.0, 10_000.0
"""Time compression natsim accepts: below 1 the kernel's keepalive sysctls overflow (at most
32767 s), above 10,000 a model second is under 0.1 ms of wall time."""


@dataclass(frozen=True)
class Keepalive:
    mode: str
    """``off``; ``os`` (SO_KEEPALIVE, timing from the namespace sysctls); ``socket``."""
    idle: float | None = None
    interval: float | None = None
    count: int | None = None
    user_timeout: float | None = None
    """``TCP_USER_TIMEOUT`` (model seconds): how long data may stay unacknowledged before
    the kernel gives up, whatever ``tcp_retries2`` says (a scripted client only)."""


@dataclass(frozen=True)
class LoadSpec:
    """Many connections at once (capacity scenarios); times are model seconds."""

    connections: int
    rate: float
    """Connection attempts per *wall* second (a kernel's pace, not the model's)."""
    hold: float
    connect_timeout: float
    addresses: int
    """Client addresses to spread the connections over (64,512 source ports each)."""


@dataclass(frozen=True)
class Scenario:
    name: str
    source: str
    description: str
    appliance: Appliance
    speed: float
    client_timeout: float
    keepalive: Keepalive
    sysctls: dict[str, int]
    server_delay: float
    server_port: int
    expect_client: str
    expect_server: str
    story: str = ""
    request: str = "GET /slow-answer"
    chain: tuple[Appliance, ...] = ()
    """The appliances from the client's side to the server's (``appliance`` is the one
    with the shortest idle timeout, which the analytic model follows)."""
    protocol: str = "tcp"
    load: LoadSpec | None = None
    expect_load: LoadCounts | None = None
    """A capacity scenario's expected counts (``expect_client`` is their text)."""
    heartbeat: float | None = None
    """UDP only: the client sends a heartbeat datagram this often while it waits."""
    heartbeat_port: str = "same"
    """UDP only: ``same`` (the request's socket) or ``new`` (a fresh socket each time)."""
    backend: str = "namespaces"
    """Where the hosts live: ``namespaces`` or ``docker`` (containers: ``world/backends/``)."""
    images: dict[str, str] = field(default_factory=dict)
    """Docker only: image per role (client, server, middlebox); natsim:local otherwise."""
    events: tuple[PathEvent, ...] = ()
    """Path events on the model clock (:mod:`simulator.core.path_events`)."""
    retries: int = 0
    """TCP client: attempts after the first when one fails (a name that does not resolve,
    a connection refused or unreachable)."""
    backoff: float = 1.0
    """Model seconds before the first retry; doubled before each next one."""
    resolve: str = "each"
    """``each``: the client resolves the server's name at every attempt; ``once``: at start
    only, keeping the answer (or the failure) for the whole run."""
    proxy: str | None = None
    """``haproxy``: a real L4 proxy stands where the middlebox stands (the contrast)."""
    requests: tuple[float, ...] = ()
    """A scripted client (an idle pool): its requests' model times, the first at 0."""
    pool: int = 1
    """Connections a scripted client keeps and uses in turn."""
    retry: int = 0
    """Times a scripted client resends a request on a new connection after a reset."""
    tcp_retries2: int = 15
    """The client's ``net.ipv4.tcp_retries2`` (a scripted client's give-up rule)."""
    habits: dict[str, float] = field(default_factory=dict)
    """A scripted client's pool habits: ``discard_after``, ``ping_every``, ``validate``."""
    ip: str = "4"
    """``4``, ``6`` (both hosts IPv6-only) or ``nat64`` (an IPv6-only client, the IPv4
    server behind the appliance's NAT64, named through DNS64): ``core/plan.py``."""

    @property
    def scripted(self) -> bool:
        return bool(self.requests)

    @property
    def attach(self) -> PathEvent | None:
        """The client's late network attach, if the scenario has one."""
        return next((e for e in self.events if e.kind is PathKind.ATTACH), None)

    @property
    def path_title(self) -> str:
        return " -> ".join(a.title for a in self.chain or (self.appliance,))


# -- loading --------------------------------------------------------------------------------


def _keepalive(src: str, value: object) -> Keepalive:
    path = "client.keepalive"
    if value is True:  # YAML 1.1 reads an unquoted on/yes/true as a boolean: which mode?
        raise ScenarioError(src, path, "YAML read this as true (an unquoted on/yes/true): "
                            "write 'os' (SO_KEEPALIVE with the namespace's sysctls) or a "
                            "mapping {idle, interval, count}")
    if value is False or value is None or value == "off":  # off, unquoted, means off
        return Keepalive("off")
    if value == "os":
        return Keepalive("os")
    if isinstance(value, dict):
        spec = mapping(src, path, value, ("idle", "interval", "count", "user_timeout"))
        user = (number(src, f"{path}.user_timeout", spec["user_timeout"])
                if "user_timeout" in spec else None)
        if user is not None and spec.keys() == {"user_timeout"}:
            return Keepalive("off", user_timeout=user)  # TCP_USER_TIMEOUT alone
        missing = [k for k in ("idle", "interval", "count") if k not in spec]
        if missing:
            raise ScenarioError(src, f"{path}.{missing[0]}", "missing; socket keepalive needs "
                                "idle, interval and count (TCP_KEEPIDLE/KEEPINTVL/KEEPCNT)")
        return Keepalive("socket", number(src, f"{path}.idle", spec["idle"]),
                         number(src, f"{path}.interval", spec["interval"]),
                         integer(src, f"{path}.count", spec["count"], 1, 127), user)
    raise ScenarioError(src, path, "must be 'off', 'os' (SO_KEEPALIVE with the namespace's "
                        "sysctls) or a mapping {idle, interval, count, user_timeout}; got "
                        f"{value!r}")


def parse_appliance(source: str, path: str, spec: object) -> Appliance:
    if isinstance(spec, str):
        spec = {"name": spec}
    spec = mapping(source, path, spec, ("name", *Appliance.overridable_fields()))
    if "name" not in spec:
        raise ScenarioError(source, f"{path}.name", "missing")
    try:
        appliance = get_appliance(str(spec["name"]))
    except KeyError as exc:
        raise ScenarioError(source, f"{path}.name", str(exc.args[0])) from None
    overrides = {k: v for k, v in spec.items() if k != "name"}
    if "backend_ips" in overrides:
        raise ScenarioError(source, f"{path}.backend_ips", "set by natsim from the world it "
                            "builds; give `backends: N` instead")
    # every field's type and range is the catalogue's own rule (appliances.check_field)
    try:
        return appliance.with_overrides(overrides)
    except ApplianceError as exc:
        field_name, _, message = str(exc).partition(":")
        raise ScenarioError(source, f"{path}.{field_name}", message.strip()) from None
    except (KeyError, ValueError) as exc:
        raise ScenarioError(source, path, str(exc)) from None


def parse_scenario(data: object, source: str, name: str) -> Scenario:
    """Validate a scenario document (already parsed from YAML)."""
    top = mapping(source, "", data, ("description", "story", "appliance", "speed", "client",
                                      "server", "expect", "protocol", "load", "backend",
                                      "images", "events", "proxy", "ip"))
    backend = choice(source, "backend", top.get("backend", "namespaces"),
                      ("namespaces", "docker"))
    images = {str(k): str(v) for k, v in mapping(source, "images", top.get("images", {}),
                                                  ("client", "server", "middlebox")).items()}
    if images and backend != "docker":
        raise ScenarioError(source, "images", "images apply to `backend: docker` only")
    if "load" in top:
        for field_name in ("events", "proxy", "ip"):
            if field_name in top:
                raise ScenarioError(source, field_name, "not for a capacity scenario (one "
                                    "with a `load` section)")
        return replace(_parse_load_scenario(top, source, name), backend=backend, images=images)
    protocol = choice(source, "protocol", top.get("protocol", "tcp"), ("tcp", "udp"))
    for required in ("appliance", "client", "server", "expect"):
        if required not in top:
            raise ScenarioError(source, required, "missing")

    chain = _parse_chain(source, top["appliance"])
    # The model follows the appliance with the shortest idle timeout: it forgets first.
    appliance = min(chain, key=lambda a: a.tcp_idle_timeout)
    speed = _speed(source, top)
    client_fields = (("timeout", "keepalive", "sysctls", "request", "profile", "retries",
                      "backoff", "resolve", *SCRIPT_FIELDS) if protocol == "tcp"
                     else ("timeout", "heartbeat", "heartbeat_port"))
    client = mapping(source, "client", top["client"], client_fields)
    heartbeat, heartbeat_port = _heartbeat(source, client)
    client_timeout = number(source, "client.timeout", client.get("timeout", 900))
    keepalive = _client_keepalive(source, client)
    sysctls = _sysctls(source, client)

    server = mapping(source, "server", top["server"], ("delay", "port"))
    if "delay" not in server:
        raise ScenarioError(source, "server.delay", "missing")
    delay = number(source, "server.delay", server["delay"], positive=False)
    port = integer(source, "server.port", server.get("port", 8080), 1, 65535)

    expect = mapping(source, "expect", top["expect"], ("client", "server"))
    for key in ("client", "server"):
        if key not in expect:
            raise ScenarioError(source, f"expect.{key}", "missing")
    events, proxy = _path(source, top, chain, client_timeout, backend, protocol)
    base = Scenario(
        name=name, source=source, appliance=appliance, chain=chain, speed=speed,
        description=text(source, "description", top.get("description", "")),
        story=text(source, "story", top.get("story", "")),
        client_timeout=client_timeout, keepalive=keepalive, sysctls=sysctls,
        server_delay=delay, server_port=port, expect_client="", expect_server="",
        protocol=protocol, heartbeat=heartbeat, heartbeat_port=heartbeat_port,
        backend=backend, images=images,
        request=text(source, "client.request", client.get("request", "GET /slow-answer")))
    if "requests" in client:
        return _scripted(source, top, client, expect, base)
    return _one_request(source, client, expect, replace(
        base, events=events, proxy=proxy, ip=_ip(source, top, base, bool(events or proxy))))


def _ip(source: str, top: dict[str, object], base: Scenario, path_set: bool) -> str:
    """``ip``: which families the world's hosts use; refused where natsim has no IPv6 yet
    (one TCP client and one server, on one appliance, in namespaces)."""
    ip = choice(source, "ip", str(top.get("ip", "4")), IP_MODES)
    if ip == "4":
        return ip
    why = ("UDP" if base.protocol != "tcp" else "a chain of appliances" if len(base.chain) > 1
           else "path events or a proxy" if path_set else "")
    if why:
        raise ScenarioError(source, "ip", f"IPv6 runs one TCP client and one server through "
                            f"one appliance in namespaces: not with {why}")
    refused = ip_refusal(ip, base.appliance, base.backend)
    if refused:
        raise ScenarioError(source, "ip", refused)
    return ip


def _heartbeat(source: str, client: dict[str, object]) -> tuple[float | None, str]:
    """UDP: how often the client sends a heartbeat, and from which socket."""
    heartbeat = (number(source, "client.heartbeat", client["heartbeat"])
                 if "heartbeat" in client else None)
    return heartbeat, choice(source, "client.heartbeat_port",
                             client.get("heartbeat_port", "same"), ("same", "new"))


def _one_request(source: str, client: dict[str, object], expect: dict[str, object],
                 base: Scenario) -> Scenario:
    """The seeds' client: one request, its connect attempts, one outcome on each side."""
    tcp = base.protocol == "tcp"
    retries, backoff, resolve = _attempts(source, client)
    return replace(
        base, retries=retries, backoff=backoff, resolve=resolve,
        expect_client=choice(source, "expect.client", expect["client"],
                             CLIENT_OUTCOMES if tcp else UDP_CLIENT_OUTCOMES),
        expect_server=choice(source, "expect.server", expect["server"],
                             SERVER_OUTCOMES if tcp else UDP_SERVER_OUTCOMES))


def _scripted(source: str, top: dict[str, object], client: dict[str, object],
              expect: dict[str, object], base: Scenario) -> Scenario:
    """An idle pool: ``client.requests`` and what a scripted client may be given."""
    for name in ("events", "proxy", "ip"):
        if name in top:
            raise ScenarioError(source, name, "not with client.requests: the scripted client "
                                "runs on a plain path")
    profile = get_profile(str(client["profile"])) if "profile" in client else None
    script = parse_script(source, client, expect, profile.habits() if profile else None,
                          profile.retry if profile else 0)
    sysctls = mapping(source, "client.sysctls", client.get("sysctls", {}),
                      (*LINUX_KEEPALIVE_DEFAULTS, "tcp_retries2"))
    retries2 = integer(source, "client.sysctls.tcp_retries2",
                       sysctls.get("tcp_retries2", 15), 1, 255)
    if base.backend != "namespaces":
        raise ScenarioError(source, "backend", "a scripted client (client.requests) runs in "
                            "namespaces only: its retransmission timer is compressed through "
                            "per-namespace sysctls that natsim does not set in containers")
    scripted = replace(base, request=text(source, "client.request",
                                          client.get("request", "GET /pooled")),
                       requests=script.requests, pool=script.pool, retry=script.retry,
                       expect_client=script.expect_client,
                       expect_server=script.expect_server, tcp_retries2=retries2,
                       habits=script.habits)
    ka = scripted.keepalive
    idle = ka.idle if ka.mode == "socket" else float(scripted.sysctls["tcp_keepalive_time"]) \
        if ka.mode == "os" else None
    try:  # what the model cannot follow is refused here, naming the field
        predict_pool(base.appliance, PoolExchange(
            script.requests, script.pool, script.retry, base.server_delay,
            base.client_timeout, Retransmission(retries2=retries2,
                                                user_timeout=ka.user_timeout), idle,
            **script.habits))
    except PoolModelError as exc:
        field_name, _, message = str(exc).partition(": ")
        raise ScenarioError(source, field_name, message) from None
    return scripted


def _sysctls(source: str, client: dict[str, object]) -> dict[str, int]:
    """``client.sysctls``: the namespace's keepalive sysctls over Linux's defaults (and a
    scripted client's ``tcp_retries2``, read by :func:`_scripted`)."""
    spec = mapping(source, "client.sysctls", client.get("sysctls", {}),
                   (*LINUX_KEEPALIVE_DEFAULTS, "tcp_retries2"))
    if "tcp_retries2" in spec and "requests" not in client:
        raise ScenarioError(source, "client.sysctls.tcp_retries2", "only a scripted client "
                            "(client.requests) is judged by its retransmission give-up")
    sysctls = dict(LINUX_KEEPALIVE_DEFAULTS)
    for key, value in spec.items():
        if key == "tcp_retries2":
            continue
        high = 127 if key == "tcp_keepalive_probes" else 32767
        sysctls[key] = integer(source, f"client.sysctls.{key}", value, 1, high)
    return sysctls


def _attempts(source: str, client: dict[str, object]) -> tuple[int, float, str]:
    """``client.retries``, ``backoff`` and ``resolve``: how the client tries again."""
    return (integer(source, "client.retries", client.get("retries", 0), 0, 20),
            number(source, "client.backoff", client.get("backoff", 1)),
            choice(source, "client.resolve", client.get("resolve", "each"), ("each", "once")))


def _path(source: str, top: dict[str, object], chain: tuple[Appliance, ...], run_end: float,
          backend: str, protocol: str) -> tuple[tuple[PathEvent, ...], str | None]:
    """``events`` and ``proxy``: what happens to the path, and what stands on it."""
    events = parse_events(source, top.get("events"), chain[0], chain=len(chain),
                          run_end=run_end, backend=backend, protocol=protocol)
    if any(e.kind is PathKind.ATTACH for e in events) and len(events) > 1:
        raise ScenarioError(source, "events", "a late attach cannot be combined with other "
                            "events (their times count from a request that waits for it)")
    if "proxy" not in top:
        return events, None
    proxy = choice(source, "proxy", top["proxy"], ("haproxy",))
    if events or backend != "namespaces" or len(chain) > 1 or protocol != "tcp":
        raise ScenarioError(source, "proxy", "the L4-proxy contrast runs one TCP exchange "
                            "in namespaces, without path events or a chain")
    return events, proxy


def _parse_chain(source: str, spec: object) -> tuple[Appliance, ...]:
    """``appliance:``, one or a list from the client's side to the server's."""
    if isinstance(spec, list):
        if not spec:
            raise ScenarioError(source, "appliance", "an empty chain; name at least one")
        chain = tuple(parse_appliance(source, f"appliance[{i}]", item)
                      for i, item in enumerate(spec))
    else:
        chain = (parse_appliance(source, "appliance", spec),)
    for i, stage in enumerate(chain[:-1]):
        if stage.backends > 1:
            raise ScenarioError(source, f"appliance[{i}].backends", "only the last appliance "
                                "on the path (the one next to the servers) can have several "
                                "backends")
    return chain


def _speed(source: str, top: dict[str, object], default: float = 35) -> float:
    speed = number(source, "speed", top.get("speed", default), high=MAX_SPEED)
    if speed < MIN_SPEED:
        raise ScenarioError(source, "speed", f"must be at least {MIN_SPEED:g}, got {speed:g}")
    return speed


def _client_keepalive(source: str, client: dict[str, object]) -> Keepalive:
    """``client.profile`` (a named client's defaults) or ``client.keepalive``."""
    if "profile" not in client:
        return _keepalive(source, client.get("keepalive", "off"))
    if "keepalive" in client:
        raise ScenarioError(source, "client.keepalive", "give either a profile or "
                            "keepalive settings, not both")
    try:
        profile = get_profile(str(client["profile"]))
    except KeyError as exc:
        raise ScenarioError(source, "client.profile", str(exc.args[0])) from None
    return Keepalive(profile.keepalive, profile.idle, profile.interval, profile.count,
                     profile.user_timeout if "requests" in client else None)


def _parse_load_scenario(top: dict[str, object], source: str, name: str) -> Scenario:
    """A capacity scenario: ``load`` instead of ``client``, counts instead of outcomes."""
    for required in ("appliance", "load", "expect"):
        if required not in top:
            raise ScenarioError(source, required, "missing")
    if "client" in top:
        raise ScenarioError(source, "client", "a load scenario describes its client in `load`")
    chain = _parse_chain(source, top["appliance"])  # one rule for both: never empty
    load = mapping(source, "load", top["load"], ("connections", "rate", "hold",
                                                   "connect_timeout", "addresses"))
    if "connections" not in load:
        raise ScenarioError(source, "load.connections", "missing")
    spec_load = LoadSpec(
        connections=integer(source, "load.connections", load["connections"], 1, 500_000),
        rate=number(source, "load.rate", load.get("rate", 2000)),
        hold=number(source, "load.hold", load.get("hold", 20)),
        connect_timeout=number(source, "load.connect_timeout", load.get("connect_timeout", 3)),
        addresses=integer(source, "load.addresses", load.get("addresses", 1), 1, 16))
    per_address = 65535 - 1024 + 1
    if spec_load.connections > per_address * spec_load.addresses:
        raise ScenarioError(source, "load.addresses", f"{spec_load.connections} connections "
                            f"need at least {-(-spec_load.connections // per_address)} client "
                            f"addresses ({per_address} source ports each)")
    server = mapping(source, "server", top.get("server", {}), ("port",))
    expect = mapping(source, "expect", top["expect"], ("established", "timed_out", "failed"))
    counts = {key: integer(source, f"expect.{key}", expect.get(key, 0), 0, 500_000)
              for key in ("established", "timed_out", "failed")}
    if "established" not in expect:
        raise ScenarioError(source, "expect.established", "missing")
    return Scenario(
        name=name, source=source, description=text(source, "description",
                                                    top.get("description", "")),
        story=text(source, "story", top.get("story", "")),
        appliance=min(chain, key=lambda a: a.tcp_idle_timeout), chain=chain,
        speed=_speed(source, top, default=1),
        client_timeout=spec_load.connections / spec_load.rate + spec_load.connect_timeout
        + spec_load.hold,
        keepalive=Keepalive("off"), sysctls=dict(LINUX_KEEPALIVE_DEFAULTS), server_delay=0.0,
        server_port=integer(source, "server.port", server.get("port", 8080), 1, 65535),
        expect_load=LoadCounts(counts["established"], counts["timed_out"], counts["failed"]),
        expect_client=load_outcome(counts["established"], counts["timed_out"],
                                   counts["failed"]),
        expect_server=f"accepted={counts['established']}", load=spec_load)


def load_outcome(established: int, timed_out: int, failed: int) -> str:
    return str(LoadCounts(established, timed_out, failed))


def scaled(scenario: Scenario, factor: float) -> Scenario:
    """A capacity scenario at ``factor`` of its size: limits, connections, expected counts.

    The shipped capacity scenarios use the cloud's real numbers (55,000, 65,000), which take
    a minute or two; tests and quick looks run them at a tenth. Scaling the limits and the
    load together keeps the story (how many connections are refused) proportionate, and a
    factor that would round a count is refused rather than silently changing the verdict.
    """
    if scenario.load is None:
        raise ScenarioError(scenario.source, "load", "--scale applies only to capacity "
                            "scenarios (those with a `load` section)")
    if not 0 < factor <= 1:
        raise ScenarioError(scenario.source, "load.connections",
                            f"a scale must be above 0 and at most 1, got {factor:g}")

    def times(field_name: str, n: int) -> int:
        value = n * factor
        if abs(value - round(value)) > 1e-6 or (n and round(value) == 0):
            raise ScenarioError(scenario.source, field_name, f"{n} x {factor:g} is not a whole "
                                "number: choose a scale that divides it")
        return round(value)

    assert scenario.expect_load is not None
    want = scenario.expect_load
    load = replace(scenario.load, connections=times("load.connections",
                                                    scenario.load.connections))
    chain = tuple(a.with_overrides({"capacity_scale": a.capacity_scale * factor})
                  for a in scenario.chain or (scenario.appliance,))
    counts = LoadCounts(times("expect.established", want.established),
                        times("expect.timed_out", want.timed_out),
                        times("expect.failed", want.failed))
    return replace(
        scenario, load=load, chain=chain,
        appliance=min(chain, key=lambda a: a.tcp_idle_timeout),
        client_timeout=load.connections / load.rate + load.connect_timeout + load.hold,
        expect_load=counts, expect_client=str(counts),
        expect_server=f"accepted={counts.established}")


def load_scenario(name_or_path: str) -> Scenario:
    """Load ``scenarios/NAME.yaml`` or a path to any YAML file."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        path = SCENARIO_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        names = scenario_names()
        close = difflib.get_close_matches(str(name_or_path), names, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ScenarioError(str(name_or_path), "", f"no such scenario; {hint}known: "
                            f"{', '.join(names) or '(none)'}")
    return parse_scenario(read_yaml(path), _display(path), path.stem)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def scenario_names() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


# -- compression ----------------------------------------------------------------------------


