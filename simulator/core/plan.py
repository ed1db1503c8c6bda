"""The world plan: every host, address, route, sysctl and program of a run, computed purely.

A backend only *applies* a plan (namespaces with pyroute2, Docker with its SDK, or the fake
backend in memory); what the world is made of is decided here, from the scenario and its
compressed settings, and can be checked without root.

Addresses (DESIGN.md §1): the client side is 198.18.0.0/16 (the client 198.18.1.10, more
addresses from .11 for load scenarios), the server side 198.19.0.0/16 (backend i at
198.19.<i+1>.10), NAT public addresses from the documentation range 203.0.113.0/24. Every
host routes only towards the other side through the middlebox: there is no default route
and no private range anywhere.

The keepalive sysctls are compressed in the **whole** world: the client's and the servers'
(a server-side keepalive must fire in compressed time too). Counts are not scaled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from simulator.core.appliances import Appliance
from simulator.core.configs import (
    ClientConfig,
    Edge,
    LoadClientConfig,
    LoadServerConfig,
    MiddleboxConfig,
    PoolClientConfig,
    PoolServerConfig,
    Port,
    ServerConfig,
    UdpClientConfig,
    UdpServerConfig,
)
from simulator.core.path_events import PathEvent
from simulator.core.pool_model import VALIDATE_BYPASS
from simulator.core.retransmission import Retransmission
from simulator.core.timescale import kernel_seconds

CLIENT_IP, CLIENT_GW = "198.18.1.10", "198.18.1.1"
SERVER_IP, SERVER_GW = "198.19.1.10", "198.19.1.1"
CLIENT_SIDE_NET, SERVER_SIDE_NET = "198.18.0.0/16", "198.19.0.0/16"
PUBLIC_NET = "203.0.113.0/24"
PREFIXLEN = 24
PREFIXLEN6 = 64
QUIET = {"net.ipv6.conf.all.disable_ipv6": 1, "net.ipv6.conf.default.disable_ipv6": 1}
"""Every host: no IPv6 (the world has none; no router solicitations on the wire)."""
KEEPALIVE_SYSCTLS = ("tcp_keepalive_time", "tcp_keepalive_intvl", "tcp_keepalive_probes")


CLIENT_IP6, CLIENT_GW6 = "2001:db8:1::10", "2001:db8:1::1"
SERVER_IP6, SERVER_GW6 = "2001:db8:2::10", "2001:db8:2::1"
CLIENT_SIDE_NET6, SERVER_SIDE_NET6 = "2001:db8:1::/64", "2001:db8:2::/64"
NAT64_NET = "64:ff9b::/96"
IP_MODES = ("4", "6", "nat64", "dualstack")
"""``ip`` of a scenario: IPv4 everywhere; IPv6 everywhere (the appliance tracks IPv6 flows
as they are); an IPv6-only client reaching the IPv4 server through the appliance's NAT64,
its name resolved by DNS64 (the Route 53 resolver's part in AWS); or an IPv6-only client
to a dual-stack load balancer's IPv6 address (``vip6``), its target IPv4."""
IPV6_HOST = {"net.ipv6.conf.all.disable_ipv6": 0, "net.ipv6.conf.eth0.disable_ipv6": 0,
             "net.ipv6.conf.eth0.accept_dad": 0, "net.ipv6.conf.eth0.accept_ra": 0,
             "net.ipv6.conf.eth0.router_solicitations": 0}
"""An IPv6 host: no duplicate-address detection (the address is the plan's) and no router
discovery (the route is the plan's); its multicast listener reports still go out, and the
dataplane leaves them on the link."""


def ip_refusal(ip: str, appliance: Appliance, backend: str = "namespaces") -> str | None:
    """Why ``appliance`` (on ``backend``) cannot carry a world of family ``ip``, or None."""
    if ip != "4" and backend != "namespaces":
        return "IPv6 worlds are built in namespaces, not with `backend: docker`"
    if ip == "nat64" and not appliance.nat64:
        return (f"nat64 needs an appliance that translates IPv6 to IPv4 (nat-gw); "
                f"{appliance.name} does not")
    if ip == "dualstack" and not appliance.vip6:
        return (f"dualstack needs a dual-stack load balancer (nlb-dualstack); "
                f"{appliance.name} has no IPv6 address (vip6)")
    if ip == "6" and appliance.nat:
        return (f"{appliance.name} translates addresses, and no appliance in the catalogue "
                "translates IPv6 to IPv6 (NAT66): use nat64, or a transparent appliance")
    if ip != "4" and appliance.backends > 1:
        return "IPv6 worlds have one server: not with several backends"
    return None


def nat64_address(ipv4: str) -> str:
    """``64:ff9b::c613:10a`` for ``198.19.1.10``: how an IPv6-only host names an IPv4 one."""
    a, b, c, d = (int(x) for x in ipv4.split("."))
    return f"64:ff9b::{a << 8 | b:x}:{c << 8 | d:x}"


def backend_address(index: int) -> tuple[str, str]:
    """(address, gateway) of backend ``index``: 198.19.1.10, 198.19.2.10, ..."""
    return f"198.19.{1 + index}.10", f"198.19.{1 + index}.1"


def client_address(index: int) -> str:
    """The client's addresses: 198.18.1.10, 198.18.1.11, ... (load scenarios use several)."""
    return f"198.18.1.{10 + index}"


@dataclass(frozen=True)
class HostPlan:
    """One end host: its role, addresses (the first is its own), its gateway (the
    middlebox's port on its network), the networks it reaches through that gateway, its
    sysctls and its ``/etc/hosts``."""

    role: str
    addresses: tuple[str, ...]
    gateway: str
    routes: tuple[str, ...]
    sysctls: Mapping[str, int | str]
    hosts: tuple[tuple[str, str], ...]
    nameserver: str | None = None
    """The DNS server its resolver asks (``resolv.conf``), when the run has one."""
    offloads: bool = True
    """Checksum and segmentation offloads on its interface (veth's defaults). Off in a world
    with IPv6: the dataplane then translates and forwards complete, MTU-sized frames."""

    @property
    def address(self) -> str:
        return self.addresses[0]


@dataclass(frozen=True)
class WorldPlan:
    """Client, servers (one per backend) and the middlebox between them."""

    run_id: str
    client: HostPlan
    servers: tuple[HostPlan, ...]
    middlebox_sysctls: Mapping[str, int | str] = field(
        default_factory=lambda: {**QUIET, "net.ipv4.ip_forward": 0})
    """The middlebox's kernel never forwards: every packet crosses the dataplane."""
    vip: str | None = None
    middlebox_addresses: Mapping[str, str] = field(default_factory=dict)
    """Addresses on the middlebox's own interfaces (``inside`` -> the client's gateway):
    only for the L4-proxy contrast, whose proxy terminates TCP there; natsim's dataplane
    owns no address."""

    @property
    def hosts(self) -> tuple[HostPlan, ...]:
        return (self.client, *self.servers)


DNS_NAME = "api.internal"
"""The server's name for a client that resolves it through the world's DNS server."""


def keepalive_sysctls(values: Mapping[str, int], speed: float) -> dict[str, int]:
    """The keepalive sysctls in whole wall seconds (at least 1); the count unchanged."""
    return {key: value if key == "tcp_keepalive_probes" else kernel_seconds(value, speed)
            for key, value in values.items()}


def world_plan(run_id: str, client_sysctls: Mapping[str, int], backends: int = 1,
               vip: str | None = None, client_addresses: int = 1,
               server_sysctls: Mapping[str, int] | None = None,
               nameserver: str | None = None, front: str | None = None,
               ip: str = "4") -> WorldPlan:
    """The world for one run; sysctls are already in wall seconds (see
    :func:`keepalive_sysctls`). With ``backends`` > 1 the name ``server`` resolves to
    ``vip``, behind which the middlebox spreads the flows; with ``front`` (a proxy's
    address) it resolves to that. ``ip`` is one of :data:`IP_MODES`."""
    if ip != "4":
        return _ipv6_world(run_id, client_sysctls, server_sysctls or {}, ip, vip)
    server_name = front or (vip if backends > 1 and vip else SERVER_IP)
    hosts = ((server_name, "server"), (CLIENT_IP, "client"),
             *((backend_address(i)[0], f"backend{i}") for i in range(backends)))
    client = HostPlan(
        role="client",
        addresses=tuple(client_address(i) for i in range(client_addresses)),
        gateway=CLIENT_GW, routes=(SERVER_SIDE_NET,),
        sysctls={**QUIET, **{f"net.ipv4.{k}": v for k, v in client_sysctls.items()},
                 # room for many connections: every source port
                 "net.ipv4.ip_local_port_range": "1024 65535"},
        hosts=hosts, nameserver=nameserver)
    servers = tuple(HostPlan(
        role="server" if i == 0 else f"server{i}",
        addresses=(backend_address(i)[0],), gateway=backend_address(i)[1],
        # transparent appliances keep the client's own address: route back to it too
        routes=(PUBLIC_NET, CLIENT_SIDE_NET),
        sysctls={**QUIET, **{f"net.ipv4.{k}": v for k, v in (server_sysctls or {}).items()},
                 "net.core.somaxconn": 65535, "net.ipv4.tcp_max_syn_backlog": 65535},
        hosts=hosts) for i in range(backends))
    return WorldPlan(run_id, client, servers, vip=vip, middlebox_addresses={
        "inside": CLIENT_GW, "outside": SERVER_GW} if front else {})


def _ipv6_world(run_id: str, client_sysctls: Mapping[str, int],
                server_sysctls: Mapping[str, int], ip: str, vip6: str | None) -> WorldPlan:
    """One IPv6-only client and one server: IPv6 too (``ip: 6``), or IPv4 behind the
    appliance's NAT64 (``ip: nat64``, the client naming it through DNS64) or behind a
    dual-stack load balancer's IPv6 address ``vip6`` (``ip: dualstack``)."""
    nat64, ipv4_server = ip == "nat64", ip in ("nat64", "dualstack")
    server_name = {"nat64": nat64_address(SERVER_IP), "dualstack": vip6}.get(ip) or SERVER_IP6
    hosts = ((server_name, "server"), (CLIENT_IP6, "client"), (server_name, "backend0"))
    client = HostPlan(
        role="client", addresses=(CLIENT_IP6,), gateway=CLIENT_GW6,
        routes=(NAT64_NET if nat64 else SERVER_SIDE_NET6,),
        sysctls={**IPV6_HOST, **{f"net.ipv4.{k}": v for k, v in client_sysctls.items()},
                 "net.ipv4.ip_local_port_range": "1024 65535"},
        hosts=hosts, nameserver=nat64_address(SERVER_IP) if nat64 else None, offloads=False)
    server = HostPlan(
        role="server", addresses=(SERVER_IP,) if ipv4_server else (SERVER_IP6,),
        gateway=SERVER_GW if ipv4_server else SERVER_GW6,
        routes=(PUBLIC_NET,) if ipv4_server else (CLIENT_SIDE_NET6,),
        sysctls={**(QUIET if ipv4_server else IPV6_HOST),
                 **{f"net.ipv4.{k}": v for k, v in server_sysctls.items()},
                 "net.core.somaxconn": 65535, "net.ipv4.tcp_max_syn_backlog": 65535},
        hosts=hosts, offloads=False)
    return WorldPlan(run_id, client, (server,))


# -- the programs a scenario runs -----------------------------------------------------------


class _Load(Protocol):
    @property
    def connections(self) -> int: ...
    @property
    def rate(self) -> float: ...
    @property
    def hold(self) -> float: ...
    @property
    def connect_timeout(self) -> float: ...
    @property
    def addresses(self) -> int: ...


class _Keepalive(Protocol):
    @property
    def mode(self) -> str: ...
    @property
    def user_timeout(self) -> float | None: ...


class ScenarioView(Protocol):
    """What the programs' configurations read of a scenario (``simulator.spec.scenario``)."""

    @property
    def load(self) -> _Load | None: ...
    @property
    def protocol(self) -> str: ...
    @property
    def heartbeat_port(self) -> str: ...
    @property
    def server_port(self) -> int: ...
    @property
    def server_delay(self) -> float: ...
    @property
    def attach(self) -> object | None: ...
    @property
    def request(self) -> str: ...
    @property
    def keepalive(self) -> _Keepalive: ...
    @property
    def retries(self) -> int: ...
    @property
    def backoff(self) -> float: ...
    @property
    def resolve(self) -> str: ...
    @property
    def scripted(self) -> bool: ...
    @property
    def requests(self) -> tuple[float, ...]: ...
    @property
    def pool(self) -> int: ...
    @property
    def retry(self) -> int: ...
    @property
    def habits(self) -> Mapping[str, float]: ...
    @property
    def ip(self) -> str: ...


class _Scaled(Protocol):
    @property
    def wall(self) -> float: ...


class PlanView(Protocol):
    """What they read of a run's compressed settings (``simulator.spec.compression.Plan``)."""

    @property
    def speed(self) -> float: ...
    @property
    def server_delay(self) -> _Scaled: ...
    @property
    def client_timeout(self) -> _Scaled: ...
    @property
    def heartbeat(self) -> _Scaled | None: ...
    @property
    def keepalive_idle(self) -> _Scaled | None: ...
    @property
    def keepalive_interval(self) -> _Scaled | None: ...
    @property
    def keepalive_count(self) -> int | None: ...
    @property
    def retransmission(self) -> Retransmission | None: ...


@dataclass(frozen=True)
class Programs:
    """The server (each backend runs the same) and the client of one scenario."""

    server: ServerConfig | UdpServerConfig | LoadServerConfig | PoolServerConfig
    client: ClientConfig | UdpClientConfig | LoadClientConfig | PoolClientConfig
    wall_limit: float
    """Wall seconds after which client and server must both have finished."""
    servers_follow_client: bool = False
    """The servers serve until they are asked to stop, once the client has finished (a
    pool server cannot know which connection will bring the last request)."""


def load_wall(s: ScenarioView, speed: float) -> float:
    """Wall seconds a capacity scenario's load takes: opening every connection at its
    rate (per wall second), then the connect timeout and the hold (model seconds)."""
    load = s.load
    assert load is not None
    return float(load.connections / load.rate + (load.connect_timeout + load.hold) / speed)


def programs(s: ScenarioView, p: PlanView) -> Programs:
    """The workloads of scenario ``s`` at plan ``p`` (a :class:`simulator.spec.scenario.Plan`):
    their configurations in wall seconds."""
    if s.load is not None:
        load = s.load
        wall = load_wall(s, p.speed)
        return Programs(
            LoadServerConfig(port=s.server_port, expected=load.connections,
                             duration=wall + 3.0),
            LoadClientConfig(host="server", port=s.server_port, connections=load.connections,
                             rate=load.rate, hold=load.hold / p.speed,
                             connect_timeout=load.connect_timeout / p.speed,
                             addresses=tuple(client_address(i)
                                             for i in range(load.addresses))),
            wall + 15.0)
    answer_after = p.server_delay.wall
    if s.scripted:
        return _pool_programs(s, p)
    if s.protocol == "udp":
        return Programs(
            UdpServerConfig(port=s.server_port, delay=answer_after,
                            delay_label=f"{s.server_delay:g} s",
                            wait_limit=p.client_timeout.wall + 1.0),
            UdpClientConfig(host="server", port=s.server_port, timeout=p.client_timeout.wall,
                            heartbeat=p.heartbeat.wall if p.heartbeat is not None else None,
                            heartbeat_new_port=s.heartbeat_port == "new"),
            p.client_timeout.wall + 15.0)
    # a client that waits for its network resolves its server's name over the network
    idle = interval = None
    if p.keepalive_idle is not None and p.keepalive_interval is not None:
        idle, interval = int(p.keepalive_idle.wall), int(p.keepalive_interval.wall)
    retrying = s.backoff * (2 ** s.retries - 1) / p.speed  # the last attempt, wall seconds
    return Programs(
        ServerConfig(port=s.server_port, delay=answer_after,
                     delay_label=f"{s.server_delay:g} s",
                     answer="HTTP/1.1 200 OK (the slow answer)",
                     wait_limit=max(1.0, p.client_timeout.wall - answer_after + 1.0),
                     accept_limit=retrying + 3.0 if s.retries else None, ipv6=s.ip == "6"),
        ClientConfig(host=DNS_NAME if resolves_over_dns(s) else "server", port=s.server_port,
                     request=s.request, timeout=p.client_timeout.wall,
                     keepalive=s.keepalive.mode, retries=s.retries,
                     backoff=s.backoff / p.speed, resolve=s.resolve, idle=idle,
                     interval=interval, count=p.keepalive_count if idle is not None else None,
                     user_timeout_ms=None if s.keepalive.user_timeout is None else
                     max(1, round(s.keepalive.user_timeout * 1000 / p.speed))),
        # the server answers (and waits for the acknowledgement) even after the client gave up
        max(p.client_timeout.wall, answer_after) + retrying + 15.0)


def resolves_over_dns(s: ScenarioView) -> bool:
    """Whether the client asks the world's DNS server for its server's address: a client
    whose network comes late (its lookup must fail as a real one does) and an IPv6-only
    client behind NAT64 (the name's AAAA record comes from DNS64)."""
    return s.attach is not None or s.ip == "nat64"


def _pool_programs(s: ScenarioView, p: PlanView) -> Programs:
    """A scripted client and its server: the requests at their wall times."""
    idle = interval = None
    if p.keepalive_idle is not None and p.keepalive_interval is not None:
        idle, interval = int(p.keepalive_idle.wall), int(p.keepalive_interval.wall)
    wall = p.retransmission
    user = None if wall is None or wall.user_timeout is None else \
        max(1, round(wall.user_timeout * 1000))
    # the worst case: every attempt of every request waits its whole timeout
    longest = s.requests[-1] / p.speed + len(s.requests) * (s.retry + 1) * (
        p.client_timeout.wall + 1.0)
    return Programs(
        PoolServerConfig(port=s.server_port, delay=p.server_delay.wall,
                         delay_label=f"{s.server_delay:g} s", answer="HTTP/1.1 200 OK",
                         limit=longest + 10.0),
        PoolClientConfig(host="server", port=s.server_port, request=s.request,
                         at=tuple(t / p.speed for t in s.requests), pool=s.pool,
                         retry=s.retry, timeout=p.client_timeout.wall,
                         keepalive=s.keepalive.mode, idle=idle, interval=interval,
                         count=p.keepalive_count if idle is not None else None,
                         user_timeout_ms=user, model_at=s.requests,
                         **{k: v / p.speed for k, v in s.habits.items()},
                         validate_bypass=VALIDATE_BYPASS / p.speed),
        longest + 15.0, servers_follow_client=True)


def middlebox_config(chain: Sequence[Appliance], speed: float, inside: Port,
                     outside: Sequence[Port], *, pcap: str | None = None,
                     status: str | None = None, metrics: str | None = None,
                     sample_every: float = 1.0, heartbeat: bool = False,
                     path_events: Sequence[PathEvent] = (), edge: Edge | None = None
                     ) -> MiddleboxConfig:
    """The dataplane's configuration: the one place it is made (a scenario run, a live
    world and the bench all come here). Backends with several targets get their addresses
    here too, so that the appliance spreads flows over the ports it really has."""
    if len(outside) > 1 or any(a.vip6 for a in chain):  # a dual-stack LB maps to a target
        chain = [a.with_overrides({"backend_ips": [backend_address(i)[0]
                                                   for i in range(len(outside))]})
                 if a.backends > 1 or a.vip6 else a for a in chain]
    return MiddleboxConfig(
        chain=tuple(chain), speed=speed, inside=inside, outside=tuple(outside), pcap=pcap,
        status=status, metrics=metrics, sample_every=sample_every, heartbeat=heartbeat,
        # the late attach is the driver's to carry out (on the client's host), not the engine's
        path_events=tuple(e for e in path_events if not e.on_host), edge=edge)
