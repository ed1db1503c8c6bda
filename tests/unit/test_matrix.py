"""Matrix files and reports, without running anything (the integration suite runs cells)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from simulator.cli import main as cli
from simulator.core.jsonvalue import to_json
from simulator.core.records import CellRecord, Outcomes
from simulator.runs.matrix import (
    _done,
    collect,
    exit_status,
    finish_cell,
    jobs_default,
    load_matrix,
    speed_for,
)
from simulator.spec.fields import ScenarioError
from simulator.support.results import Folder
from simulator.views.matrix_report import write_reports


def test_the_shipped_matrix_covers_every_profile_and_the_appliances() -> None:
    from simulator.core.profiles import PROFILES  # noqa: PLC0415

    matrix = load_matrix("keepalive")
    # the slow-answer question; the pools' profiles answer the reuse question (`natsim
    # check --reuse-after`, the idle-pool scenarios)
    assert {c.client for c in matrix.cells} == {n for n, p in PROFILES.items() if not p.pooled}
    assert {c.scenario.appliance.name for c in matrix.cells} >= {
        "nat-gw", "nlb", "vpc-endpoint", "gwlb", "global-accelerator", "azure-nat-gw",
        "gcp-nat"}
    # each cell expects what the model predicts
    ga = next(c for c in matrix.cells if c.client == "dotnet-connectcallback-300"
              and c.scenario.appliance.name == "global-accelerator")
    assert ga.scenario.expect_client == "reset"


@pytest.mark.parametrize("text,field", [
    ("clients: []\nappliances: [nat-gw]\nidle: [400]\n", "clients"),
    ("clients: [nope]\nappliances: [nat-gw]\nidle: [400]\n", "clients[0]"),
    ("clients: [curl-default]\nappliances: [nat-gateway]\nidle: [400]\n", "appliances[0].name"),
    ("clients: [curl-default]\nappliances: [nat-gw]\nidle: [-1]\n", "idle[0]"),
    ("clients: [curl-default]\nappliances: [nat-gw]\nidle: [400]\ncolour: red\n", "colour"),
])
def test_matrix_files_are_checked_naming_the_field(tmp_path: Path, text: str,
                                                   field: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_matrix(str(path))
    assert info.value.field == field


def test_more_jobs_lower_the_speed() -> None:
    cell = load_matrix("small").cells[0]
    assert speed_for(cell, 1) == cell.scenario.speed
    assert speed_for(cell, 2) < speed_for(cell, 1)
    assert 1 <= jobs_default() <= 4


def _record(client: str, appliance: str, observed: str, agrees: bool = True,
            verdict: str | None = None) -> CellRecord:
    return CellRecord(
        index=0, client=client, appliance=appliance, appliance_title=appliance, idle=400.0,
        speed=100, predicted=Outcomes(observed, "x"), observed=Outcomes(observed, "x"),
        verdict=verdict or ("PASS" if agrees else "FAIL"), agrees=agrees,
        error="the middlebox was killed by signal 9 during the run"
        if verdict == "ERROR" else None, survives=observed == "answer",
        fixes=("enable TCP keepalive",), story=("because",), results="/tmp/run")


def test_reports(tmp_path: Path) -> None:
    records = [_record("curl-default", "nat-gw", "answer"),
               _record("curl-no-keepalive", "nat-gw", "timeout"),
               _record("curl-no-keepalive", "gwlb", "timeout", agrees=False)]
    with Folder.create(tmp_path / "out") as out:
        write_reports(records, out, "t")
    out_dir = tmp_path / "out"
    assert len(json.loads((out_dir / "matrix.json").read_text())["cells"]) == 3
    suite = ET.parse(out_dir / "junit.xml").getroot()
    assert suite.get("tests") == "3" and suite.get("failures") == "1"
    assert suite.get("errors") == "0"
    assert len(suite.findall("testcase/failure")) == 1
    page = (out_dir / "matrix.html").read_text()
    assert page.count("class='ok'") == 1 and page.count("class='bad") == 2
    assert "disagree with the model" in page and "fix: enable TCP keepalive" in page
    assert "http" not in page.split("<body>")[0]  # self-contained: nothing fetched


def test_an_error_cell_is_an_error_everywhere(tmp_path: Path) -> None:
    records = [_record("curl-default", "nat-gw", "answer"),
               _record("curl-no-keepalive", "gwlb", "timeout", agrees=False,
                       verdict="ERROR")]
    with Folder.create(tmp_path / "out") as out:
        write_reports(records, out, "t")
    suite = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    assert suite.get("errors") == "1" and suite.get("failures") == "0"
    assert len(suite.findall("testcase/error")) == 1 and not suite.findall("testcase/failure")
    page = (tmp_path / "out" / "matrix.html").read_text()
    assert "ERROR: no verdict" in page and "middlebox was killed" in page
    assert "disagree with the model" not in page
    assert exit_status(records) == 4
    assert exit_status(records[:1]) == 0
    assert exit_status([_record("c", "nlb", "timeout", agrees=False)]) == 1


SAME_NAME = ("clients: [curl-no-keepalive]\n"
             "appliances: [nlb, {name: nlb, tcp_idle_timeout: 600}]\nidle: [400]\nspeed: 100\n")


def test_cells_of_one_appliance_with_overrides_stay_apart(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(SAME_NAME)
    matrix = load_matrix(str(path))
    assert [c.column for c in matrix.cells] == ["nlb", "nlb (600 s)"]
    assert [c.scenario.expect_client for c in matrix.cells] == ["timeout", "answer"]
    # two cells finish, as their runs report: both come back, under their own labels
    with Folder.create(tmp_path / "out") as out, out.sub("cells") as cells:
        for cell, observed in zip(matrix.cells, ("timeout", "answer"), strict=True):
            verdict = {"kind": "verdict", "verdict": "PASS", "client": observed,
                       "server": "delivered", "error": None}
            finish_cell(cell, cells, _Finished(json.dumps(verdict)), 1)  # type: ignore[arg-type]
    records = collect([tmp_path / "out"])
    assert [(r.appliance, r.observed.client) for r in records] == [
        ("nlb", "timeout"), ("nlb (600 s)", "answer")]
    with Folder.create(tmp_path / "report") as out:
        write_reports(records, out, "t")
    page = (tmp_path / "report" / "matrix.html").read_text()
    assert "nlb (600 s)" in page and page.count("class='ok'") == 1
    assert ET.parse(tmp_path / "report" / "junit.xml").getroot().get("tests") == "2"


class _Finished:
    """What finish_cell reads of a cell's ``natsim run --jsonl``."""

    def __init__(self, output: str) -> None:
        self.output = output

    def communicate(self) -> tuple[str, None]:
        return self.output + "\n", None


def test_the_same_cell_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("clients: [curl-default]\nappliances: [nlb, {name: nlb}]\nidle: [400]\n")
    with pytest.raises(ScenarioError, match=r"cell 1 .* is cell 0 again"):
        load_matrix(str(path))


def test_a_resumed_matrix_runs_its_error_cells_again(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(SAME_NAME)
    first, second = load_matrix(str(path)).cells
    with Folder.create(tmp_path / "out") as out, out.sub("cells") as cells:
        for cell, verdict in ((first, "PASS"), (second, "ERROR")):
            with cells.sub(f"{cell.index:03d}") as folder:
                folder.write("cell.json", json.dumps(
                    to_json(_record(cell.client, cell.column, "x", verdict=verdict))))
                assert _done(folder, cell) is (verdict == "PASS")
        with cells.sub("000") as folder:  # the record of another cell is not this one's
            assert not _done(folder, second)


def test_a_planted_link_in_the_matrix_folder_is_refused(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    out = tmp_path / "out"
    (out / "cells").mkdir(parents=True)
    (out / "cells" / "000").symlink_to(victim)
    assert cli.main(["matrix", "small", "--out", str(out), "--cell", "0"]) == cli.EXIT_USAGE
    assert "symbolic link" in capsys.readouterr().err
    assert not any(victim.iterdir())
    (tmp_path / "file").write_text("x")
    assert cli.main(["matrix", "small", "--out", str(tmp_path / "file")]) == cli.EXIT_USAGE
    assert "not a directory" in capsys.readouterr().err


def test_the_emitted_job_validates_against_the_kubernetes_schema() -> None:
    import kubernetes_validate  # noqa: PLC0415

    from simulator.runs.matrix import k8s_job  # noqa: PLC0415

    matrix = load_matrix("keepalive")
    job: dict[str, Any] = json.loads(json.dumps(k8s_job(matrix, "registry.example/natsim:1")))
    kubernetes_validate.validate(job, "1.30", strict=True)
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == len(matrix.cells)
    caps = job["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]
    assert caps == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW", "SYS_ADMIN"]}
    broken = {**job, "spec": {**job["spec"], "completionMode": 7}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.30", strict=True)


def test_fail_on_unsafe_gates_a_build_on_the_clients(tmp_path: Path) -> None:
    """Every cell agrees with the model, yet one client does not survive: by default the
    matrix passes (natsim was right); with --fail-on unsafe it fails, in the exit status
    and in JUnit, with the cell's fix."""
    records = [_record("curl-default", "nat-gw", "answer"),
               _record("curl-no-keepalive", "nat-gw", "timeout")]
    assert exit_status(records) == 0
    assert exit_status(records, "unsafe") == 1
    assert exit_status(records[:1], "unsafe") == 0
    with Folder.create(tmp_path / "out") as out:
        write_reports(records, out, "t", "unsafe")
    suite = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    assert suite.get("failures") == "1"
    failure = suite.find("testcase/failure")
    assert failure is not None
    assert "curl-no-keepalive does not survive" in str(failure.get("message"))
    assert "fix: enable TCP keepalive" in str(failure.get("message"))
    with Folder.create(tmp_path / "default") as out:
        write_reports(records, out, "t")
    assert ET.parse(tmp_path / "default" / "junit.xml").getroot().get("failures") == "0"
