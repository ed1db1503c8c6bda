"""The keepalive matrix: clients x appliances x waits, every cell a real run beside the model.

A matrix file (``scenarios/matrix/*.yaml``) names client profiles, appliances and how long
the server stays silent. Each combination is a *cell*: a scenario built from them, whose
expectation is the analytic model's prediction, run for real (namespaces, real sockets). A
cell agrees when what the processes saw is what the model predicted; ``natsim matrix`` exits
0 when every cell agrees.

Cells run in parallel (``--jobs``; contention makes kernel timers late, so the speed is
lowered with more jobs, and the report says so), one results folder each under ``--out``;
a cell whose folder holds its ``cell.json`` with a verdict is not run again (resumable; an
ERROR cell, whose middlebox died, is). ``--cell N`` (or
``$JOB_COMPLETION_INDEX``, as a Kubernetes Indexed Job sets it) runs one cell;
``natsim matrix merge DIR...`` combines cell folders into one report. Reports:
``matrix.json`` (every cell), ``junit.xml`` (a test case per cell, for any CI) and
``matrix.html`` (one self-contained page: the table, coloured, with each cell's fix and a link
to its timeline).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import yaml

from simulator.core import jsonvalue
from simulator.core.advice import Advice, check
from simulator.core.jsonvalue import Json, JsonObject, from_json, to_json
from simulator.core.profiles import get_profile
from simulator.core.records import CellRecord, Outcomes
from simulator.spec.compression import max_safe_speed, nominal_prediction
from simulator.spec.fields import ScenarioError, mapping, number, read_yaml, text
from simulator.spec.scenario import SCENARIO_DIR, Scenario, parse_appliance, parse_scenario
from simulator.support.results import Folder
from simulator.support.results import base as results_base
from simulator.views.matrix_report import write_reports

REPO = Path(__file__).resolve().parents[2]
MATRIX_DIR = SCENARIO_DIR / "matrix"
INDEX_VAR = "JOB_COMPLETION_INDEX"
MAX_CELLS = 1000


@dataclass(frozen=True)
class Cell:
    index: int
    client: str
    appliance: str | Mapping[str, Json]
    """A catalogue name, or a mapping {name:, overrides...}."""
    idle: float
    scenario: Scenario

    @property
    def column(self) -> str:
        """The appliance as the reports name it: its overrides are part of its identity."""
        return appliance_label(self.appliance)

    @property
    def label(self) -> str:
        return f"{self.client} / {self.column} / {self.idle:g} s"

    def document(self) -> JsonObject:
        s = self.scenario
        return {"description": s.description, "appliance": self.appliance, "speed": s.speed,
                "client": {"timeout": s.client_timeout, "profile": self.client},
                "server": {"delay": self.idle},
                "expect": {"client": s.expect_client, "server": s.expect_server}}


def appliance_label(spec: object) -> str:
    """``nlb``, ``nlb (600 s)`` (an idle timeout), ``gwlb (600 s, send_tcp_reset=True)``."""
    if not isinstance(spec, Mapping):
        return str(spec)
    parts = []
    for key, value in spec.items():
        if key == "name":
            continue
        parts.append(f"{value:g} s" if key == "tcp_idle_timeout" and isinstance(value, int | float)
                     else f"{key}={value}")
    return f"{spec.get('name')} ({', '.join(parts)})" if parts else str(spec.get("name"))


@dataclass(frozen=True)
class Matrix:
    name: str
    source: str
    description: str
    cells: list[Cell]
    speed: float


def load_matrix(path_or_name: str) -> Matrix:
    path = Path(path_or_name)
    if not path.exists():
        path = MATRIX_DIR / f"{path_or_name}.yaml"
    if not path.exists():
        raise ScenarioError(str(path_or_name), "", "no such matrix file")
    src = str(path)
    top = mapping(src, "", read_yaml(path), ("description", "clients", "appliances", "idle",
                                             "speed", "client_timeout"))
    lists: dict[str, list[object]] = {}
    for key in ("clients", "appliances", "idle"):
        value = top.get(key)
        if not isinstance(value, list) or not value:
            raise ScenarioError(src, key, "must be a non-empty list")
        lists[key] = value
    for i, client in enumerate(lists["clients"]):
        try:
            get_profile(str(client))
        except KeyError as exc:
            raise ScenarioError(src, f"clients[{i}]", str(exc.args[0])) from None
    for i, spec in enumerate(lists["appliances"]):
        parse_appliance(src, f"appliances[{i}]", spec)
    idles = [number(src, f"idle[{i}]", v) for i, v in enumerate(lists["idle"])]
    speed = number(src, "speed", top.get("speed", 100))
    limit = number(src, "client_timeout", top.get("client_timeout", 900))
    combos = list(itertools.product(lists["clients"], lists["appliances"], idles))
    seen: dict[tuple[str, str, float], int] = {}
    for i, (c, a, idle) in enumerate(combos):
        first = seen.setdefault((str(c), appliance_label(a), idle), i)
        if first != i:
            raise ScenarioError(src, "", f"cell {i} ({c} / {appliance_label(a)} / {idle:g} s) "
                                f"is cell {first} again: give each client, appliance and "
                                "wait once")
    if len(combos) > MAX_CELLS:
        raise ScenarioError(src, "", f"{len(combos)} cells: at most {MAX_CELLS}")
    cells = [_cell(src, i, str(c), a, idle, speed, max(limit, idle + 100))
             for i, (c, a, idle) in enumerate(combos)]
    return Matrix(path.stem, src, text(src, "description", top.get("description", "")), cells,
                  speed)


def _cell(src: str, index: int, client: str, appliance: object, idle: float, speed: float,
          limit: float) -> Cell:
    doc = {"appliance": appliance, "speed": speed,
           "client": {"timeout": limit, "profile": client}, "server": {"delay": idle},
           "expect": {"client": "answer", "server": "delivered"}}
    draft = parse_scenario(doc, f"{src} cell {index}", f"cell{index:03d}")
    pred = nominal_prediction(draft)
    doc["expect"] = {"client": pred.client, "server": pred.server}
    doc["description"] = f"{client} behind {draft.appliance.title}, silent {idle:g} s"
    scenario = parse_scenario(doc, f"{src} cell {index}", f"cell{index:03d}")
    safe = max_safe_speed(scenario)
    if safe < speed:
        scenario = parse_scenario({**doc, "speed": max(1.0, safe)}, scenario.source,
                                  scenario.name)
    # parse_scenario took it, so it is a name or a mapping of one with overrides
    spec = to_json(appliance)
    assert isinstance(spec, str | Mapping)
    return Cell(index, client, spec, idle, scenario)


def jobs_default() -> int:
    """One world per core: more and the kernels' timers (which compression does not slow)
    fight for the same CPUs."""
    return max(1, min(os.cpu_count() or 1, 4))


def speed_for(cell: Cell, jobs: int) -> float:
    """The cell's speed with ``jobs`` worlds at once: lowered by half per extra job, since
    contention makes expiries and probes late; never above the cell's own safe speed."""
    return max(1.0, round(cell.scenario.speed / (1 + 0.5 * (jobs - 1))))


def _done(folder: Folder, cell: Cell) -> bool:
    """Whether ``folder`` holds this cell's finished record (an ERROR is not finished)."""
    text = folder.read_text("cell.json")
    try:
        record = json.loads(text) if text else None
    except ValueError:
        return False
    return isinstance(record, dict) and record.get("verdict") in ("PASS", "FAIL") \
        and record.get("appliance") == cell.column and record.get("client") == cell.client \
        and record.get("idle") == cell.idle


def run_cell(cell: Cell, cells: Folder, jobs: int) -> subprocess.Popen[str] | None:
    """Start one cell's run (None: it is done already)."""
    with cells.sub(f"{cell.index:03d}") as folder:
        if _done(folder, cell):
            return None
        for name in ("cell.json", "run"):  # an interrupted or failed attempt: start over
            folder.remove(name)
        folder.write("scenario.yaml", yaml.safe_dump(cell.document(), sort_keys=False))
        return subprocess.Popen(
            [sys.executable, "-m", "simulator", "run", str(folder / "scenario.yaml"),
             "--speed", str(speed_for(cell, jobs)), "--results", str(folder / "run"),
             "--jsonl"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish_cell(cell: Cell, cells: Folder, proc: subprocess.Popen[str],
                jobs: int) -> CellRecord:
    output, _ = proc.communicate()
    verdict: JsonObject = {}
    for line in output.splitlines():
        if line.startswith("{") and '"kind": "verdict"' in line:
            verdict = json.loads(line)
    s = cell.scenario
    advice = check(s.appliance, get_profile(cell.client), cell.idle, s.client_timeout)
    with cells.sub(f"{cell.index:03d}") as folder:
        record = _record(cell, jobs, verdict, output, advice, folder)
        folder.replace("cell.json", json.dumps(to_json(record), indent=2))
    return record


def _record(cell: Cell, jobs: int, verdict: JsonObject, output: str, advice: Advice,
            folder: Folder) -> CellRecord:
    s = cell.scenario
    observed = Outcomes(*(None if verdict.get(who) is None else jsonvalue.text(verdict, who)
                          for who in ("client", "server")))
    error = jsonvalue.text(verdict, "error") or (None if verdict else output[-2000:])
    return CellRecord(
        index=cell.index, client=cell.client, appliance=cell.column,
        appliance_name=s.appliance.name, appliance_title=s.appliance.title,
        overrides={} if isinstance(cell.appliance, str) else
        {k: v for k, v in cell.appliance.items() if k != "name"},
        idle=cell.idle, speed=speed_for(cell, jobs),
        predicted=Outcomes(s.expect_client, s.expect_server), observed=observed,
        verdict=jsonvalue.text(verdict, "verdict", "ERROR"),
        agrees=verdict.get("verdict") == "PASS",
        error=error or None, survives=advice.survives, fixes=tuple(advice.fixes),
        story=tuple(advice.prediction.story), results=str(folder / "run"))


def run_matrix(matrix: Matrix, out: Folder, jobs: int, only: int | None = None,
               progress: TextIO = sys.stderr) -> list[CellRecord]:
    with out.sub("cells") as cells:
        _run_cells(matrix, cells, jobs, only, progress)
    return collect([out.path])


def _run_cells(matrix: Matrix, out: Folder, jobs: int, only: int | None,
               progress: TextIO) -> None:
    cells = matrix.cells if only is None else [matrix.cells[only]]
    queue = list(cells)
    running: list[tuple[Cell, subprocess.Popen[str]]] = []
    started = time.monotonic()
    done = 0
    while queue or running:
        while queue and len(running) < jobs:
            cell = queue.pop(0)
            proc = run_cell(cell, out, jobs)
            if proc is None:
                done += 1
                progress.write(f"  [{done}/{len(cells)}] {cell.label}: done already\n")
            else:
                running.append((cell, proc))
        for cell, proc in list(running):
            if proc.poll() is not None:
                record = finish_cell(cell, out, proc, jobs)
                running.remove((cell, proc))
                done += 1
                progress.write(f"  [{done}/{len(cells)}] {cell.label}: {record.verdict} "
                               f"(client {record.observed.client}, model "
                               f"{record.predicted.client}) "
                               f"{time.monotonic() - started:.0f} s\n")
                progress.flush()
        time.sleep(0.1)


def collect(folders: list[Path]) -> list[CellRecord]:
    """Every cell record under ``folders``; the same cell (client, appliance with its
    overrides, wait) found twice is kept once, the one with a verdict before an ERROR."""
    records: dict[tuple[str, str, float], CellRecord] = {}
    for folder in folders:
        for path in sorted((folder / "cells").glob("*/cell.json")):
            if path.is_symlink() or path.parent.is_symlink():
                continue
            try:
                record = from_json(CellRecord, json.loads(path.read_text()))
            except (OSError, ValueError) as exc:
                raise ScenarioError(str(path), "", f"not a natsim cell record ({exc})") from None
            key = (record.client, record.appliance, record.idle)
            if key not in records or records[key].is_error:
                records[key] = record
    return sorted(records.values(), key=lambda r: (r.client, r.appliance, r.idle))


FAIL_ON = ("disagreement", "unsafe")
"""What fails a matrix: a cell whose run disagrees with the model (the default: natsim's
own check), or also a cell whose client does not survive (a build that gates on it)."""


def survived(record: CellRecord) -> bool:
    """Whether the cell's client got its answer (what the run saw, not the prediction)."""
    return record.observed.client == "answer"


def exit_status(records: list[CellRecord], fail_on: str = "disagreement") -> int:
    """0 when every cell agrees (and, with ``fail_on="unsafe"``, every client survives), 4
    when any has no verdict (its middlebox died: ERROR), 1 otherwise (or no cells)."""
    if any(r.is_error for r in records):
        return 4
    ok = all(r.agrees and (fail_on != "unsafe" or survived(r)) for r in records)
    return 0 if records and ok else 1


RUN_CAPABILITIES = ["NET_ADMIN", "NET_RAW", "SYS_ADMIN"]
"""What a run needs in a pod, and no more: network namespaces and their mounts (SYS_ADMIN),
links, addresses, routes and sysctls (NET_ADMIN), the dataplane's packet sockets (NET_RAW)."""


def k8s_job(matrix: Matrix, image: str, name: str | None = None) -> JsonObject:
    """A Kubernetes Indexed Job that runs every cell of ``matrix`` as one pod each: the pod
    runs ``natsim matrix FILE``, which takes its cell from ``$JOB_COMPLETION_INDEX``; each
    writes its cell folder under /results (mount a volume there, then ``natsim matrix merge``).
    """
    job = name or f"natsim-matrix-{matrix.name}"
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": job, "labels": {"app.kubernetes.io/name": "natsim"}},
        "spec": {
            "completionMode": "Indexed", "completions": len(matrix.cells),
            "parallelism": min(len(matrix.cells), 8), "backoffLimit": 0,
            "template": {"metadata": {"labels": {"app.kubernetes.io/name": "natsim"}},
                         "spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "cell", "image": image,
                    "args": ["matrix", matrix.name, "--out", "/results"],
                    "securityContext": {"capabilities": {"drop": ["ALL"],
                                                         "add": RUN_CAPABILITIES}},
                    "volumeMounts": [{"name": "results", "mountPath": "/results"}]}],
                "volumes": [{"name": "results", "emptyDir": {}}]}}}}


def main(args: argparse.Namespace) -> int:
    if args.matrix == "merge":
        if not args.folders or args.out is None:
            raise ScenarioError("natsim matrix merge", "", "give DIR... and --out DIR")
        records = collect([Path(f) for f in args.folders])
        with Folder.create(args.out) as merged:
            write_reports(records, merged, "merged matrix", args.fail_on)
        print(f"merged {len(records)} cells into {merged.path}/ (matrix.json, junit.xml, "
              "matrix.html)")
        return exit_status(records, args.fail_on)
    matrix = load_matrix(args.matrix)
    if args.emit is not None:
        print(yaml.safe_dump(k8s_job(matrix, args.image), sort_keys=False), end="")
        return 0
    if args.list:
        for cell in matrix.cells:
            s = cell.scenario
            print(f"{cell.index:4d}  {cell.label:<60} model: client {s.expect_client}, "
                  f"server {s.expect_server}")
        return 0
    only = args.cell
    if only is None and os.environ.get(INDEX_VAR):
        only = int(os.environ[INDEX_VAR])
    if only is not None and not 0 <= only < len(matrix.cells):
        raise ScenarioError(matrix.source, "", f"cell {only}: there are "
                            f"{len(matrix.cells)} (0-{len(matrix.cells) - 1})")
    jobs = args.jobs or jobs_default()
    with Folder.create(args.out or results_base() / f"matrix-{matrix.name}", reuse=True) as out:
        print(f"natsim matrix {matrix.name}: {len(matrix.cells)} cells, {jobs} at once "
              f"(speed lowered to {speed_for(matrix.cells[0], jobs):g} for contention), "
              f"results in {out.path}/", file=sys.stderr)
        records = run_matrix(matrix, out, 1 if only is not None else jobs, only)
        write_reports(records, out, matrix.description or matrix.name, args.fail_on)
    agree = sum(r.agrees for r in records)
    errors = sum(r.is_error for r in records)
    alive = sum(survived(r) for r in records)
    print(f"{agree} of {len(records)} cells agree with the model; {alive} clients survive"
          f"{f'; {errors} ERROR (no verdict: the middlebox died)' if errors else ''}; reports: "
          f"{out.path}/matrix.html, {out.path}/junit.xml, {out.path}/matrix.json")
    return exit_status(records, args.fail_on)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mat = sub.add_parser(
        "matrix", help="clients x appliances x waits: every cell a real run beside the model",
        description="Run every cell of a matrix file (scenarios/matrix/*.yaml), in parallel, "
                    "each a real run whose expectation is the model's prediction; write "
                    "matrix.json, junit.xml and matrix.html. `natsim matrix merge DIR... "
                    "--out DIR` combines cell folders.")
    mat.add_argument("matrix", help="a matrix file or name, or `merge`")
    mat.add_argument("folders", nargs="*", help="(merge) the folders to combine")
    mat.add_argument("--jobs", type=int, default=None, metavar="N",
                     help=f"worlds at once (default {jobs_default()}: one per core)")
    mat.add_argument("--out", type=Path, default=None, metavar="DIR",
                     help="results folder (default results/matrix-NAME); cells already in it "
                          "are not run again")
    mat.add_argument("--cell", type=int, default=None, metavar="N",
                     help=f"run one cell (default: ${INDEX_VAR} if set, as a Kubernetes "
                          "Indexed Job sets it)")
    mat.add_argument("--list", action="store_true", help="print the cells with their index")
    mat.add_argument("--fail-on", choices=FAIL_ON, default="disagreement",
                     help="disagreement (default): exit 1 and a JUnit failure when a run "
                          "disagrees with the model; unsafe: also when a client does not "
                          "survive (gate a build on your clients)")
    mat.add_argument("--emit", choices=("k8s",), default=None,
                     help="print a Kubernetes Indexed Job that runs one cell per pod")
    mat.add_argument("--image", default="natsim:local",
                     help="the image for --emit k8s (default natsim:local, `make image`)")
