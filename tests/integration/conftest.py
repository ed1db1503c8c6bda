from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.cli.pytest_plugin import NatsimWorld
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


# -- a real PostgreSQL server in a world's server host (test_real_clients, test_pool_clients)

PG_BIN = Path("/usr/lib/postgresql")


def _pg_bin() -> Path | None:
    versions = sorted(PG_BIN.glob("*/bin/postgres")) if PG_BIN.is_dir() else []
    return versions[-1].parent if versions else None


@pytest.fixture
def postgres(natsim_world: NatsimWorld) -> Iterator[None]:
    """A real PostgreSQL server in the server's host, trusting the client's address."""
    bin_dir = _pg_bin()
    if bin_dir is None or shutil.which("psql") is None or shutil.which("runuser") is None:
        pytest.skip("PostgreSQL server and psql not installed (.ci/run installs postgresql)")
    # pytest's tmp folders are root's alone; the server runs as the postgres user
    top = Path(tempfile.mkdtemp(prefix="natsim-pg-"))
    os.chmod(top, 0o755)
    data = top / "data"
    data.mkdir()
    shutil.chown(data, "postgres", "postgres")
    try:
        _start_postgres(natsim_world, bin_dir, data)
        yield
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _start_postgres(natsim_world: NatsimWorld, bin_dir: Path, data: Path) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", str(bin_dir / "initdb"), "-D",
                    str(data), "-A", "trust", "-U", "postgres"], check=True,
                   capture_output=True, timeout=120)
    with (data / "pg_hba.conf").open("a") as hba:
        hba.write("host all all 0.0.0.0/0 trust\n")
    # the server runs as the postgres user, who cannot attach to the world's clock (natsim's,
    # root's alone): it runs on the wall clock (a pg_sleep is given wall seconds)
    natsim_world.start("server", ["runuser", "-u", "postgres", "--", str(bin_dir / "postgres"),
                                  "-D", str(data), "-c", "listen_addresses=*",
                                  "-c", f"unix_socket_directories={data}", "-p", "5432"],
                       wall_time=True)
    natsim_world.wait_for_port("server", 5432, timeout=30)


def compile_java(tmp_path_factory: pytest.TempPathFactory, name: str, source: str) -> Path:
    """``source``'s public class ``name``, compiled into a folder the world's hosts can
    read: the folder to give ``java -cp``."""
    if shutil.which("javac") is None:
        pytest.skip("javac not installed (.ci/run installs a JDK)")
    folder = tmp_path_factory.mktemp("java")
    (folder / f"{name}.java").write_text(textwrap.dedent(source))
    subprocess.run(["javac", "-d", str(folder), str(folder / f"{name}.java")], check=True,
                   capture_output=True, timeout=120)
    os.chmod(folder, 0o755)
    return folder
