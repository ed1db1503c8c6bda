"""Hosts as Docker containers: the SDK makes the networks and containers (labelled with
the run, so that removal finds them whatever state they are in), and ``docker exec -i``
runs the programs, their output on a pipe exactly as from ``ip netns exec``."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from simulator.core.configs import MiddleboxConfig, ProgramConfig, encode, module_args
from simulator.core.edge import docker_edge
from simulator.core.plan import CLIENT_IP, SERVER_IP, HostPlan, WorldPlan
from simulator.support import interrupts
from simulator.support.results import write_private
from simulator.world import topology
from simulator.world.backends import BackendError, RealTime, host_command, program_role
from simulator.world.modeltime import WorldClock
from simulator.world.process import Program, spawn

LABEL = "natsim.run"
DEFAULT_IMAGE = "natsim:local"
"""What ``make image`` builds; ``NATSIM_IMAGE`` (as in docker-compose.yml) names another."""
CLIENT_NET, SERVER_NET = "198.18.1.0/24", "198.19.1.0/24"
MBOX_INSIDE, MBOX_OUTSIDE = "198.18.1.2", "198.19.1.2"
SERVER_VIP = "198.18.1.3"
"""The server as the client's network sees it (Docker's internal networks carry only their
own subnet: ``core/edge.py``)."""


class Docker(RealTime):
    """Hosts as containers on two ``internal`` Docker networks (``make image`` first)."""

    name = "docker"

    def __init__(self, images: dict[str, str] | None = None) -> None:
        try:
            import docker  # noqa: PLC0415 (only this backend needs the SDK)
        except ImportError:  # pragma: no cover (a dependency of natsim)
            raise BackendError("the Docker SDK is missing: pip install docker") from None
        try:
            self.client = docker.from_env()
            self.client.ping()
        except docker.errors.DockerException as exc:
            raise BackendError(f"no Docker engine ({exc}): apt-get install docker.io and "
                               "start dockerd, or use the namespaces backend") from None
        if shutil.which("docker") is None:
            raise BackendError("the `docker` command is needed to run programs in "
                               "containers: apt-get install docker.io")
        default = os.environ.get("NATSIM_IMAGE", DEFAULT_IMAGE)
        self.images = {role: (images or {}).get(role, default)
                       for role in ("client", "server", "middlebox")}
        self.results_dir: Path | None = None

    def _check_images(self) -> None:
        """Before building (not in ``__init__``: ``natsim down`` needs no image)."""
        import docker  # noqa: PLC0415

        for role, image in self.images.items():
            try:
                self.client.images.get(image)
            except docker.errors.ImageNotFound:
                raise BackendError(f"image {image!r} ({role}) is not here: `make image` "
                                   "builds natsim:local") from None

    def _name(self, run_id: str, role: str) -> str:
        return f"{topology.PREFIX}{run_id}-{role}"

    def build(self, plan: WorldPlan, results_dir: Path) -> topology.World:
        """Two internal networks and the client and server containers. Docker decides the
        links and addresses (its own subnets, see ``core/edge.py``); the plan's sysctls and
        names are applied as they are."""
        run_id = plan.run_id
        if plan.middlebox_addresses:
            raise BackendError("the L4-proxy contrast runs HAProxy in the middlebox's "
                               "namespace: use namespaces")
        if len(plan.servers) > 1 or len(plan.client.addresses) > 1:
            raise BackendError("the docker backend runs one client address and one server "
                               "(no target groups, no multi-address load): use namespaces")
        from docker.types import IPAMConfig, IPAMPool  # noqa: PLC0415

        self._check_images()
        api = self.client.api
        labels = {LABEL: run_id}
        topology.register(run_id)
        self.results_dir = results_dir.resolve()
        try:
            nets = {}
            # each create is held back from Ctrl-C: interrupted after the request went
            # out, the engine would make it after destroy() had looked (interrupts.deferred)
            for side, subnet in (("clientside", CLIENT_NET), ("serverside", SERVER_NET)):
                with interrupts.deferred():
                    nets[side] = self.client.networks.create(
                        self._name(run_id, side), driver="bridge", internal=True,
                        labels=labels,
                        ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=subnet)])).name
            hosts = {
                "client": (nets["clientside"], CLIENT_IP, {
                    "sysctls": _container_sysctls(plan.client.sysctls),
                    "extra_hosts": {"server": SERVER_VIP}}),
                "server": (nets["serverside"], SERVER_IP, {
                    "sysctls": _container_sysctls(plan.servers[0].sysctls),
                    "extra_hosts": {"client": CLIENT_IP}}),
            }
            for role, (net, ip, host_cfg) in hosts.items():
                with interrupts.deferred():
                    container = api.create_container(
                        self.images[role], command=["docker-host"],
                        name=self._name(run_id, role), labels=labels,
                        host_config=api.create_host_config(**host_cfg),
                        networking_config=api.create_networking_config(
                            {net: api.create_endpoint_config(ipv4_address=ip)}))
                api.start(container)
            macs = {role: self._mac(self._name(run_id, role), hosts[role][0])
                    for role in hosts}
        except BaseException:
            self.destroy(run_id)
            raise
        client_ns, mbox_ns, server_ns = (self._name(run_id, r)
                                         for r in ("client", "middlebox", "server"))
        backend = topology.Backend(server_ns, SERVER_IP, macs["server"], "", "")
        return topology.World(run_id, client_ns, mbox_ns, server_ns, macs["client"],
                              macs["server"], "", "", backends=(backend,))

    def _mac(self, container: str, network: str) -> str:
        attrs = self.client.api.inspect_container(container)
        return str(attrs["NetworkSettings"]["Networks"][network]["MacAddress"])

    def command(self, host: str, module_args: list[str]) -> list[str]:
        return host_command(self.name, host, ["python3", "-m", *module_args])

    def start(self, host: str, config: ProgramConfig, stderr: IO[bytes]) -> Program:
        return spawn(program_role(config), self.command(host, module_args(config)), stderr)

    def middlebox(self, world: topology.World, config: MiddleboxConfig, config_path: Path,
                  stderr: IO[bytes], detached: tuple[IO[bytes], IO[bytes]] | None = None
                  ) -> Program:
        """The middlebox is its container's main process (``natsim docker-middlebox``,
        which finds its interfaces and the MACs in Docker's world); SIGTERM reaches it
        through ``docker kill``, and its output is the container's log."""
        api = self.client.api
        run_id = world.run_id
        config = replace(config, edge=docker_edge(config.chain[0].public_ips, CLIENT_IP,
                                                  SERVER_IP, SERVER_VIP))
        write_private(config_path, encode(config))
        assert self.results_dir is not None
        name = self._name(run_id, "middlebox")
        with interrupts.deferred():  # as in build()
            container = api.create_container(
                self.images["middlebox"], command=["docker-middlebox", "--config",
                                                   str(config_path.resolve())],
                name=name, labels={LABEL: run_id},
                environment={"NATSIM_CLIENT": CLIENT_IP,
                             "NATSIM_SERVER": SERVER_IP},
                host_config=api.create_host_config(
                    cap_drop=["ALL"], cap_add=["NET_ADMIN", "NET_RAW"],
                    sysctls={"net.ipv4.ip_forward": "0"},
                    binds={str(self.results_dir): {"bind": str(self.results_dir), "mode": "rw"}}),
                networking_config=api.create_networking_config(
                    {self._name(run_id, "clientside"):
                     api.create_endpoint_config(ipv4_address=MBOX_INSIDE)}))
            api.connect_container_to_network(container, self._name(run_id, "serverside"),
                                             ipv4_address=MBOX_OUTSIDE)
        api.start(container)
        return spawn("middlebox", ["docker", "logs", "--follow", name], stderr,
                     stop=lambda: api.kill(name, signal="SIGTERM"), detached=detached)

    def attach(self, world: topology.World, client: HostPlan, attached: bool) -> None:
        raise BackendError("a late attach takes the client's interface away, which Docker "
                           "does not let a container's network do: use namespaces")

    def model_time(self, world: topology.World, clock: WorldClock
                   ) -> tuple[dict[str, str] | None, str]:
        """Each container has a /dev/shm of its own: the world's segment is made in the
        client's and the server's, by natsim inside them (the image carries libfaketime and
        the shim), with the same start instant (containers share the host's clocks)."""
        record = json.dumps(clock.to_record())
        found = ""
        for host in (world.client_ns, world.server_ns):
            try:
                done = subprocess.run(["docker", "exec", host, "python3", "-c", _IN_CONTAINER,
                                       record], capture_output=True, text=True, timeout=60,
                                      check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                return None, f"docker exec into {host} failed: {exc}"
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["(no error)"])[-1]
                return None, f"in container {host}: {last} (`make image` again?)"
            found = done.stdout.strip()
        return json.loads(found), ""

    def destroy(self, run_id: str) -> None:
        """Every container and network labelled with the run, whatever state it is in."""
        _remove_run(self.client, run_id)
        (topology.REGISTRY / f"{run_id}.json").unlink(missing_ok=True)


_IN_CONTAINER = """
import json, sys
from simulator.world import modeltime
modeltime.WorldClock.from_record(json.loads(sys.argv[1])).create_segment()
print(json.dumps({"faketime": str(modeltime.faketime_library()),
                  "shim": str(modeltime.shim_library())}))
"""


def _container_sysctls(values: Mapping[str, int | str]) -> dict[str, str]:
    """The namespaced sysctls a container may set (Docker refuses the others, such as the
    IPv6 switches, which its networks handle themselves)."""
    allowed = ("net.ipv4.tcp_", "net.ipv4.ip_local_port_range", "net.core.somaxconn")
    return {k: str(v) for k, v in values.items() if k.startswith(allowed)}


def docker_leftovers(keep: set[str]) -> list[str]:
    """Remove the containers and networks of Docker runs that are no longer alive (all but
    the run ids in ``keep``); quietly nothing where no engine answers."""
    try:
        import docker  # noqa: PLC0415

        client = docker.from_env()
        client.ping()
    except Exception:  # no SDK, no engine: there can be no leftovers of ours
        return []
    flt = {"label": LABEL}
    runs = {c.labels[LABEL] for c in client.containers.list(all=True, filters=flt)}
    runs |= {n.attrs.get("Labels", {}).get(LABEL) for n in client.networks.list(filters=flt)}
    removed = []
    for run_id in sorted(r for r in runs if r and r not in keep):
        removed += _remove_run(client, run_id)
    return removed


def _remove_run(client: Any, run_id: str) -> list[str]:
    import docker  # noqa: PLC0415

    removed = []
    flt = {"label": f"{LABEL}={run_id}"}
    for container in client.containers.list(all=True, filters=flt):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
            removed.append(f"container {container.name}")
    for network in client.networks.list(filters=flt):
        with contextlib.suppress(docker.errors.NotFound):
            network.remove()
            removed.append(f"network {network.name}")
    return removed
