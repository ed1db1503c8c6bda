"""The default backend: every host a network namespace, built with pyroute2
(:mod:`simulator.world.topology`), every program started with ``ip netns exec``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO

from simulator.core.configs import MiddleboxConfig, ProgramConfig, encode, module_args
from simulator.core.plan import HostPlan, WorldPlan
from simulator.support.results import write_private
from simulator.world import modeltime, topology
from simulator.world.backends import RealTime, host_command, program_role
from simulator.world.modeltime import WorldClock
from simulator.world.process import Program, spawn


class Namespaces(RealTime):
    name = "namespaces"

    def build(self, plan: WorldPlan, results_dir: Path) -> topology.World:
        return topology.build_world(plan)

    def command(self, host: str, module_args: list[str]) -> list[str]:
        """The argv that runs ``python -m MODULE_ARGS`` inside ``host``."""
        return host_command(self.name, host, [sys.executable, "-m", *module_args])

    def start(self, host: str, config: ProgramConfig, stderr: IO[bytes]) -> Program:
        return spawn(program_role(config), self.command(host, module_args(config)), stderr)

    def middlebox(self, world: topology.World, config: MiddleboxConfig, config_path: Path,
                  stderr: IO[bytes], detached: tuple[IO[bytes], IO[bytes]] | None = None
                  ) -> Program:
        write_private(config_path, encode(config))
        argv = self.command(world.mbox_ns, ["simulator", "middlebox", "--config",
                                            str(config_path.resolve())])
        return spawn("middlebox", argv, stderr, detached=detached)

    def attach(self, world: topology.World, client: HostPlan, attached: bool) -> None:
        topology.set_client_link(world.client_ns, client, world.mbox_inside_mac, attached)

    def model_time(self, world: topology.World, clock: WorldClock
                   ) -> tuple[dict[str, str] | None, str]:
        """The hosts share our /dev/shm and our files: one segment for the world."""
        try:
            libraries = {"faketime": str(modeltime.faketime_library()),
                         "shim": str(modeltime.shim_library())}
            clock.create_segment()
        except (modeltime.ModelTimeError, OSError) as exc:
            return None, str(exc)
        return libraries, ""

    def destroy(self, run_id: str) -> None:
        topology.destroy_world(run_id)
        modeltime.remove_segment(run_id)
