"""The core must stay pure: no sockets, no subprocesses, no clocks, no pyroute2."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "simulator" / "core"
FORBIDDEN_MODULES = {"socket", "subprocess", "asyncio", "select", "selectors", "pyroute2",
                     "scapy", "time", "os", "threading", "multiprocessing", "fcntl"}


def test_core_imports_nothing_that_does_io() -> None:
    offenders = []
    for path in CORE.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in FORBIDDEN_MODULES:
                    offenders.append(f"{path.name}: {name}")
    assert offenders == []


def test_core_never_reads_the_clock() -> None:
    for path in CORE.glob("*.py"):
        text = path.read_text()
        assert "monotonic(" not in text and "time.time(" not in text, path.name
