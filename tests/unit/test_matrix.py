"""Matrix files and reports, without running anything (the integration suite runs cells)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from simulator.fields import ScenarioError
from simulator.matrix import jobs_default, load_matrix, speed_for
from simulator.matrix_report import write_reports


def test_the_shipped_matrix_covers_every_profile_and_the_appliances() -> None:
    from simulator.core.profiles import PROFILES  # noqa: PLC0415

    matrix = load_matrix("keepalive")
    assert {c.client for c in matrix.cells} == set(PROFILES)
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


def _record(client: str, appliance: str, observed: str, agrees: bool = True) -> dict[str, object]:
    return {"index": 0, "client": client, "appliance": appliance, "appliance_title": appliance,
            "idle": 400.0, "speed": 100, "predicted": {"client": observed, "server": "x"},
            "observed": {"client": observed, "server": "x"}, "verdict": "PASS" if agrees
            else "FAIL", "agrees": agrees, "error": None, "survives": observed == "answer",
            "fixes": ["enable TCP keepalive"], "story": ["because"],
            "results": "/tmp/run"}


def test_reports(tmp_path: Path) -> None:
    records = [_record("curl-default", "nat-gw", "answer"),
               _record("curl-no-keepalive", "nat-gw", "timeout"),
               _record("curl-no-keepalive", "gwlb", "timeout", agrees=False)]
    write_reports(records, tmp_path, "t")
    assert len(json.loads((tmp_path / "matrix.json").read_text())["cells"]) == 3
    suite = ET.parse(tmp_path / "junit.xml").getroot()
    assert suite.get("tests") == "3" and suite.get("failures") == "1"
    assert len(suite.findall("testcase/failure")) == 1
    page = (tmp_path / "matrix.html").read_text()
    assert page.count("class='ok'") == 1 and page.count("class='bad") == 2
    assert "disagree with the model" in page and "fix: enable TCP keepalive" in page
    assert "http" not in page.split("<body>")[0]  # self-contained: nothing fetched


def test_the_emitted_job_validates_against_the_kubernetes_schema() -> None:
    import kubernetes_validate  # noqa: PLC0415

    from simulator.matrix import k8s_job  # noqa: PLC0415

    matrix = load_matrix("keepalive")
    job = k8s_job(matrix, "registry.example/natsim:1")
    kubernetes_validate.validate(job, "1.30", strict=True)
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == len(matrix.cells)
    caps = job["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]
    assert caps == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW", "SYS_ADMIN"]}
    broken = {**job, "spec": {**job["spec"], "completionMode": 7}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.30", strict=True)
