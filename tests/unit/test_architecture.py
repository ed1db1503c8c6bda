"""The layers, by allow-lists. The core stays pure: it imports pure standard-library modules
and ``simulator.core.*`` only, checked on the source (every import statement, wherever it
is) and on a fresh interpreter (what importing the whole core really loads). Every other
folder of ``simulator/`` imports only the folders below it (:data:`LAYERS`)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "simulator" / "core"
ALLOWED = {
    "__future__", "abc", "collections", "dataclasses", "enum", "functools", "heapq",
    "ipaddress", "itertools", "json", "math", "operator", "re", "struct", "types", "typing",
    "zlib", "bisect", "fractions", "string", "textwrap", "statistics", "difflib",
}
"""Pure standard-library modules: no I/O, no clock, no randomness, no processes."""
MAX_LINES = 600


def imports_of(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: inside the core
                names.append("simulator.core")
            elif node.module:
                names.append(node.module)
    return names


def offenders(names: list[str]) -> list[str]:
    return [n for n in names if n.split(".")[0] not in ALLOWED
            and not (n == "simulator.core" or n.startswith("simulator.core."))]


def test_core_imports_only_allowed_modules() -> None:
    bad = {p.name: offenders(imports_of(p)) for p in CORE.glob("*.py")}
    assert {k: v for k, v in bad.items() if v} == {}


@pytest.mark.parametrize("module", ["simulator.runs.runner", "random", "ctypes", "signal", "time",
                                    "os", "socket", "scapy.all"])
def test_the_allow_list_refuses_what_the_deny_list_let_through(module: str,
                                                                tmp_path: Path) -> None:
    """The old deny-list passed ``simulator.runs.runner``, ``random``, ``ctypes`` and ``signal``."""
    planted = tmp_path / "planted.py"
    planted.write_text(f"import {module}\n")
    assert offenders(imports_of(planted)) == [module]
    planted.write_text(f"from {module} import x\n")
    assert offenders(imports_of(planted)) == [module]


def test_a_fresh_interpreter_loads_nothing_impure_with_the_core() -> None:
    """What importing every core module really pulls in (a module may import another that
    the source check would not see, e.g. through a package ``__init__``)."""
    code = (
        "import sys, pkgutil, importlib\n"
        "before = set(sys.modules)\n"
        "import simulator.core as core\n"
        "for m in pkgutil.iter_modules(core.__path__):\n"
        "    importlib.import_module('simulator.core.' + m.name)\n"
        "new = sorted(set(sys.modules) - before)\n"
        "print('\\n'.join(new))\n")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout.split()
    forbidden = {"socket", "subprocess", "select", "selectors", "threading", "time",
                 "random", "ctypes", "signal", "asyncio", "pyroute2", "scapy",
                 "simulator.runs.runner", "simulator.dataplane.packet_loop",
                 "simulator.world.topology", "multiprocessing", "fcntl"}
    loaded = {m for m in out if m.split(".")[0] in forbidden or m in forbidden}
    assert loaded == set()


def test_core_never_reads_the_clock() -> None:
    """No call to a clock in the core (the docstrings may talk about them)."""
    for path in CORE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("monotonic", "time",
                                                                   "perf_counter"):
                pytest.fail(f"{path.name}:{node.lineno} reads a clock")


def test_no_module_is_over_600_lines() -> None:
    """Python and C alike (the fast path and the timer shim are ours to read too)."""
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines())
             for p in (REPO / "simulator").rglob("*") if p.suffix in (".py", ".c", ".h")}
    assert {k: v for k, v in sizes.items() if v > MAX_LINES} == {}


LAYERS = {
    "cli": {"runs", "views", "world", "dataplane", "workloads", "spec", "support", "core"},
    "runs": {"views", "world", "spec", "support", "core"},
    "views": {"spec", "support", "core"},
    "world": {"dataplane", "workloads", "spec", "support", "core"},
    "dataplane": {"spec", "support", "core"},
    "workloads": {"support", "core"},
    "spec": {"support", "core"},
    "support": set(),
    "core": set(),
}
"""What each folder of ``simulator/`` may import of the others: the front ends (``cli``:
the command line and the pytest plugin) over runs (a driver, a script and a verdict), the
views (which read results and never drive a world), the world (one driver and its
backends), the middlebox's process, the programs in the hosts, what users write, the shell's
shared helpers and the pure core."""


def layer_offences(root: Path) -> list[str]:
    """``path imports module`` for every import of a folder its layer may not use."""
    found = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        layer = parts[0] if len(parts) > 1 else None
        for name in imports_of(path):
            if not name.startswith("simulator."):
                continue
            target = name.split(".")[1]
            if layer is None or target == layer:
                continue
            if target not in LAYERS:
                found.append(f"{path.relative_to(root)} imports {name} (no such layer)")
            elif target not in LAYERS[layer]:
                found.append(f"{path.relative_to(root)} imports {name}")
    return found


def test_every_module_lives_in_a_layer() -> None:
    """Only the package's own entry points sit at the top of ``simulator/``."""
    top = sorted(p.name for p in (REPO / "simulator").glob("*.py"))
    assert top == ["__init__.py", "__main__.py"]
    folders = {p.name for p in (REPO / "simulator").iterdir()
               if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(LAYERS)


def test_each_layer_imports_only_the_layers_below_it() -> None:
    assert layer_offences(REPO / "simulator") == []


@pytest.mark.parametrize(("where", "line", "offence"), [
    ("views/page.py", "from simulator.world.live import LiveWorld",
     "views/page.py imports simulator.world.live"),
    ("core/x.py", "import simulator.spec.scenario", "core/x.py imports simulator.spec.scenario"),
    ("workloads/w.py", "from simulator.dataplane import frames",
     "workloads/w.py imports simulator.dataplane"),
    ("spec/s.py", "from simulator.gadgets import x", "spec/s.py imports simulator.gadgets "
     "(no such layer)"),
])
def test_the_layer_check_catches_an_upward_import(tmp_path: Path, where: str, line: str,
                                                  offence: str) -> None:
    planted = tmp_path / where
    planted.parent.mkdir(parents=True)
    planted.write_text(line + "\n")
    assert layer_offences(tmp_path) == [offence]


def test_long_functions_say_why() -> None:
    """No function over 60 lines without a ``# long:`` comment giving the reason."""
    unexplained = []
    for path in (REPO / "simulator").rglob("*.py"):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                body = lines[node.lineno - 1:node.end_lineno]
                if len(body) > 60 and not any(x.strip().startswith("# long:") for x in body[:15]):
                    unexplained.append(f"{path.name}:{node.name} ({len(body)} lines)")
    assert unexplained == []


def explicit_any_lines(root: Path) -> dict[str, list[int]]:
    """Where ``typing.Any`` is written (not imported), by file."""
    found: dict[str, list[int]] = {}
    for path in sorted(root.rglob("*.py")):
        lines = sorted({node.lineno for node in ast.walk(ast.parse(path.read_text()))
                        if (isinstance(node, ast.Name) and node.id == "Any")
                        or (isinstance(node, ast.Attribute) and node.attr == "Any")})
        if lines:
            found[str(path.relative_to(root))] = lines
    return found


def test_the_core_never_says_any() -> None:
    """JSON crosses the core typed (:mod:`simulator.core.jsonvalue`), never as ``Any``."""
    assert explicit_any_lines(CORE) == {}


def test_explicit_any_stays_where_untyped_things_come_in() -> None:
    """Outside the core, ``Any`` only where an untyped API or a user's JSON is passed on
    (subprocess's keyword arguments, matplotlib's arrays, the Docker SDK, the plugin's
    events): 148 lines when the typed configurations came in, 14 after."""
    lines = explicit_any_lines(REPO / "simulator")
    assert sum(len(v) for v in lines.values()) <= 20, lines


def test_the_any_finder_finds_it(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("from typing import Any\nx: Any = 1\ny: 'typing.Any'\n"
                                   "def f(a: typing.Any) -> None: ...\n")
    assert explicit_any_lines(tmp_path) == {"m.py": [2, 4]}
