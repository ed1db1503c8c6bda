"""The matrix's reports: ``matrix.json``, ``junit.xml`` and one self-contained ``matrix.html``.

The HTML page needs no network: styles and the small filter script are inline. Rows are
client profiles, columns appliances (and waits); a cell is green when the client survives,
red when it does not, with how it ends (reset, silent timeout, keepalive gave up), the fix,
and a link to the cell's timeline. A cell whose run disagreed with the model is outlined and
marked: that is a bug in natsim, and the page says so at the top. A cell with no verdict
(ERROR: its middlebox died or hung) is neither: it says so and why, is an ``<error>`` in
JUnit, and a resumed matrix runs it again.

A column is an appliance with its overrides (``nlb (600 s)`` beside ``nlb``): two cells of
the same catalogue name never share a column.
"""

from __future__ import annotations

import contextlib
import html
import json
import xml.etree.ElementTree as ET
from pathlib import Path

from simulator.core.jsonvalue import to_json
from simulator.core.records import CellRecord
from simulator.support.results import Folder

HOW = {"answer": "survives", "timeout": "silent: the client times out",
       "reset": "reset", "keepalive_failed": "keepalive gives up (ETIMEDOUT)"}


def write_reports(records: list[CellRecord], out: Folder, title: str,
                  fail_on: str = "disagreement") -> None:
    out.replace("matrix.json", json.dumps({"title": title, "cells": [to_json(r) for r in records]},
                                          indent=2))
    out.replace("junit.xml", junit(records, title, fail_on))
    out.replace("matrix.html", page(records, title, out.path))


def junit(records: list[CellRecord], title: str, fail_on: str = "disagreement") -> str:
    """A test case per cell. A failure is a disagreement with the model, and with
    ``fail_on="unsafe"`` also a client that does not survive (its fix in the message)."""
    def unsafe(r: CellRecord) -> bool:
        return fail_on == "unsafe" and r.observed.client != "answer"

    suite = ET.Element("testsuite", name=f"natsim matrix: {title}", tests=str(len(records)),
                       failures=str(sum((not r.agrees or unsafe(r)) and not r.is_error
                                        for r in records)),
                       errors=str(sum(r.is_error for r in records)))
    for r in records:
        case = ET.SubElement(suite, "testcase", classname=f"natsim.matrix.{r.appliance}",
                             name=f"{r.client} idle {r.idle:g}s")
        if r.is_error:
            error = ET.SubElement(case, "error", message=(
                "no verdict: " + str(r.error or "the run ended without one")[:500]))
            error.text = str(r.error or "")
        elif not r.agrees:
            failure = ET.SubElement(case, "failure", message=(
                f"observed client {r.observed.client}, server {r.observed.server}; "
                f"the model predicted client {r.predicted.client}, server "
                f"{r.predicted.server}"))
            failure.text = r.error or ""
        elif unsafe(r):
            failure = ET.SubElement(case, "failure", message=(
                f"{r.client} does not survive behind {r.appliance_title or r.appliance} "
                f"(client {r.observed.client}, server {r.observed.server})"
                + (f"; fix: {r.fixes[0]}" if r.fixes else "")))
            failure.text = "\n".join(r.fixes)
        ET.SubElement(case, "system-out").text = (
            "; ".join(r.story) + f"\nresults: {r.results}")
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #212121; }
table { border-collapse: collapse; }
th, td { border: 1px solid #bdbdbd; padding: 0.4em 0.6em; vertical-align: top; }
th { background: #eeeeee; }
td.ok { background: #c8e6c9; } td.bad { background: #ffcdd2; }
td.wrong { outline: 3px solid #6a1b9a; } td.error { background: #fff3e0; }
.how { font-weight: bold; } .fix { font-size: 0.85em; } .small { font-size: 0.8em; }
.summary { margin: 1em 0; } .alert { color: #6a1b9a; font-weight: bold; }
"""

SCRIPT = """
function filter() {
  const c = document.getElementById('client').value, a = document.getElementById('appliance').value;
  document.querySelectorAll('tr[data-client]').forEach(function (row) {
    row.style.display = (!c || row.dataset.client === c) ? '' : 'none';
  });
  document.querySelectorAll('[data-appliance]').forEach(function (cell) {
    cell.style.display = (!a || cell.dataset.appliance === a) ? '' : 'none';
  });
}
"""


def _cell(r: CellRecord, out: Path) -> str:
    if r.is_error:
        return (f"<td class='error' data-appliance='{html.escape(r.appliance)}'>"
                f"<div class='how'>ERROR: no verdict</div><div class='small'>"
                f"{html.escape(str(r.error or 'the run ended without one')[:300])}"
                "</div></td>")
    survives = r.observed.client == "answer"
    cls = "ok" if survives else "bad"
    if not r.agrees:
        cls += " wrong"
    how = HOW.get(str(r.observed.client), str(r.observed.client))
    fix = "" if survives or not r.fixes else \
        f"<div class='fix'>fix: {html.escape(r.fixes[0])}</div>"
    links = []
    for name, label in (("index.html", "run page"), ("timeline.svg", "timeline")):
        target = Path(r.results) / name
        with contextlib.suppress(ValueError):
            target = target.relative_to(out)
        links.append(f"<a href='{html.escape(str(target))}'>{label}</a>")
    wrong = "" if r.agrees else (
        f"<div class='alert'>the model predicted {html.escape(str(r.predicted.client))}"
        "</div>")
    return (f"<td class='{cls}' data-appliance='{html.escape(r.appliance)}'>"
            f"<div class='how'>{html.escape(how)}</div>{wrong}{fix}"
            f"<div class='small'>{' · '.join(links)} · "
            f"server {html.escape(str(r.observed.server))}</div></td>")


def page(records: list[CellRecord], title: str, out: Path) -> str:
    clients = sorted({r.client for r in records})
    columns = sorted({(r.appliance, r.idle) for r in records})
    by = {(r.client, r.appliance, r.idle): r for r in records}
    survive = sum(r.observed.client == "answer" for r in records if not r.is_error)
    errors = [r for r in records if r.is_error]
    wrong = [r for r in records if not r.agrees and not r.is_error]
    head = "".join(f"<th data-appliance='{html.escape(a)}'>{html.escape(a)}<br>"
                   f"<span class='small'>silent {idle:g} s</span></th>" for a, idle in columns)
    rows = []
    for client in clients:
        cells = "".join(_cell(by[(client, a, idle)], out) if (client, a, idle) in by
                        else f"<td data-appliance='{html.escape(a)}'></td>"
                        for a, idle in columns)
        rows.append(f"<tr data-client='{html.escape(client)}'><th>{html.escape(client)}</th>"
                    f"{cells}</tr>")
    options = ("".join(f"<option>{html.escape(c)}</option>" for c in clients),
               "".join(f"<option>{html.escape(a)}</option>"
                       for a in sorted({a for a, _ in columns})))
    alert = (f"<p class='alert'>{len(wrong)} cell(s) disagree with the model: a bug in "
             "natsim (outlined below).</p>" if wrong else
             "" if errors else "<p>Every cell's run agrees with the model.</p>")
    fail = len(records) - survive - len(errors)
    if errors:
        alert += (f"<p class='alert'>{len(errors)} cell(s) have no verdict (ERROR): the "
                  "middlebox died or hung during the run; run the matrix again to redo "
                  "them.</p>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>natsim matrix: {html.escape(title)}</title>
<style>{STYLE}</style><script>{SCRIPT}</script></head>
<body>
<h1>natsim matrix: {html.escape(title)}</h1>
<div class="summary">{len(records)} cells: {survive} survive, {fail} do not.
{alert}</div>
<p>Client <select id="client" onchange="filter()"><option value="">all</option>{options[0]}
</select> Appliance <select id="appliance" onchange="filter()"><option value="">all</option>
{options[1]}</select></p>
<table id="matrix"><tr><th>client \\ appliance</th>{head}</tr>
{''.join(rows)}
</table>
</body></html>
"""
