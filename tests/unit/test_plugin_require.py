"""A plugin test that cannot build its world here (no root) is skipped, with the reason; in
CI, where a skip passes unnoticed, ``--natsim-require`` or ``natsim_require = true`` makes it
a failure. Run without root by pretending to be an ordinary user in the inner session."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

INNER = '''
def test_needs_a_world(natsim_world):
    assert natsim_world is not None
'''
CONFTEST = '''
import os
os.geteuid = lambda: 1000  # as an ordinary user would run it
'''


def _run(tmp_path: Path, *args: str, ini: str = "") -> str:
    (tmp_path / "test_inner.py").write_text(INNER)
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "pytest.ini").write_text(f"[pytest]\n{ini}")
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           "-rA", *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, check=False)
    return done.stdout


@pytest.mark.parametrize("args,ini,outcome", [
    ((), "", "1 skipped"),
    (("--natsim-require",), "", "1 error"),
    ((), "natsim_require = true", "1 error"),
])
def test_cannot_run_here_is_a_skip_or_with_require_a_failure(tmp_path: Path,
                                                             args: tuple[str, ...], ini: str,
                                                             outcome: str) -> None:
    out = _run(tmp_path, *args, ini=ini)
    assert outcome in out, out[-3000:]
    assert "needs root" in out
    if outcome != "1 skipped":
        assert "--natsim-require turns this skip into a failure" in out
