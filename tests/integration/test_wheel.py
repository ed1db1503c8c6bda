"""``make wheel``, then ``pip install`` of the wheel into a fresh virtual environment, outside
the clone: the ``natsim`` command runs a scenario (its compiled fast path and timer shim are
the wheel's, its scenarios the wheel's data files) and the pytest plugin is registered by the
wheel's entry point.

The fresh environment gets natsim from the wheel only; its dependencies (matplotlib,
pyroute2, ...) are the suite's own environment's, named after its site-packages by a ``.pth``
line, so the test needs no network: what is tested is what the wheel carries.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PLUGIN_TEST = '''
import pytest

@pytest.mark.natsim(appliance="nat-gw", speed=100)
def test_through_the_installed_plugin(natsim_world):
    import simulator
    assert "/fresh/" in simulator.__file__, simulator.__file__
    done = natsim_world.run("client", ["python3", "-c", "print(1)"])
    assert done.returncode == 0 and done.stdout.strip() == "1"
'''


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with the wheel installed, its own site-packages first."""
    made = subprocess.run(["make", "-s", "wheel"], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)
    assert made.returncode == 0, made.stdout + made.stderr
    [wheel] = (REPO / "dist").glob("natsim-*.whl")
    env_dir = tmp_path_factory.mktemp("wheel") / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True,
                   timeout=120)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python),
                                "install", "-q", "--no-deps", str(wheel)],
                               capture_output=True, text=True, timeout=300, check=False)
    assert installed.returncode == 0, installed.stderr
    # the dependencies, after the fresh site-packages (natsim itself is not taken from
    # there); written after the install: pip, seeing the suite's own natsim through it,
    # would uninstall that one to put the wheel's in its place
    (site / "zz_suite_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env_dir


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NATSIM_SCENARIOS")}
    env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
    return env


def test_the_installed_natsim_runs_a_scenario_from_its_own_files(fresh: Path,
                                                                 tmp_path: Path) -> None:
    python = fresh / "bin" / "python"
    where = subprocess.run(
        [str(python), "-c", "import simulator, simulator.dataplane._fastpath as f; "
         "from simulator.spec.scenario import SCENARIO_DIR; from simulator.world import "
         "modeltime; print(simulator.__file__); print(f.__file__); print(SCENARIO_DIR)"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, check=True).stdout.split()
    assert all(str(fresh) in line for line in where), where  # nothing from the clone
    assert where[2].endswith("share/natsim/scenarios")
    assert list(fresh.glob("lib/python*/site-packages/simulator/world/_timershim*.so"))
    listed = subprocess.run([str(fresh / "bin" / "natsim"), "list"], cwd=tmp_path, env=_env(),
                            capture_output=True, text=True, timeout=60, check=False)
    assert listed.returncode == 0 and "nat-gw-keepalive" in listed.stdout, listed.stderr
    run = subprocess.run([str(fresh / "bin" / "natsim"), "run", "nat-gw-keepalive",
                          "--speed", "100", "--results", str(tmp_path / "run")], cwd=tmp_path,
                         env=_env(), capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0 and "PASS" in run.stdout, run.stdout[-2000:] + run.stderr


def test_the_installed_plugin_gives_a_world(fresh: Path, tmp_path: Path) -> None:
    (tmp_path / "test_mine.py").write_text(PLUGIN_TEST)
    done = subprocess.run([str(fresh / "bin" / "python"), "-m", "pytest", "-q", "-p",
                           "no:cacheprovider", "-p", "no:xdist", "test_mine.py"],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout[-3000:]
