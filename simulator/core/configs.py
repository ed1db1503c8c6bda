"""Every program's configuration, typed, and the one codec that carries it across a process.

The driver decides what each program does (:mod:`simulator.core.plan` builds these once,
from the scenario, in wall seconds); the program reads it back on the other side of
``--config``. Between the two there is JSON, and JSON is where typos hide: a key spelt
``wait_limt`` would have been read as "no limit" by ``cfg.get``. So the codec is strict both
ways. :func:`encode` writes the config's fields with a ``version`` and the config's
``type``; :func:`decode` refuses a document of another version or type, a key it does not
know, a key that is missing (unless the field has a default) and a value of the wrong
type, and names the field at fault (``MiddleboxConfig.outside[1].mac``).

Types the codec knows: ``str``, ``int``, ``float`` (an integer is accepted), ``bool``,
``X | None``, ``tuple[X, ...]``, ``Mapping[str, X]``, nested dataclasses, and classes that
carry their own record (``to_record``/``from_record``: the appliance, a path event).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar, Union

from simulator.core.appliances import Appliance
from simulator.core.jsonvalue import JsonShapeError, from_json, to_json
from simulator.core.path_events import PathEvent

VERSION = 1
"""Bumped when a config's meaning changes, so that a stale program refuses a new config."""

class ConfigError(JsonShapeError):
    """A configuration that is not what the program expects; the message names the field."""


# -- the configurations ----------------------------------------------------------------------


@dataclass(frozen=True)
class Port:
    """One of the middlebox's interfaces: its name, its MAC and its peer's (None: learnt
    from the first frame the peer sends, as in Docker)."""

    ifname: str
    mac: str
    peer_mac: str | None = None


@dataclass(frozen=True)
class Edge:
    """Docker's networks: per side ``{address seen there: address in the model}``, and
    the only hosts whose packets count on each side (:mod:`simulator.core.edge`)."""

    inside: Mapping[str, str]
    outside: Mapping[str, str]
    peers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class MiddleboxConfig:
    """``natsim middlebox --config FILE``: the dataplane of one world."""

    module: ClassVar[str] = "simulator.dataplane.packet_loop"

    chain: tuple[Appliance, ...]
    """The path from the client's side to the server's: one appliance, or a chain."""
    speed: float
    inside: Port
    outside: tuple[Port, ...]
    """One port per backend (target groups have several)."""
    pcap: str | None = None
    status: str | None = None
    """Where a live world's middlebox rewrites its status four times a second."""
    metrics: str | None = None
    sample_every: float = 1.0
    """Model seconds between two metric samples."""
    heartbeat: bool = False
    """Say so every 0.5 s wall: a scenario run's driver tells a hung middlebox by silence."""
    path_events: tuple[PathEvent, ...] = ()
    edge: Edge | None = None


@dataclass(frozen=True)
class ServerConfig:
    """The built-in TCP server (``simulator.workloads.server``)."""

    module: ClassVar[str] = "simulator.workloads.server"
    role: ClassVar[str | None] = None

    port: int
    delay: float
    """Wall seconds between the request and the answer."""
    delay_label: str
    answer: str
    wait_limit: float
    """Wall seconds it waits for the answer's acknowledgement."""
    accept_limit: float | None = None
    """Wall seconds it keeps accepting (a client that retries connects several times)."""
    ipv6: bool = False
    """Listen on IPv6 (an ``ip: 6`` world's server has no IPv4 address)."""


@dataclass(frozen=True)
class ClientConfig:
    """The built-in TCP client (``simulator.workloads.client``)."""

    module: ClassVar[str] = "simulator.workloads.client"
    role: ClassVar[str | None] = None

    host: str
    port: int
    request: str
    timeout: float
    keepalive: str
    """``off``, ``os`` (SO_KEEPALIVE, the sysctls time it) or ``socket`` (TCP_KEEP*)."""
    retries: int = 0
    backoff: float = 1.0
    resolve: str = "each"
    idle: int | None = None
    interval: int | None = None
    count: int | None = None
    user_timeout_ms: int | None = None
    """``TCP_USER_TIMEOUT``, wall milliseconds."""


@dataclass(frozen=True)
class PoolServerConfig:
    """The built-in pool server (``simulator.workloads.pool_server``): any number of
    connections, each request answered after ``delay``, until it is asked to stop."""

    module: ClassVar[str] = "simulator.workloads.pool_server"
    role: ClassVar[str | None] = None

    port: int
    delay: float
    """Wall seconds between a request and its answer."""
    delay_label: str
    answer: str
    limit: float
    """Wall seconds after which it stops even if nobody asks it to."""


@dataclass(frozen=True)
class PoolClientConfig:
    """The built-in scripted client (``simulator.workloads.pool_client``)."""

    module: ClassVar[str] = "simulator.workloads.pool_client"
    role: ClassVar[str | None] = None

    host: str
    port: int
    request: str
    at: tuple[float, ...]
    """Wall seconds from the first request to each request (the first is 0)."""
    pool: int
    retry: int
    timeout: float
    """Wall seconds each attempt waits for its answer."""
    keepalive: str
    idle: int | None = None
    interval: int | None = None
    count: int | None = None
    user_timeout_ms: int | None = None
    """``TCP_USER_TIMEOUT`` on every connection (milliseconds, as the option takes it)."""
    model_at: tuple[float, ...] = ()
    """The model times of the requests, for the client's own words."""
    discard_after: float | None = None
    """Wall seconds of idleness after which the pool closes a connection it next needs."""
    ping_every: float | None = None
    """Wall seconds of idleness after which the pool pings a connection."""
    validate: float | None = None
    """Wall seconds a check of a connection before use may wait for its answer."""
    validate_bypass: float = 0.0
    """Wall seconds of idleness under which the pool trusts a connection unchecked."""


@dataclass(frozen=True)
class UdpServerConfig:
    module: ClassVar[str] = "simulator.workloads.udp"
    role: ClassVar[str | None] = "server"

    port: int
    delay: float
    delay_label: str
    wait_limit: float


@dataclass(frozen=True)
class UdpClientConfig:
    module: ClassVar[str] = "simulator.workloads.udp"
    role: ClassVar[str | None] = "client"

    host: str
    port: int
    timeout: float
    heartbeat: float | None = None
    heartbeat_new_port: bool = False
    """Each heartbeat from a fresh socket (a new source port): a flow of its own."""


@dataclass(frozen=True)
class LoadServerConfig:
    module: ClassVar[str] = "simulator.workloads.load"
    role: ClassVar[str | None] = "server"

    port: int
    expected: int
    duration: float


@dataclass(frozen=True)
class LoadClientConfig:
    module: ClassVar[str] = "simulator.workloads.load"
    role: ClassVar[str | None] = "client"

    host: str
    port: int
    connections: int
    rate: float
    hold: float
    connect_timeout: float
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class DnsConfig:
    """The world's DNS server (a client that waits for its network resolves over it)."""

    module: ClassVar[str] = "simulator.workloads.dns"
    role: ClassVar[str | None] = None

    names: Mapping[str, str]
    port: int = 53
    dns64: bool = False
    """Synthesize an AAAA record in 64:ff9b::/96 for a name that has only an IPv4 address
    (RFC 6147), as the Route 53 resolver does for an IPv6-only subnet that asks for it."""


@dataclass(frozen=True)
class ProxyConfig:
    """The L4-proxy contrast: HAProxy where the dataplane would be (``simulator.proxy``)."""

    module: ClassVar[str] = "simulator.dataplane.proxy"
    role: ClassVar[str | None] = None

    speed: float
    timeout: float
    port: int
    front: str
    back: str
    back_self: str
    client: str
    haproxy_cfg: str
    pcap: str | None = None


ProgramConfig = Union[  # noqa: UP007 (a runtime value: isinstance and the fake backend use it)
    ServerConfig, ClientConfig, UdpServerConfig, UdpClientConfig, LoadServerConfig,
    LoadClientConfig, DnsConfig, ProxyConfig, PoolServerConfig, PoolClientConfig]
"""What a backend can start in a host (the middlebox is started by its own call)."""


def module_args(config: ProgramConfig) -> list[str]:
    """``python -m`` arguments that start the program ``config`` describes."""
    role = config.role
    return [config.module, *([role] if role else []), "--config", encode(config)]


# -- the codec -------------------------------------------------------------------------------

T = TypeVar("T")


def encode(config: object) -> str:
    """One line of JSON: ``{"version": 1, "type": "ClientConfig", ...fields}``."""
    body = to_json(config)
    assert isinstance(body, dict)
    return json.dumps({"version": VERSION, "type": type(config).__name__, **body})


def decode(cls: type[T], text: str | bytes) -> T:
    """The ``cls`` that :func:`encode` wrote; anything else raises :class:`ConfigError`."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{cls.__name__}: not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{cls.__name__}: expected a JSON object, got {type(raw).__name__}")
    version, kind = raw.pop("version", None), raw.pop("type", None)
    if version != VERSION:
        raise ConfigError(f"{cls.__name__}: version {version!r}, this natsim reads "
                          f"version {VERSION}")
    if kind != cls.__name__:
        raise ConfigError(f"expected a {cls.__name__}, got type {kind!r}")
    try:
        return from_json(cls, raw)
    except JsonShapeError as exc:
        raise ConfigError(str(exc)) from None


