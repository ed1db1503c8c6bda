"""``natsim matrix`` for real: cells in parallel, resumed, one cell by index (as a Kubernetes
Indexed Job runs it), merged; and the HTML report in a real headless browser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def natsim(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "simulator", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, **(env or {})})


def test_the_small_matrix_runs_agrees_resumes_and_merges(tmp_path: Path) -> None:
    out = tmp_path / "m"
    done = natsim("matrix", "small", "--jobs", "2", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    cells = json.loads((out / "matrix.json").read_text())["cells"]
    assert len(cells) == 4 and all(c["agrees"] for c in cells)
    assert {c["observed"]["client"] for c in cells} == {"timeout", "answer", "reset"}
    assert all((Path(c["results"]) / "timeline.svg").exists() for c in cells)
    # each cell links to its run's page, which is there
    page = (out / "matrix.html").read_text()
    for c in cells:
        link = (Path(c["results"]) / "index.html").relative_to(out)
        assert f"href='{link}'>run page</a>" in page and (out / link).is_file()
    again = natsim("matrix", "small", "--jobs", "2", "--out", str(out))
    assert again.returncode == 0 and again.stderr.count("done already") == 4
    # one cell at a time, by the index a Kubernetes Indexed Job gives each pod (two pods at
    # once, as a Job runs them), then merged
    pods = {index: subprocess.Popen(
        [sys.executable, "-m", "simulator", "matrix", "small", "--out",
         str(tmp_path / f"c{index}")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "JOB_COMPLETION_INDEX": str(index)}) for index in (0, 3)}
    for pod in pods.values():
        _, err = pod.communicate(timeout=600)
        assert pod.returncode == 0, err
    merged = natsim("matrix", "merge", str(tmp_path / "c0"), str(tmp_path / "c3"), "--out",
                    str(tmp_path / "merged"))
    assert merged.returncode == 0, merged.stderr
    assert len(json.loads((tmp_path / "merged" / "matrix.json").read_text())["cells"]) == 2
    _look_at_it_in_a_browser(out / "matrix.html", tmp_path / "shot.png")


def _look_at_it_in_a_browser(page: Path, shot: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium not installed (.ci/run installs it)")
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={shot.parent / 'chromium'}",
         "--enable-logging=stderr", "--v=0", f"--screenshot={shot}",
         "--window-size=1300,700", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert shot.exists() and shot.stat().st_size > 5_000, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line
               and ("Uncaught" in line or "Error" in line)]
    assert console == [], console


def test_the_plugins_worlds_are_safe_under_xdist() -> None:
    """``pytest -n 2``: each worker's worlds have their own names, namespaces and run ids."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider",
                           "-q", "examples/test_my_client.py"], cwd=REPO, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "3 passed" in done.stdout
