"""docker-compose.yml on a real Docker engine: the NAT Gateway's expiry, the keepalive fix,
and a user's own image in the client's place.

Marked ``docker`` and run by ``make test-docker`` (``.ci/run`` does). They install
docker.io and start dockerd when missing (as root), build natsim's image offline (``make
image``), and remove every container, network and image they made. Where no engine can be
had, they are skipped with the reason.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from simulator.runs.runner import run_scenario
from simulator.spec.scenario import load_scenario
from tests import hostnet

REPO = Path(__file__).resolve().parents[2]
SUITE = next((line.split("=", 1)[1].strip() for line in Path("/etc/os-release").read_text()
              .splitlines() if line.startswith("VERSION_CODENAME=")), "bookworm")
BASE = f"natsim-base:{SUITE}"

pytestmark = pytest.mark.docker


def sh(*argv: str, timeout: float = 600, env: dict[str, str] | None = None,
       check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          check=check, env={**os.environ, **(env or {})})


def engine_running() -> bool:
    return shutil.which("docker") is not None and \
        sh("docker", "info", check=False, timeout=30).returncode == 0


def compose_command() -> list[str]:
    if sh("docker", "compose", "version", check=False, timeout=30).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return []


DOCKERD = ["dockerd", "--bridge=none", "--iptables=false", "--ip6tables=false",
           "--ip-forward=false", "--ip-masq=false"]
"""An engine that changes nothing in the root network namespace: no docker0, no iptables
chains or FORWARD policy, ip_forward left alone (natsim's networks are internal and need
none of it; README, "Docker", says what a default engine changes)."""


@pytest.fixture(scope="module")
def engine() -> Iterator[list[str]]:
    """A running Docker engine and a compose command, installed and started if need be.

    An engine these tests started is stopped again at the end (and its handle kept until
    then: a dropped ``Popen`` of a live process is a ResourceWarning, an error here), and
    the root network namespace must then be as it was before (links, addresses, routes,
    rules, forwarding sysctls, firewall).
    """
    if os.geteuid() != 0:
        pytest.skip("the docker tests install and start Docker: run them as root")
    host_before = hostnet.snapshot()
    started: subprocess.Popen[bytes] | None = None
    if not engine_running() or not compose_command():
        missing = [p for p, tool in (("docker.io", "dockerd"), ("docker-compose", None))
                   if shutil.which(tool or "docker-compose") is None]
        if missing:
            sh("apt-get", "install", "-y", "-qq", *missing, check=False, timeout=600,
               env={"DEBIAN_FRONTEND": "noninteractive"})
        if shutil.which("dockerd") and not engine_running():
            started = subprocess.Popen(DOCKERD, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + 60
            while not engine_running() and time.monotonic() < deadline \
                    and started.poll() is None:
                time.sleep(1)
    try:
        if not engine_running():
            why = "" if started is None or started.poll() is None else \
                f" (dockerd exited with status {started.returncode})"
            pytest.skip(f"no Docker engine{why}: apt-get install docker.io, then start dockerd")
        command = compose_command()
        if not command:
            pytest.skip("no compose: apt-get install docker-compose (or the compose plugin)")
        yield command
    finally:
        if started is not None:
            started.terminate()
            try:
                started.wait(timeout=60)
            except subprocess.TimeoutExpired:
                started.kill()
                started.wait()
    changed = hostnet.differences(host_before, hostnet.snapshot())
    assert not changed, "the Docker tests changed the host's network:\n" + "\n".join(changed)


@pytest.fixture(scope="module")
def image(engine: list[str]) -> Iterator[str]:
    tag = f"natsim:test-{secrets.token_hex(3)}"
    had_base = sh("docker", "image", "inspect", BASE, check=False).returncode == 0
    built = sh("make", "image", f"IMAGE={tag}", check=False, timeout=1200)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    try:
        yield tag
    finally:
        sh("docker", "image", "rm", "-f", tag, check=False)
        if not had_base:
            sh("docker", "image", "rm", "-f", BASE, check=False)


def compose_up(engine: list[str], image: str, files: list[str],
               env: dict[str, str]) -> tuple[int, str]:
    """``compose up --exit-code-from client``; its exit status and every container's log."""
    project = f"natsimtest{secrets.token_hex(3)}"
    base = [*engine, "-p", project, *(a for f in files for a in ("-f", f))]
    env = {"NATSIM_IMAGE": image, **env}
    try:
        up = sh(*base, "up", "--exit-code-from", "client", check=False, timeout=300, env=env)
        return up.returncode, up.stdout + up.stderr
    finally:
        sh(*base, "down", "--volumes", "--remove-orphans", check=False, env=env)
        left = sh("docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={project}",
                  "-q", check=False).stdout.split()
        networks = sh("docker", "network", "ls", "--filter", f"name={project}", "-q",
                      check=False).stdout.split()
        assert not left and not networks, (left, networks)


def test_nat_gw_forgets_the_idle_flow(engine: list[str], image: str) -> None:
    code, logs = compose_up(engine, image, ["docker-compose.yml"], {"NATSIM_EXPECT": "timeout"})
    assert code == 0, logs[-4000:]
    assert "PASS: timeout (expected timeout)" in logs
    assert '"kind": "flow_expired"' in logs and "expired after 350 s idle" in logs
    assert "RST sent back to the server" in logs  # its late answer met the NAT's RST


def test_keepalive_sysctls_keep_the_flow(engine: list[str], image: str) -> None:
    code, logs = compose_up(engine, image, ["docker-compose.yml"],
                            {"NATSIM_EXPECT": "answer", "KEEPALIVE_TIME": "9"})
    assert code == 0, logs[-4000:]
    assert "PASS: answer (expected answer)" in logs
    assert '"kind": "keepalive"' in logs  # the kernel's probe crossed the middlebox
    assert '"kind": "flow_expired"' not in logs


def test_a_users_own_image_takes_the_clients_place(engine: list[str], image: str) -> None:
    files = ["docker-compose.yml", "examples/docker-compose.own-client.yml"]
    survived, logs = compose_up(engine, image, files, {"KEEPALIVE_TIME": "9"})
    assert survived == 0, logs[-4000:]
    assert "answer: b'the slow answer" in logs
    lost, logs = compose_up(engine, image, files, {})  # Linux's 7200 s default: too late
    assert lost != 0 and "no answer" in logs, logs[-4000:]


# -- the docker backend: natsim run / up / exec / down with containers ------------------------


def test_docker_backend_sees_what_namespaces_see(image: str, tmp_path: Path) -> None:
    """The same scenario through both backends: the same verdict, the same middlebox story."""
    scenario = load_scenario("nat-gw")
    runs = {}
    for backend in ("namespaces", "docker"):
        chosen = replace(scenario, backend=backend,
                         images={"client": image, "server": image, "middlebox": image}
                         if backend == "docker" else {})
        out = io.StringIO()
        runs[backend] = run_scenario(chosen, 100, tmp_path / backend, out)
        assert runs[backend].passed, out.getvalue()
    ns, dk = runs["namespaces"], runs["docker"]
    assert (dk.client, dk.server) == (ns.client, ns.server) == ("timeout", "reset")
    assert dk.kinds("middlebox") == ns.kinds("middlebox")
    assert dk.counters["IdleTimeoutCount"] == ns.counters["IdleTimeoutCount"] == 1
    assert (tmp_path / "docker" / "capture.pcap").stat().st_size > 24
    assert (tmp_path / "docker" / "metrics.png").exists()


def test_up_exec_status_down_with_docker(image: str) -> None:
    name = f"d{secrets.token_hex(2)}"
    env = {"NATSIM_IMAGE": image}
    up = sh(sys.executable, "-m", "simulator", "up", "--backend", "docker", "--speed", "100",
            "--name", name, env=env, check=False)
    assert up.returncode == 0, up.stderr
    try:
        assert "container natsim-" in up.stdout
        sh(sys.executable, "-m", "simulator", "exec", "--name", name, "server", "--", "sh", "-c",
           "python3 -m http.server 8080 >/dev/null 2>&1 &")
        time.sleep(1.0)
        curl = sh(sys.executable, "-m", "simulator", "exec", "--name", name, "client", "--",
                  "curl", "-s", "-m", "500", "-o", "/dev/null", "-w", "%{http_code}",
                  "http://server:8080/", check=False)  # -m: model seconds (5 wall s)
        assert curl.stdout == "200", curl.stderr
        # the flow, NATed, in the live table (the middlebox rewrites it 4 times a second)
        deadline = time.monotonic() + 3
        while True:
            status = sh(sys.executable, "-m", "simulator", "status", "--name", name)
            if "203.0.113.1" in status.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert "203.0.113.1" in status.stdout, status.stdout
        # a program in a container runs on the world's clock too (the image's libfaketime)
        started = time.monotonic()
        slept = sh(sys.executable, "-m", "simulator", "exec", "--name", name, "client", "--",
                   "python3", "-c", "import time; m = time.monotonic(); time.sleep(350); "
                   "print(round(time.monotonic() - m))", check=False)
        assert slept.stdout.strip() == "350", slept.stdout + slept.stderr
        assert time.monotonic() - started < 350 / 100 + 10
    finally:
        down = sh(sys.executable, "-m", "simulator", "down", "--name", name, check=False)
    assert down.returncode == 0, down.stderr
    assert not sh("docker", "ps", "-a", "-q", "--filter", "label=natsim.run").stdout.strip()


def test_cleanup_removes_a_killed_docker_run(image: str, tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "simulator", "run", "nat-gw", "--backend",
                             "docker", "--speed", "35", "--results", str(tmp_path)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "NATSIM_IMAGE": image})
    assert proc.stdout is not None
    for line in proc.stdout:
        if "new TCP flow" in line:
            break
    proc.kill()
    proc.wait()
    proc.stdout.close()
    left = sh("docker", "ps", "-a", "-q", "--filter", "label=natsim.run").stdout.split()
    assert len(left) == 3  # killed outright: nothing of natsim ran to remove them
    cleaned = sh(sys.executable, "-m", "simulator", "cleanup")
    assert "removed container natsim-" in cleaned.stdout
    assert not sh("docker", "ps", "-a", "-q", "--filter", "label=natsim.run").stdout.strip()
    assert not sh("docker", "network", "ls", "-q", "--filter", "label=natsim.run").stdout.strip()


def test_matrix_cells_as_an_indexed_job_in_containers(image: str, tmp_path: Path) -> None:
    """The Kubernetes Indexed Job path on the engine the suite has: the image run as one
    container per cell with $JOB_COMPLETION_INDEX and only the capabilities the emitted Job
    asks for, each writing its cell folder; then `natsim matrix merge` on the host."""
    from simulator.runs.matrix import RUN_CAPABILITIES  # noqa: PLC0415

    folders = []
    for index in (0, 3):
        folder = tmp_path / f"cell{index}"
        folder.mkdir()
        caps = [a for c in RUN_CAPABILITIES for a in ("--cap-add", c)]
        done = sh("docker", "run", "--rm", "-e", f"JOB_COMPLETION_INDEX={index}",
                  "--cap-drop", "ALL", *caps, "--security-opt", "seccomp=unconfined",
                  "--security-opt", "apparmor=unconfined", "-v", f"{folder}:/results", image,
                  "matrix", "small", "--out", "/results", check=False, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        folders.append(str(folder))
    merged = sh(sys.executable, "-m", "simulator", "matrix", "merge", *folders, "--out",
                str(tmp_path / "merged"), check=False)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    cells = json.loads((tmp_path / "merged" / "matrix.json").read_text())["cells"]
    assert len(cells) == 2 and all(c["agrees"] for c in cells)
