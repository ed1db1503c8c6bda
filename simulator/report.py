"""Turning raw event lines into a model-time timeline, a verdict and ``result.json``.

Every process stamps its lines with its own notion of time: the workloads with
``time.monotonic()`` (one clock for every namespace), the middlebox with its model time since
its own origin. :class:`Timebase` maps both onto one axis in model seconds whose zero is the
moment the client sent its request, so "the answer after 400 s" reads as 400 in the report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from rich.text import Text

from simulator.results import write_private


@dataclass
class Timebase:
    speed: float
    t0: float | None = None
    """``time.monotonic()`` at model time zero (the request), once known."""
    mbox_origin: float | None = None

    def model(self, line: dict[str, Any]) -> float:
        assert self.t0 is not None
        if line.get("source") == "middlebox":
            assert self.mbox_origin is not None
            mono = self.mbox_origin + float(line["t"]) / self.speed
        else:
            mono = float(line["mono"])
        return (mono - self.t0) * self.speed

    def wall(self, model_t: float) -> float:
        return model_t / self.speed


@dataclass(frozen=True)
class TimelineEvent:
    t: float
    wall: float
    source: str
    kind: str
    text: str
    raw: dict[str, Any] = field(compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.raw.items() if k not in ("mono", "t")}
        out.update({"t": round(self.t, 3), "wall": round(self.wall, 4), "source": self.source,
                    "kind": self.kind, "text": self.text})
        return out


def format_event(ev: TimelineEvent) -> str:
    return f"{ev.t:9.1f} {ev.wall:8.2f}  {ev.source:<9}  {ev.text}"


SOURCE_STYLES = {"client": "cyan", "server": "magenta", "middlebox": "yellow"}
BAD = {"flow_expired", "rst_sent", "reset", "timeout", "keepalive_failed", "unacknowledged",
       "dropped", "port_allocation_error"}
GOOD = {"answer", "delivered", "keepalive"}


def styled_event(ev: TimelineEvent) -> Text:
    """The same line as :func:`format_event`, coloured for a terminal (rich)."""
    line = Text()
    line.append(f"{ev.t:9.1f} ", style="bold")
    line.append(f"{ev.wall:8.2f}  ", style="dim")
    line.append(f"{ev.source:<9}  ", style=SOURCE_STYLES.get(ev.source, ""))
    style = "bold red" if ev.kind in BAD else "bold green" if ev.kind in GOOD else ""
    line.append(ev.text, style=style)
    return line


TIMELINE_HEADER = f"{'model s':>9} {'wall s':>8}  {'who':<9}  what"


def write_result(path: Path, data: dict[str, Any]) -> None:
    write_private(path, json.dumps(data, indent=2) + "\n")


def print_settings(out: TextIO, settings: list[dict[str, Any]]) -> None:
    """The compressed settings, with the effective model value of every rounded one."""
    for row in settings:
        if "count" in row:
            out.write(f"    {row['setting']:<44} {row['count']} (a count: not scaled)\n")
            continue
        note = ""
        if row["kernel_whole_seconds"] and abs(row["effective_model_s"] - row["model_s"]) > 1e-9:
            note = f"  -> really {row['effective_model_s']:g} model s (whole wall seconds)"
        out.write(f"    {row['setting']:<44} {row['model_s']:>7g} model s = "
                  f"{row['wall_s']:.3g} wall s{note}\n")
