"""The README's shell commands, run as written (after the README's own set-up).

Every ```sh block of the README is either run here, line by line in one shell, with each
line's exit status checked (0, or the ``# exit N`` its comment promises), or listed below
with the reason it cannot run in this suite. A new block that is neither fails the test, so
the README cannot grow a command nobody runs.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"

SKIPPED_LINES = {
    "make test": "it is this suite",
}
SKIPPED_BLOCKS = {
    "make setup": "as an ordinary user: `make test-rootless` (run by .ci/run as natsim-ci) "
                  "covers these commands",
    "make image": "needs a Docker engine and natsim's image: `make test-docker` runs "
                  "docker-compose.yml for both outcomes",
    "sudo apt-get install": "a user's own CI job, for their own tests: what it relies on, "
                            "--natsim-require, is tested in tests/unit/test_plugin_require.py",
    "natsim run nat-gw --backend docker": "needs a Docker engine: `make test-docker` runs "
                                          "the docker backend's run, up, exec and down",
    "make wheel": "installs into a user's own environment: tests/integration/test_wheel.py "
                  "builds the wheel and installs it into a fresh virtual environment",
    "nft -f -": "the conntrack reference's recipe, for a middle namespace: on the host it "
                "would change the host's firewall; tests/integration/"
                "test_kernel_differential.py applies it in its own namespaces",
}


def blocks() -> list[list[str]]:
    out: list[list[str]] = []
    current: list[str] = []
    inside = False
    for line in README.read_text().splitlines():
        if line.startswith("```sh"):
            inside, current = True, []
        elif line.startswith("```") and inside:
            inside = False
            out.append(current)
        elif inside and line.strip():
            current.append(line)
    return out


def first_command(block: list[str]) -> str:
    return block[0].split("#")[0].strip()


def test_every_block_is_run_or_says_why_not() -> None:
    for block in blocks():
        head = first_command(block)
        assert head in RUN or any(head.startswith(k) for k in SKIPPED_BLOCKS), (
            f"README block starting {head!r}: run it in test_readme.py or say why not")


def script(block: list[str]) -> str:
    """One shell script: each line, then a check of its exit status."""
    lines = ["cd " + str(REPO)]
    # a world the block brings up comes down however the block ends (as its last line says)
    downs = [x.split(" #")[0].strip() for x in block if x.startswith("natsim down")]
    if downs:
        lines.append(f"trap '{'; '.join(downs)} >/dev/null 2>&1' EXIT")
    for n, line in enumerate(block, 1):
        command = line.split(" #")[0].strip()
        if command in SKIPPED_LINES:
            continue
        if command.endswith("&"):
            lines.append(command)
            continue
        expected = re.search(r"#\s*exit (\d+)", line)
        want = int(expected.group(1)) if expected else 0
        lines.append(f"{command}\nrc=$?; if [ $rc -ne {want} ]; then echo \"README line {n}: "
                     f"exit $rc, expected {want}: {command}\" >&2; exit 1; fi")
    return "\n".join(lines) + "\n"


RUN = {first_command(b): b for b in blocks()
       if b and not any(first_command(b).startswith(k) for k in SKIPPED_BLOCKS)}


@pytest.mark.parametrize("head", sorted(RUN))
def test_readme_block_runs_as_written(head: str) -> None:
    if not (REPO / ".venv" / "bin" / "natsim").exists():
        pytest.skip("run `make setup` first (the README's set-up)")
    env = {**os.environ, "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}",
           # `make scenario` at speed 100, not the scenario's 35: the same command and
           # verdict in 9 wall seconds instead of 26 (the suite's time is a budget; the
           # speed a scenario takes from its file is checked in tests/unit/test_scenario.py)
           "SPEED": "100"}
    done = subprocess.run(["bash", "-c", script(RUN[head])], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
