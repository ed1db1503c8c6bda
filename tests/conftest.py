"""The whole suite: its own runs only, its results outside the repository, the host as found.

Other natsim runs may be active on the same machine (a developer's second terminal, a
parallel CI job). Every run this session starts, in-process or in a child, gets a run id
beginning with a session prefix (``$NATSIM_RUN_PREFIX``), so the suite's checks look at its
own namespaces and never at another run's. Results go to a temporary folder
(``$NATSIM_RESULTS``), removed at the end. As root, the root network namespace must be the
same after the session as before it (``tests/hostnet.py``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests import hostnet

settings.register_profile("natsim", database=None)  # no .hypothesis/ in the repository
settings.load_profile("natsim")

SESSION_PREFIX = "t" + secrets.token_hex(2)
os.environ["NATSIM_RUN_PREFIX"] = SESSION_PREFIX
RESULTS = tempfile.mkdtemp(prefix="natsim-test-results-")
os.environ["NATSIM_RESULTS"] = RESULTS


def pytest_sessionfinish(session: pytest.Session) -> None:
    shutil.rmtree(RESULTS, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def host_network_untouched() -> Iterator[None]:
    """natsim never touches the host's network: links, addresses, routes, rules, the
    forwarding sysctls and the firewall are as they were once the suite is done."""
    if os.geteuid() != 0:
        yield
        return
    # user-defined Docker networks are left out here: make test makes none, and a Docker
    # run in another terminal may (the Docker tests check their own, whole)
    before = hostnet.snapshot(docker_networks=False)
    yield
    changed = hostnet.differences(before, hostnet.snapshot(docker_networks=False))
    assert not changed, "the suite changed the host's network:\n" + "\n".join(changed)
