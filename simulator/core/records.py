"""Records written to files by one process and read by another, typed at both ends.

A matrix cell's record (``cells/NNN/cell.json``) is written when its run finishes and read
back by ``collect`` -- possibly on another machine, from a folder a Kubernetes job filled
-- to build the reports. It goes through the strict codec (:mod:`simulator.core.jsonvalue`)
both ways, so a record written by another natsim, or edited by hand, is refused naming the
field, instead of a ``KeyError`` in the middle of a report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from simulator.core.jsonvalue import Json


@dataclass(frozen=True)
class Outcomes:
    client: str | None
    server: str | None


@dataclass(frozen=True)
class CellRecord:
    """One cell of a matrix: what was run, what the model predicted, what happened."""

    index: int
    client: str
    """The client profile."""
    appliance: str
    """The column: the appliance with its overrides (``nlb (600 s)``)."""
    idle: float
    speed: float
    predicted: Outcomes
    observed: Outcomes
    verdict: str
    """PASS, FAIL, or ERROR (no verdict: its middlebox died, or the run did not end)."""
    agrees: bool
    results: str
    appliance_name: str = ""
    appliance_title: str = ""
    overrides: Mapping[str, Json] = field(default_factory=dict)
    error: str | None = None
    survives: bool = False
    fixes: tuple[str, ...] = ()
    story: tuple[str, ...] = ()

    @property
    def is_error(self) -> bool:
        return self.verdict == "ERROR"
