"""``natsim demo``: the story told twice at once, for a room.

Two scenario runs start together, each in its own world: ``nat-gw`` (no keepalive) on the
left, ``nat-gw-keepalive`` (a probe after 300 s) on the right. Their events are merged by
model time and printed as two columns, each with one plain sentence saying what just
happened and why it matters, so the audience sees the same 400-second wait end in a lost
answer on one side and a delivered one on the other.

The runs are ordinary ``natsim run --jsonl`` processes: the demo only narrates what they
report, it decides nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, TextIO

LEFT, RIGHT = "nat-gw", "nat-gw-keepalive"
REPO_ROOT = Path(__file__).resolve().parent.parent
HOLD = 0.3

NARRATION: dict[tuple[str, str], str] = {
    ("middlebox", "flow_created"): "The client connects; the NAT Gateway maps it to a public "
                                   "address and port.",
    ("client", "request_sent"): "The client sends its request and waits for the answer.",
    ("server", "request_received"): "The server starts working. For 400 s, nothing crosses "
                                    "the network.",
    ("middlebox", "keepalive"): "A TCP keepalive probe: zero bytes of data, yet it resets the "
                                "NAT's idle timer.",
    ("middlebox", "flow_expired"): "350 s without a single packet: the NAT Gateway forgets "
                                   "the connection. Nobody is told.",
    ("server", "answer_sent"): "The server sends its answer.",
    ("middlebox", "rst_sent"): "The NAT does not know this connection any more: it drops the "
                               "packet and sends back an RST.",
    ("server", "reset"): "The server gets 'connection reset': its 400 s of work are lost.",
    ("server", "delivered"): "The client's kernel acknowledges the answer.",
    ("client", "answer"): "The client has its answer. The keepalive saved it.",
    ("client", "timeout"): "The client gives up at 900 s, having never heard a thing.",
}
SKIP = {"outcome", "flow_established", "data", "accepted", "connected", "client_closed",
        "flow_closed", "dropped"}


def _spawn(name: str, speed: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "simulator", "run", name, "--speed", f"{speed:g}", "--jsonl"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


class Columns:
    def __init__(self, out: TextIO, width: int) -> None:
        self.out = out
        self.col = max(30, (width - 12) // 2)

    def row(self, t: str, left: str, right: str) -> None:
        lw = textwrap.wrap(left, self.col) or [""]
        rw = textwrap.wrap(right, self.col) or [""]
        for i in range(max(len(lw), len(rw))):
            stamp = t if i == 0 else ""
            a = lw[i] if i < len(lw) else ""
            b = rw[i] if i < len(rw) else ""
            self.out.write(f"{stamp:>8}  {a:<{self.col}}  {b}\n")
        self.out.flush()

    def rule(self) -> None:
        self.out.write("-" * (10 + 2 * self.col) + "\n")


STEP_ORDER = {sentence: i for i, sentence in enumerate(NARRATION.values())}


def _sentence(ev: dict[str, Any]) -> str | None:
    kind, source = str(ev.get("kind")), str(ev.get("source"))
    if kind in SKIP:
        return None
    text = NARRATION.get((source, kind))
    if text is None:
        return None
    if kind == "rst_sent":
        who = "client" if ev.get("side") == "inside" else "server"
        text = text.replace("an RST", f"an RST to the {who}")
    return text


def _print_rows(cols: Columns, due: list[tuple[float, str, dict[str, Any]]]) -> None:
    """One row per event; the same step on both sides at the same moment shares a row."""
    # within one second of model time, the story's own order (NARRATION's), so that both
    # columns tell their t = 0 steps in the same order whatever order the lines arrived in
    items = sorted(((t, name, sentence) for t, name, ev in due
                    if (sentence := _sentence(ev)) is not None),
                   key=lambda item: (round(item[0]), STEP_ORDER.get(item[2], 99), item[0]))
    used: set[int] = set()
    for i, (t, name, sentence) in enumerate(items):
        if i in used:
            continue
        twin = next((j for j, (t2, n2, s2) in enumerate(items)
                     if j > i and j not in used and n2 != name and s2 == sentence
                     and abs(t2 - t) < 5.0), None)
        texts = {LEFT: "", RIGHT: ""}
        texts[name] = sentence
        if twin is not None:
            used.add(twin)
            texts[items[twin][1]] = sentence
        cols.row(f"{round(t) + 0:d}", texts[LEFT], texts[RIGHT])


def run_demo(speed: float = 35.0, width: int | None = None,  # noqa: C901
             out: TextIO | None = None) -> int:
    # long: a narrated script, read top to bottom like the story it tells in a room
    out = out or sys.stdout
    width = width or shutil.get_terminal_size((120, 24)).columns
    cols = Columns(out, width)
    out.write("natsim demo: one slow request (the answer takes 400 s) through an AWS NAT "
              "Gateway, which forgets a connection idle for 350 s.\n")
    out.write(f"Both runs happen now, at speed {speed:g} (1 wall second = {speed:g} model "
              "seconds). Times are model seconds.\n\n")
    cols.row("model s", f"WITHOUT keepalive ({LEFT})",
             f"WITH keepalive 300/15/5 on the socket ({RIGHT})")
    cols.rule()
    procs = {LEFT: _spawn(LEFT, speed), RIGHT: _spawn(RIGHT, speed)}
    buffers = {name: b"" for name in procs}
    pending: list[tuple[float, float, str, dict[str, Any]]] = []  # (arrived, t, side, event)
    verdicts: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    try:
        for proc in procs.values():
            assert proc.stdout is not None
            os.set_blocking(proc.stdout.fileno(), False)
        while True:
            for name, proc in procs.items():
                assert proc.stdout is not None
                with contextlib.suppress(BlockingIOError):
                    buffers[name] += os.read(proc.stdout.fileno(), 65536)
                *lines, buffers[name] = buffers[name].split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    ev = json.loads(line)
                    if ev.get("kind") == "verdict":
                        verdicts[name] = ev
                    elif "t" in ev and "source" in ev:
                        pending.append((time.monotonic(), float(ev["t"]), name, ev))
            now = time.monotonic()
            finished = all(p.poll() is not None for p in procs.values())
            due = sorted((p for p in pending if finished or now - p[0] >= HOLD),
                         key=lambda p: p[1])
            pending = [p for p in pending if p not in due]
            _print_rows(cols, [(t, name, ev) for _, t, name, ev in due])
            if finished and not pending:
                break
            select.select([p.stdout for p in procs.values()
                           if p.stdout is not None and p.poll() is None], [], [], 0.1)
    finally:  # on Ctrl-C or any error, the runs clean up after themselves
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for name, proc in procs.items():
            proc.wait(timeout=30)
            assert proc.stdout is not None and proc.stderr is not None
            errors[name] = proc.stderr.read().decode(errors="replace")
            proc.stdout.close()
            proc.stderr.close()
    cols.rule()
    for name in (LEFT, RIGHT):
        if name not in verdicts:
            out.write(f"{name}: the run failed:\n{errors.get(name, '')}\n")
            return 1
    left, right = verdicts[LEFT], verdicts[RIGHT]  # the two runs' verdict lines
    cols.row("outcome", f"client {left['client']}, server {left['server']}",
             f"client {right['client']}, server {right['server']}")
    def said(v: dict[str, Any]) -> str:
        return {"PASS": "PASS: as the model predicts", "FAIL": "FAIL: not as predicted"}.get(
            str(v["verdict"]), f"ERROR: {v.get('error')}")

    cols.row("", said(left), said(right))
    out.write("\nThe fix is one socket option (TCP_KEEPIDLE below 350 s) or, with SO_KEEPALIVE "
              "alone, the sysctl net.ipv4.tcp_keepalive_time (Linux's default 7200 s is far "
              "too late).\n")
    out.write(f"Pictures and captures: {left['results']}/  and  {right['results']}/\n")
    return 0 if left["verdict"] == right["verdict"] == "PASS" else 1
