from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from simulator.world import topology
from tests.conftest import SESSION_PREFIX


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            if os.geteuid() != 0 and "rootless" not in item.keywords:
                item.add_marker(pytest.mark.skip(
                    reason="integration tests build network namespaces and need root: "
                           "run `sudo make test`"))


OURS = topology.PREFIX + SESSION_PREFIX


def natsim_namespaces(prefix: str = OURS) -> set[str]:
    """This session's natsim namespaces (another run on the host is none of our business)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.startswith(prefix)}


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    """Every integration test must leave none of this session's namespaces behind."""
    before = natsim_namespaces()
    yield
    leaked = natsim_namespaces() - before
    assert not leaked, f"namespaces leaked: {sorted(leaked)}"
