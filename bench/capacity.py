"""``make capacity``: the four capacity scenarios at the real numbers, plan against actual.

Each scenario runs whole (55,000 and 65,000 connections and their fixes), and the table
gives its verdict and counts, the wall time its plan says (opening every connection at the
scenario's rate, then the connect timeout and the hold, compressed), the wall time the load
took (from the client's start to its outcome, closing included) and their ratio, and the
whole run's wall time, world building, teardown and pictures included. A load that takes
much longer than its plan fell behind its schedule: the load generator, the dataplane or the
server could not keep the rate, and its counts would not be the scenario's.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any

from simulator.core.plan import load_wall
from simulator.runs.runner import run_scenario
from simulator.spec.compression import plan as make_plan
from simulator.spec.scenario import load_scenario
from simulator.support.results import new_file

SCENARIOS = ("nat-gw-port-exhaustion", "nat-gw-secondary-ips", "hyperplane-eni-limit",
             "hyperplane-more-subnets")
WALL_GOAL = 30.0
"""Seconds a capacity verdict may take at the real numbers."""
PLAN_RATIO = 1.1
"""How far beyond its plan a run may go."""


def measure(name: str, results: Path | None) -> dict[str, Any]:
    scenario = load_scenario(name)
    planned = load_wall(scenario, make_plan(scenario).speed)
    log = io.StringIO()
    result = run_scenario(scenario, results_dir=results / name if results else None, out=log)
    # the load's own schedule: from the client's start to its outcome (every connection
    # opened, timed out or held, and closed)
    done = max((e.wall for e in result.events if e.source == "client"
                and e.kind == "outcome"), default=float("nan"))
    return {"scenario": name, "verdict": result.verdict, "client": result.client,
            "server": result.server, "plan_wall_s": round(planned, 2),
            "load_wall_s": round(done, 2), "ratio": round(done / planned, 3),
            "total_wall_s": round(result.wall_seconds, 2),
            "counters": {k: result.counters.get(k, 0) for k in (
                "ErrorPortAllocation", "RejectedConnectionCount", "ConnectionEstablishedCount")},
            "results": str(result.results_dir)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make capacity", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", default=list(SCENARIOS),
                        help="scenarios (default: the four capacity scenarios)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--results", type=Path, default=None, help="results folders here")
    args = parser.parse_args(argv)
    rows = []
    for name in args.names:
        print(f"  {name} ...", flush=True)
        rows.append(measure(name, args.results))
    print(f"\n{'scenario':<26} {'verdict':<8} {'client':<48} {'plan s':>7} {'load s':>7} "
          f"{'ratio':>6} {'total s':>8}")
    for r in rows:
        print(f"{r['scenario']:<26} {r['verdict']:<8} {r['client']:<48} {r['plan_wall_s']:>7.1f} "
              f"{r['load_wall_s']:>7.1f} {r['ratio']:>6.2f} {r['total_wall_s']:>8.1f}")
    if args.json:
        with new_file(args.json) as out:  # never through a link (simulator/support/results.py)
            out.write(json.dumps(rows, indent=2))
    late = [r["scenario"] for r in rows if r["total_wall_s"] > WALL_GOAL
            or not r["ratio"] <= PLAN_RATIO]
    failed = [r["scenario"] for r in rows if r["verdict"] != "PASS"]
    if failed or late:
        print(f"\nmake capacity: failed: {', '.join(failed) or 'none'}; over {WALL_GOAL:g} s "
              f"or {PLAN_RATIO:g}x their plan: {', '.join(late) or 'none'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
