"""Scenario files: loading, validation, and the compressed plan a run carries out.

A scenario is a YAML file in ``scenarios/`` written in model seconds (see README, "Scenario
files"). Loading checks every field and raises :class:`ScenarioError` naming the file, the
field and what is allowed, because a typo in a keepalive setting would otherwise show up as a
wrong verdict ten minutes later.

:func:`plan` turns a scenario and a speed into the wall-clock settings of one run, with the
effective model value of every rounded kernel setting, and refuses a speed at which the
rounding or the timing margin could change the outcome that the analytic model predicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from simulator.core.appliances import (
    MAX_MODEL_SECONDS,
    Appliance,
    ApplianceError,
    ExpiryAction,
    get_appliance,
)
from simulator.core.model import (
    MIN_WALL_MARGIN,
    DatagramExchange,
    Exchange,
    Prediction,
    decisive_gap,
    decisive_gap_udp,
    predict,
    predict_load,
    predict_udp,
    resolve_late,
)
from simulator.core.profiles import get_profile
from simulator.core.timescale import Scaled, kernel_timer_lateness, scale, scale_kernel

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"

CLIENT_OUTCOMES = ("answer", "timeout", "reset", "keepalive_failed")
SERVER_OUTCOMES = ("delivered", "reset", "unacknowledged")
UDP_CLIENT_OUTCOMES = ("answer", "timeout")
UDP_SERVER_OUTCOMES = ("answered",)
KEEPALIVE_MODES = ("off", "os", "socket")
LINUX_KEEPALIVE_DEFAULTS = {"tcp_keepalive_time": 7200, "tcp_keepalive_intvl": 75,
                            "tcp_keepalive_probes": 9}
MIN_SPEED, MAX_SPEED = 1.0, 10_000.0
"""Time compression natsim accepts: below 1 the kernel's keepalive sysctls overflow (at most
32767 s), above 10,000 a model second is under 0.1 ms of wall time."""


class ScenarioError(ValueError):
    """A scenario file that cannot be run; the message names the file and the field."""

    def __init__(self, source: str, field_path: str, message: str) -> None:
        self.source = source
        self.field = field_path
        super().__init__(f"{source}: {field_path}: {message}" if field_path
                         else f"{source}: {message}")


@dataclass(frozen=True)
class Keepalive:
    mode: str
    """``off``; ``os`` (SO_KEEPALIVE, timing from the namespace sysctls); ``socket``."""
    idle: float | None = None
    interval: float | None = None
    count: int | None = None


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
    heartbeat: float | None = None
    """UDP only: the client sends a heartbeat datagram this often while it waits."""
    backend: str = "namespaces"
    """Where the hosts live: ``namespaces`` or ``docker`` (containers, ``backends.py``)."""
    images: dict[str, str] = field(default_factory=dict)
    """Docker only: image per role (client, server, middlebox); natsim:local otherwise."""

    @property
    def path_title(self) -> str:
        return " -> ".join(a.title for a in self.chain or (self.appliance,))


@dataclass(frozen=True)
class Plan:
    """One run of a scenario at one speed: every duration in model and wall seconds."""

    scenario: Scenario
    speed: float
    idle_timeout: Scaled
    server_delay: Scaled
    client_timeout: Scaled
    keepalive_idle: Scaled | None
    keepalive_interval: Scaled | None
    keepalive_count: int | None
    sysctls: dict[str, Scaled | int]
    prediction: Prediction
    notes: list[str] = field(default_factory=list)
    heartbeat: Scaled | None = None

    def settings(self) -> list[dict[str, object]]:
        rows = [self.idle_timeout, self.server_delay, self.client_timeout]
        rows += [s for s in (self.keepalive_idle, self.keepalive_interval, self.heartbeat)
                 if s is not None]
        rows += [v for v in self.sysctls.values() if isinstance(v, Scaled)]
        out = [r.to_dict() for r in rows]
        if self.keepalive_count is not None:
            out.append({"setting": "client.keepalive.count", "count": self.keepalive_count})
        out.append({"setting": "sysctl net.ipv4.tcp_keepalive_probes",
                    "count": self.sysctls["tcp_keepalive_probes"]})
        return out


# -- loading --------------------------------------------------------------------------------


def _number(src: str, path: str, value: Any, *, positive: bool = True,
            high: float = MAX_MODEL_SECONDS) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ScenarioError(src, path, f"must be a number of model seconds, got {value!r}")
    if positive and value <= 0:
        raise ScenarioError(src, path, f"must be greater than 0, got {value!r}")
    if value < 0:
        raise ScenarioError(src, path, f"must be 0 or more, got {value!r}")
    if value > high:
        raise ScenarioError(src, path, f"must be at most {high:g}, got {value!r}")
    return float(value)


def _text(src: str, path: str, value: Any) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ScenarioError(src, path, f"must be text, got {value!r}")
    text = str(value).strip()
    if len(text) > MAX_TEXT:
        raise ScenarioError(src, path, f"{len(text)} characters: at most {MAX_TEXT}")
    return text


def _integer(src: str, path: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ScenarioError(src, path, f"must be a whole number from {low} to {high}, "
                                       f"got {value!r}")
    return value


def _mapping(src: str, path: str, value: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ScenarioError(src, path, f"must be a mapping with keys {', '.join(allowed)}; "
                                       f"got {value!r}")
    unknown = [k for k in value if k not in allowed]
    if unknown:
        where = f"{path}.{unknown[0]}" if path else str(unknown[0])
        raise ScenarioError(src, where, f"unknown field; allowed here: {', '.join(allowed)}")
    return value


def _choice(src: str, path: str, value: Any, allowed: tuple[str, ...]) -> str:
    if isinstance(value, bool):
        raise ScenarioError(src, path, f"YAML read this as {str(value).lower()}; write one of "
                            f"{', '.join(allowed)} (in quotes if it is a YAML word)")
    if not isinstance(value, str) or value not in allowed:
        raise ScenarioError(src, path, f"must be one of {', '.join(allowed)}; got {value!r}")
    return str(value)


def _keepalive(src: str, value: Any) -> Keepalive:
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
        spec = _mapping(src, path, value, ("idle", "interval", "count"))
        missing = [k for k in ("idle", "interval", "count") if k not in spec]
        if missing:
            raise ScenarioError(src, f"{path}.{missing[0]}", "missing; socket keepalive needs "
                                "idle, interval and count (TCP_KEEPIDLE/KEEPINTVL/KEEPCNT)")
        return Keepalive("socket", _number(src, f"{path}.idle", spec["idle"]),
                         _number(src, f"{path}.interval", spec["interval"]),
                         _integer(src, f"{path}.count", spec["count"], 1, 127))
    raise ScenarioError(src, path, "must be 'off', 'os' (SO_KEEPALIVE with the namespace's "
                        f"sysctls) or a mapping {{idle, interval, count}}; got {value!r}")


def _parse_appliance(source: str, path: str, spec: Any) -> Appliance:
    if isinstance(spec, str):
        spec = {"name": spec}
    spec = _mapping(source, path, spec, ("name", *Appliance.overridable_fields()))
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


def parse_scenario(data: Any, source: str, name: str) -> Scenario:
    """Validate a scenario document (already parsed from YAML)."""
    top = _mapping(source, "", data, ("description", "story", "appliance", "speed", "client",
                                      "server", "expect", "protocol", "load", "backend",
                                      "images"))
    backend = _choice(source, "backend", top.get("backend", "namespaces"),
                      ("namespaces", "docker"))
    images = {str(k): str(v) for k, v in _mapping(source, "images", top.get("images", {}),
                                                  ("client", "server", "middlebox")).items()}
    if images and backend != "docker":
        raise ScenarioError(source, "images", "images apply to `backend: docker` only")
    if "load" in top:
        return replace(_parse_load_scenario(top, source, name), backend=backend, images=images)
    protocol = _choice(source, "protocol", top.get("protocol", "tcp"), ("tcp", "udp"))
    for required in ("appliance", "client", "server", "expect"):
        if required not in top:
            raise ScenarioError(source, required, "missing")

    spec = top["appliance"]
    if isinstance(spec, list):
        if not spec:
            raise ScenarioError(source, "appliance", "an empty chain; name at least one")
        chain = tuple(_parse_appliance(source, f"appliance[{i}]", item)
                      for i, item in enumerate(spec))
    else:
        chain = (_parse_appliance(source, "appliance", spec),)
    for i, stage in enumerate(chain[:-1]):
        if stage.backends > 1:
            raise ScenarioError(source, f"appliance[{i}].backends", "only the last appliance "
                                "on the path (the one next to the servers) can have several "
                                "backends")
    # The model follows the appliance with the shortest idle timeout: it forgets first.
    appliance = min(chain, key=lambda a: a.tcp_idle_timeout)

    speed = _number(source, "speed", top.get("speed", 35), high=MAX_SPEED)
    if speed < MIN_SPEED:
        raise ScenarioError(source, "speed", f"must be at least {MIN_SPEED:g}, got {speed:g}")

    client_fields = (("timeout", "keepalive", "sysctls", "request", "profile")
                     if protocol == "tcp" else ("timeout", "heartbeat"))
    client = _mapping(source, "client", top["client"], client_fields)
    heartbeat = (_number(source, "client.heartbeat", client["heartbeat"])
                 if "heartbeat" in client else None)
    client_timeout = _number(source, "client.timeout", client.get("timeout", 900))
    if "profile" in client:
        if "keepalive" in client:
            raise ScenarioError(source, "client.keepalive", "give either a profile or "
                                "keepalive settings, not both")
        try:
            profile = get_profile(str(client["profile"]))
        except KeyError as exc:
            raise ScenarioError(source, "client.profile", str(exc.args[0])) from None
        keepalive = Keepalive(profile.keepalive, profile.idle, profile.interval, profile.count)
    else:
        keepalive = _keepalive(source, client.get("keepalive", "off"))
    sysctl_spec = _mapping(source, "client.sysctls", client.get("sysctls", {}),
                           tuple(LINUX_KEEPALIVE_DEFAULTS))
    sysctls = dict(LINUX_KEEPALIVE_DEFAULTS)
    for key, value in sysctl_spec.items():
        high = 127 if key == "tcp_keepalive_probes" else 32767
        sysctls[key] = _integer(source, f"client.sysctls.{key}", value, 1, high)

    server = _mapping(source, "server", top["server"], ("delay", "port"))
    if "delay" not in server:
        raise ScenarioError(source, "server.delay", "missing")
    delay = _number(source, "server.delay", server["delay"], positive=False)
    port = _integer(source, "server.port", server.get("port", 8080), 1, 65535)

    expect = _mapping(source, "expect", top["expect"], ("client", "server"))
    for key in ("client", "server"):
        if key not in expect:
            raise ScenarioError(source, f"expect.{key}", "missing")
    client_outcomes = CLIENT_OUTCOMES if protocol == "tcp" else UDP_CLIENT_OUTCOMES
    server_outcomes = SERVER_OUTCOMES if protocol == "tcp" else UDP_SERVER_OUTCOMES
    return Scenario(
        name=name,
        source=source,
        description=_text(source, "description", top.get("description", "")),
        story=_text(source, "story", top.get("story", "")),
        appliance=appliance,
        chain=chain,
        speed=speed,
        client_timeout=client_timeout,
        keepalive=keepalive,
        sysctls=sysctls,
        server_delay=delay,
        server_port=port,
        expect_client=_choice(source, "expect.client", expect["client"], client_outcomes),
        expect_server=_choice(source, "expect.server", expect["server"], server_outcomes),
        protocol=protocol,
        heartbeat=heartbeat,
        request=_text(source, "client.request", client.get("request", "GET /slow-answer")),
        backend=backend,
        images=images,
    )


def _parse_load_scenario(top: dict[str, Any], source: str, name: str) -> Scenario:
    """A capacity scenario: ``load`` instead of ``client``, counts instead of outcomes."""
    for required in ("appliance", "load", "expect"):
        if required not in top:
            raise ScenarioError(source, required, "missing")
    if "client" in top:
        raise ScenarioError(source, "client", "a load scenario describes its client in `load`")
    spec = top["appliance"]
    items = spec if isinstance(spec, list) else [spec]
    chain = tuple(_parse_appliance(source, f"appliance[{i}]" if isinstance(spec, list)
                                   else "appliance", item) for i, item in enumerate(items))
    load = _mapping(source, "load", top["load"], ("connections", "rate", "hold",
                                                   "connect_timeout", "addresses"))
    if "connections" not in load:
        raise ScenarioError(source, "load.connections", "missing")
    spec_load = LoadSpec(
        connections=_integer(source, "load.connections", load["connections"], 1, 500_000),
        rate=_number(source, "load.rate", load.get("rate", 2000)),
        hold=_number(source, "load.hold", load.get("hold", 20)),
        connect_timeout=_number(source, "load.connect_timeout", load.get("connect_timeout", 3)),
        addresses=_integer(source, "load.addresses", load.get("addresses", 1), 1, 16))
    per_address = 65535 - 1024 + 1
    if spec_load.connections > per_address * spec_load.addresses:
        raise ScenarioError(source, "load.addresses", f"{spec_load.connections} connections "
                            f"need at least {-(-spec_load.connections // per_address)} client "
                            f"addresses ({per_address} source ports each)")
    server = _mapping(source, "server", top.get("server", {}), ("port",))
    expect = _mapping(source, "expect", top["expect"], ("established", "timed_out", "failed"))
    counts = {key: _integer(source, f"expect.{key}", expect.get(key, 0), 0, 500_000)
              for key in ("established", "timed_out", "failed")}
    if "established" not in expect:
        raise ScenarioError(source, "expect.established", "missing")
    return Scenario(
        name=name, source=source, description=_text(source, "description",
                                                    top.get("description", "")),
        story=_text(source, "story", top.get("story", "")),
        appliance=min(chain, key=lambda a: a.tcp_idle_timeout), chain=chain,
        speed=_number(source, "speed", top.get("speed", 1), high=MAX_SPEED),
        client_timeout=spec_load.connections / spec_load.rate + spec_load.connect_timeout
        + spec_load.hold,
        keepalive=Keepalive("off"), sysctls=dict(LINUX_KEEPALIVE_DEFAULTS), server_delay=0.0,
        server_port=_integer(source, "server.port", server.get("port", 8080), 1, 65535),
        expect_client=load_outcome(counts["established"], counts["timed_out"],
                                   counts["failed"]),
        expect_server=f"accepted={counts['established']}", load=spec_load)


def load_outcome(established: int, timed_out: int, failed: int) -> str:
    return f"established={established} timed_out={timed_out} failed={failed}"


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

    counts = dict(item.split("=") for item in scenario.expect_client.split())
    load = replace(scenario.load, connections=times("load.connections",
                                                    scenario.load.connections))
    chain = tuple(a.with_overrides({"capacity_scale": a.capacity_scale * factor})
                  for a in scenario.chain or (scenario.appliance,))
    established = times("expect.established", int(counts["established"]))
    return replace(
        scenario, load=load, chain=chain,
        appliance=min(chain, key=lambda a: a.tcp_idle_timeout),
        client_timeout=load.connections / load.rate + load.connect_timeout + load.hold,
        expect_client=load_outcome(established, times("expect.timed_out",
                                                      int(counts["timed_out"])),
                                   times("expect.failed", int(counts["failed"]))),
        expect_server=f"accepted={established}")


def load_scenario(name_or_path: str) -> Scenario:
    """Load ``scenarios/NAME.yaml`` or a path to any YAML file."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        path = SCENARIO_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        known = ", ".join(scenario_names()) or "(none)"
        raise ScenarioError(str(name_or_path), "", f"no such scenario; known: {known}")
    return parse_scenario(read_yaml(path), _display(path), path.stem)


MAX_FILE_BYTES = 256 * 1024
MAX_TEXT = 4000
"""Characters in a free-text field (description, story, request)."""


class _StrictLoader(yaml.SafeLoader):
    """YAML as scenario files need it: a key given twice is an error (not last-wins), and
    anchors/aliases are refused (a few lines of aliases can expand to gigabytes)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.constructor.ConstructorError(
                None, None, "anchors and aliases (*name) are not allowed in natsim files",
                self.peek_event().start_mark)  # type: ignore[no-untyped-call]
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark)
            if isinstance(key, list | dict):
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a word", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Any:
    """A natsim YAML file, size-limited and strictly parsed; errors name the file."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ScenarioError(str(path), "", f"{size} bytes: natsim files are at most "
                                f"{MAX_FILE_BYTES // 1024} KB")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(str(path), "", f"cannot be read: {exc}") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise ScenarioError(str(path), "", f"not valid YAML: {exc}") from None


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def scenario_names() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


# -- compression ----------------------------------------------------------------------------


def _exchange(s: Scenario, timeout: float, delay: float, limit: float,
              ka_idle: float | None, ka_intvl: float | None, ka_count: int | None) -> Exchange:
    app = s.appliance
    inside = resolve_late(app, app.late_from_inside,
                          ka_idle if ka_idle is not None else limit)
    return Exchange(idle_timeout=timeout, late_from_inside=inside,
                    late_from_outside=resolve_late(app, app.late_from_outside, delay),
                    answer_delay=delay, client_timeout=limit, keepalive_idle=ka_idle,
                    keepalive_interval=ka_intvl if ka_intvl is not None else 75.0,
                    keepalive_count=ka_count if ka_count is not None else 9,
                    reset_at_expiry=app.on_expiry is ExpiryAction.RST_BOTH)


def _keepalive_model(s: Scenario) -> tuple[float | None, float | None, int | None]:
    """The keepalive timing the client socket really gets, before compression."""
    ka = s.keepalive
    if ka.mode == "socket":
        return ka.idle, ka.interval, ka.count
    if ka.mode == "os":
        return (float(s.sysctls["tcp_keepalive_time"]), float(s.sysctls["tcp_keepalive_intvl"]),
                s.sysctls["tcp_keepalive_probes"])
    return None, None, None


def _datagram_exchange(s: Scenario) -> DatagramExchange:
    timeout = min(a.udp_idle_timeout for a in s.chain or (s.appliance,))
    return DatagramExchange(timeout, s.server_delay, s.client_timeout, s.heartbeat)


def nominal_prediction(s: Scenario) -> Prediction:
    """What the scenario leads to at speed 1 (no rounding at all)."""
    if s.load is not None:
        established, timed_out = predict_load(list(s.chain), s.load.connections)
        story = [f"{s.load.connections} connections to one destination; the path carries "
                 f"{established}"]
        if timed_out:
            story.append(f"the other {timed_out} SYNs are dropped and time out")
        return Prediction(load_outcome(established, timed_out, 0), s.client_timeout,
                          f"accepted={established}", None, s.appliance.tcp_idle_timeout, story)
    if s.protocol == "udp":
        return predict_udp(_datagram_exchange(s))
    idle, intvl, count = _keepalive_model(s)
    return predict(_exchange(s, s.appliance.tcp_idle_timeout, s.server_delay, s.client_timeout,
                             idle, intvl, count))


class SpeedError(ValueError):
    """The requested time compression would change or blur the outcome."""


def _effective_exchange(s: Scenario, k: float) -> Exchange:
    """The exchange as the kernel will really time it at speed ``k`` (whole wall seconds)."""
    idle, intvl, count = _keepalive_model(s)

    def kernel(v: float | None) -> float | None:
        return None if v is None else max(1, round(v / k)) * k

    return _exchange(s, s.appliance.tcp_idle_timeout, s.server_delay, s.client_timeout,
                     kernel(idle), kernel(intvl), count)


def _problem(s: Scenario, k: float) -> str | None:
    """Why speed ``k`` is unsafe for ``s`` ("rounding" or "margin"), or None if it is safe."""
    if s.load is not None:  # held connections must not idle out during the hold
        return "margin" if s.client_timeout >= s.appliance.tcp_idle_timeout else None
    if s.protocol == "udp":  # nothing kernel-timed: only the margin can be too thin
        return "margin" if decisive_gap_udp(_datagram_exchange(s)) / k < MIN_WALL_MARGIN \
            else None
    exchange = _effective_exchange(s, k)
    if predict(exchange).outcome() != nominal_prediction(s).outcome():
        return "rounding"
    if decisive_gap(exchange) / k < MIN_WALL_MARGIN:
        return "margin"
    ka = exchange.keepalive_idle
    if ka is not None and ka < exchange.idle_timeout:
        # The probe must beat the expiry even if the kernel's timer fires late.
        slack = MIN_WALL_MARGIN + kernel_timer_lateness(ka / k)
        if (exchange.idle_timeout - ka) / k < slack:
            return "kernel timer"
    return None


def max_safe_speed(s: Scenario, ceiling: int = 1000) -> float:
    """The largest whole speed K such that every speed from 1 to K is safe."""
    best = 0
    for k in range(1, ceiling + 1):
        if _problem(s, float(k)) is not None:
            break
        best = k
    return float(best)


def _scaled_sysctls(s: Scenario, k: float) -> dict[str, Scaled | int]:
    """The client namespace's keepalive sysctls at speed ``k`` (whole wall seconds)."""
    return {
        "tcp_keepalive_time": scale_kernel("sysctl net.ipv4.tcp_keepalive_time",
                                           s.sysctls["tcp_keepalive_time"], k),
        "tcp_keepalive_intvl": scale_kernel("sysctl net.ipv4.tcp_keepalive_intvl",
                                            s.sysctls["tcp_keepalive_intvl"], k),
        "tcp_keepalive_probes": s.sysctls["tcp_keepalive_probes"],
    }


def plan(s: Scenario, speed: float | None = None) -> Plan:
    """Compress the scenario to ``speed``; raise :class:`SpeedError` where that is unsafe."""
    k = float(speed if speed is not None else s.speed)
    if not math.isfinite(k) or not MIN_SPEED <= k <= MAX_SPEED:
        raise SpeedError(f"speed must be a number from {MIN_SPEED:g} to {MAX_SPEED:g}, "
                         f"got {speed!r}")
    timeout = scale("appliance.tcp_idle_timeout", s.appliance.tcp_idle_timeout, k)
    delay = scale("server.delay", s.server_delay, k)
    limit = scale("client.timeout", s.client_timeout, k)
    sysctls = _scaled_sysctls(s, k)
    ka_time, ka_sys_intvl = sysctls["tcp_keepalive_time"], sysctls["tcp_keepalive_intvl"]
    assert isinstance(ka_time, Scaled) and isinstance(ka_sys_intvl, Scaled)
    ka_idle = ka_intvl = None
    if s.keepalive.mode == "socket":
        assert s.keepalive.idle is not None and s.keepalive.interval is not None
        ka_idle = scale_kernel("client.keepalive.idle (TCP_KEEPIDLE)", s.keepalive.idle, k)
        ka_intvl = scale_kernel("client.keepalive.interval (TCP_KEEPINTVL)",
                                s.keepalive.interval, k)

    if s.protocol == "udp":
        return _plan_udp(s, k)
    if s.load is not None:
        return _plan_load(s, k)
    exchange = _effective_exchange(s, k)
    effective = predict(exchange)
    problem = _problem(s, k)
    if problem == "rounding":
        nominal = nominal_prediction(s)
        rounded = [x for x in (ka_idle, ka_intvl, ka_time, ka_sys_intvl)
                   if x is not None and x.rounded]
        detail = "; ".join(f"{x.name} {x.model:g} s becomes {x.wall:g} wall s = "
                           f"{x.effective_model:g} model s" for x in rounded)
        raise SpeedError(
            f"{s.name}: at speed {k:g} the kernel's whole-second rounding changes the outcome "
            f"(client {nominal.client} -> {effective.client}, server {nominal.server} -> "
            f"{effective.server}): {detail}. Largest safe speed: {max_safe_speed(s):g}.")
    if problem == "kernel timer":
        ka = exchange.keepalive_idle
        assert ka is not None
        raise SpeedError(
            f"{s.name}: at speed {k:g} the first keepalive probe ({ka:g} model s = "
            f"{ka / k:g} wall s) comes only {1000 * (exchange.idle_timeout - ka) / k:.0f} wall "
            f"ms before the expiry, and a kernel timer of {ka / k:g} s may fire up to "
            f"{1000 * kernel_timer_lateness(ka / k):.0f} ms late. Largest safe speed: "
            f"{max_safe_speed(s):g}.")
    if problem == "margin":
        gap = decisive_gap(exchange)
        raise SpeedError(
            f"{s.name}: at speed {k:g} the decisive instants are only {gap:g} model s = "
            f"{1000 * gap / k:.0f} wall ms apart (at least {1000 * MIN_WALL_MARGIN:.0f} ms "
            f"needed for a deterministic outcome). Largest safe speed: {max_safe_speed(s):g}.")
    notes = []
    if s.keepalive.mode == "off":
        notes.append("client socket without SO_KEEPALIVE: the namespace sysctls do not apply")
    return Plan(s, k, timeout, delay, limit, ka_idle, ka_intvl, s.keepalive.count, sysctls,
                effective, notes)


def _plan_udp(s: Scenario, k: float) -> Plan:
    ex = _datagram_exchange(s)
    if _problem(s, k) is not None:
        gap = decisive_gap_udp(ex)
        raise SpeedError(
            f"{s.name}: at speed {k:g} the decisive instants are only {gap:g} model s = "
            f"{1000 * gap / k:.0f} wall ms apart (at least {1000 * MIN_WALL_MARGIN:.0f} ms "
            f"needed for a deterministic outcome). Largest safe speed: {max_safe_speed(s):g}.")
    sysctls = _scaled_sysctls(s, k)
    notes = ["UDP: the keepalive sysctls do not apply"]
    heartbeat = scale("client.heartbeat", s.heartbeat, k) if s.heartbeat else None
    return Plan(s, k, scale("appliance.udp_idle_timeout", ex.idle_timeout, k),
                scale("server.delay", s.server_delay, k),
                scale("client.timeout", s.client_timeout, k), None, None, None, sysctls,
                predict_udp(ex), notes, heartbeat)


def _plan_load(s: Scenario, k: float) -> Plan:
    if _problem(s, k) is not None:
        raise SpeedError(f"{s.name}: the connections would be held past the idle timeout "
                         f"({s.client_timeout:g} >= {s.appliance.tcp_idle_timeout:g} model s)")
    sysctls = _scaled_sysctls(s, k)
    return Plan(s, k, scale("appliance.tcp_idle_timeout", s.appliance.tcp_idle_timeout, k),
                scale("server.delay", 0.0, k), scale("load (whole run)", s.client_timeout, k),
                None, None, None, sysctls, nominal_prediction(s),
                ["capacity scenario: the load generator opens and holds connections"])
