"""``natsim demo``: the story told three times at once, for a room.

Three scenario runs start together, each in its own world: ``nat-gw`` (no keepalive) on the
left, ``nat-gw-keepalive`` (a probe after 300 s) in the middle, and ``l4-proxy-keepalive``
(the same keepalive client, but a real HAProxy with 350 s timeouts where the NAT Gateway
was) on the right. Their events are merged by model time and printed as three columns, each
with one plain sentence saying what just happened and why it matters: the same 400-second
wait ends in a lost answer, a delivered one, and a connection the proxy cut although the
client's keepalive was right (why a proxy cannot stand in for a NAT Gateway).

``natsim demo --story idle-pool`` tells the other story people meet behind a NAT: a pooled
connection reused after 400 s idle. ``nat-gw-idle-pool`` (the NAT Gateway's RST: the pool
retries at once and recovers), ``gwlb-idle-pool`` (a silent drop: the kernel retransmits
with backoff for a quarter of an hour before the application hears anything) and
``nat-gw-idle-pool-keepalive`` (probes every 300 s: the connection is still there). Its
narration lives in :mod:`simulator.views.demo_pool`.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from simulator.core.jsonvalue import Json, number
from simulator.views import demo_pool
from simulator.views.demo_page import write_demo_page

LEFT, RIGHT, PROXY = "nat-gw", "nat-gw-keepalive", "l4-proxy-keepalive"
STORIES = (LEFT, RIGHT, PROXY)
HEADINGS = {LEFT: f"WITHOUT keepalive ({LEFT})",
            RIGHT: f"WITH keepalive 300/15/5 on the socket ({RIGHT})",
            PROXY: f"the same, but an L4 proxy (HAProxy) instead of the NAT ({PROXY})"}
REPO_ROOT = Path(__file__).resolve().parents[2]
HOLD = 1.0
"""Wall seconds an event waits, even once every column has reached its moment, for lines of
the same run that arrive out of order (client, server and middlebox write apart)."""
TICK = 3.0
"""Wall seconds without a row after which one tells the model time (``...``): a room should
see the minutes pass, not a frozen screen."""
SAME_MOMENT = 1.0
"""Model seconds within which two runs' steps are one moment, told on one row."""
MAX_HOLD = 30.0
"""Wall seconds an event waits at most for a column that has not reached its moment (a run
still building its world, or one that is stuck): a lagging column's steps then print late
rather than holding the others back for ever."""

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
    # told before the RST that the client's closing FIN then meets (at the same second)
    ("client", "timeout"): "The client gives up at 900 s, having never heard a thing.",
    ("middlebox", "rst_sent"): "The NAT does not know this connection any more: it drops the "
                               "packet and sends back an RST.",
    ("server", "reset"): "The server gets 'connection reset': its 400 s of work are lost.",
    ("server", "delivered"): "The client's kernel acknowledges the answer.",
    ("client", "answer"): "The client has its answer. The keepalive saved it.",
}
PROXY_NARRATION: dict[tuple[str, str], str] = {
    ("middlebox", "flow_created"): "The client connects to the proxy, which opens its own "
                                   "connection to the server.",
    ("middlebox", "keepalive"): "The keepalive probe reaches the proxy's socket; its kernel "
                                "answers it. HAProxy's idle timer never sees it.",
    ("middlebox", "flow_closed"): "350 s without data: HAProxy's timeout closes both "
                                  "connections (FIN), keepalive or not.",
    ("client", "closed"): "The client's read ends: closed, without an answer.",
    ("server", "reset"): "The server's answer hits the closed connection: its work is lost.",
}
"""What the proxy run's events mean (its middlebox lane is HAProxy's two links)."""
SKIP = {"outcome", "flow_established", "data", "accepted", "connected", "client_closed",
        "flow_closed", "dropped"}


def _spawn(name: str, speed: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "simulator", "run", name, "--speed", f"{speed:g}", "--jsonl"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four"}
NARROWEST_COLUMN = 14
"""Characters: narrower than this, a column's words break mid-word (below about 60)."""


def wrap_text(text: str, width: int) -> str:
    """``text`` with each paragraph (a line of its own) wrapped to ``width``; blank lines
    kept."""
    return "\n".join(textwrap.fill(line, width) if line else ""
                     for line in text.split("\n"))


class Columns:
    """Rows of a stamp and one cell per column, each cell wrapped to its column: the whole
    row stays within ``width`` (the terminal's) for any number of columns."""

    def __init__(self, out: TextIO, width: int, columns: int = 2) -> None:
        self.out = out
        self.columns = columns
        self.col = max(NARROWEST_COLUMN, (width - 10) // columns - 2)

    def row(self, t: str, *texts: str) -> None:
        wrapped = [textwrap.wrap(text, self.col) or [""] for text in texts]
        for i in range(max(len(w) for w in wrapped)):
            stamp = t if i == 0 else ""
            cells = [w[i] if i < len(w) else "" for w in wrapped]
            line = "  ".join(f"{c:<{self.col}}" for c in cells).rstrip()
            self.out.write(f"{stamp:>8}  {line}\n")
        self.out.flush()

    def rule(self) -> None:
        self.out.write("-" * (10 + self.columns * (self.col + 2)) + "\n")


STEP_ORDER = {step: i for i, step in enumerate(NARRATION)}
"""Within one second of model time, steps print in the story's order (NARRATION's)."""


def _sentence(ev: Mapping[str, Json], story: str = LEFT) -> str | None:
    kind, source = str(ev.get("kind")), str(ev.get("source"))
    if story == PROXY:
        if kind == "flow_created" and ev.get("link") == "server side":
            return None  # the proxy's own connection: told with the client's
        if kind == "flow_closed" and "FIN from the proxy to the client" not in str(
                ev.get("text")):
            return None
        return PROXY_NARRATION.get((source, kind)) or (
            None if kind in SKIP else NARRATION.get((source, kind)))
    if kind in SKIP:
        return None
    text = NARRATION.get((source, kind))
    if text is None:
        return None
    if kind == "rst_sent":
        who = "client" if ev.get("side") == "inside" else "server"
        text = text.replace("an RST", f"an RST to the {who}")
    return text


def _print_rows(cols: Columns, due: list[tuple[float, str, Mapping[str, Json]]],
                story: Story | None = None) -> int:
    """One row per event; the same step on both sides at the same moment shares a row."""
    story = story or SLOW_ANSWER
    order = story.step_order or {}
    items = sorted(((t, name, sentence, order.get((str(ev.get("source")),
                                                   str(ev.get("kind"))), 99 if order else 0))
                    for t, name, ev in due
                    if (sentence := story.sentence(ev, name)) is not None),
                   key=lambda item: (round(item[0]), item[3], item[0]))
    shown = story.columns[:cols.columns]
    used: set[int] = set()
    rows = 0
    for i, (t, name, sentence, _) in enumerate(items):
        if i in used:
            continue
        rows += 1
        texts = dict.fromkeys(shown, "")
        texts[name] = sentence
        for j, (t2, n2, s2, _) in enumerate(items):  # the same step in another run, same moment
            if j > i and j not in used and texts.get(n2) == "" and s2 == sentence \
                    and abs(t2 - t) < 5.0:
                used.add(j)
                texts[n2] = sentence
        cols.row(f"{round(t) + 0:d}", *(texts[n] for n in shown))
    return rows


@dataclass(frozen=True)
class Story:
    """What ``natsim demo --story NAME`` runs and says: its scenarios (one column each), the
    words around them, and a sentence for each event worth telling (``None``: not told)."""

    name: str
    columns: tuple[str, ...]
    headings: Mapping[str, str]
    intro: str
    moral: str
    speed: float
    sentence: Callable[[Mapping[str, Json], str], str | None]
    step_order: Mapping[tuple[str, str], int] | None = None
    """Within one second of model time, steps in this order (so that columns whose lines
    arrive in different orders tell simultaneous steps alike); without it, model time's."""


SLOW_ANSWER = Story(
    "slow-answer", STORIES, HEADINGS,
    "natsim demo: one slow request (the answer takes 400 s) through an AWS NAT Gateway, "
    "which forgets a connection idle for 350 s.\n",
    "\nThe fix is one socket option (TCP_KEEPIDLE below 350 s) or, with SO_KEEPALIVE alone, "
    "the sysctl net.ipv4.tcp_keepalive_time (Linux's default 7200 s is far too late).\nAnd "
    "a proxy-based fault injector would have told you the fix does not work: its probes "
    "never cross a proxy, a NAT Gateway sees every one.\n",
    35.0, _sentence, STEP_ORDER)


def idle_pool_story() -> Story:
    """A fresh narrator each time: it counts each column's drops and connections."""
    narrator = demo_pool.PoolNarrator()
    return Story("idle-pool", demo_pool.COLUMNS, demo_pool.HEADINGS, demo_pool.INTRO,
                 demo_pool.MORAL, demo_pool.DEFAULT_SPEED, narrator.sentence)


STORY_NAMES = ("slow-answer", "idle-pool")


def get_story(name: str) -> Story:
    if name == "idle-pool":
        return idle_pool_story()
    if name == "slow-answer":
        return SLOW_ANSWER
    raise ValueError(f"no demo story {name!r} (there are: {', '.join(STORY_NAMES)})")


def demo_header(told: Story, speed: float, width: int) -> str:
    runs = len(told.columns)
    return wrap_text(f"{told.intro}The {NUMBERS.get(runs, str(runs))} runs happen now, at "
                     f"speed {speed:g} (1 wall second = {speed:g} model seconds). Times are "
                     "model seconds.\n\n", width)


def run_demo(speed: float | None = None, width: int | None = None,  # noqa: C901
             out: TextIO | None = None, story: str = "slow-answer",
             page: Path | None = None) -> int:
    # long: a narrated script, read top to bottom like the story it tells in a room
    out = out or sys.stdout
    told = get_story(story)
    speed = speed or told.speed
    width = width or shutil.get_terminal_size((120, 24)).columns
    cols = Columns(out, width, len(told.columns))
    out.write(demo_header(told, speed, width))
    cols.row("model s", *(told.headings[n] for n in told.columns))
    cols.rule()
    procs = {name: _spawn(name, speed) for name in told.columns}
    buffers = {name: b"" for name in procs}
    pending: list[tuple[float, float, str, Mapping[str, Json]]] = []  # (arrived, t, side, event)
    reached: dict[str, float] = {}  # each run's latest model time reported
    heard: dict[str, float] = {}  # and when (wall), to tell the time between events
    last_row = time.monotonic()

    def told_by_all(t: float) -> bool:
        """Every run still going has reported a moment at or after ``t``: the worlds start
        a few wall seconds apart, so arrival order alone would tell one column ahead."""
        return all(reached.get(n, -1.0) >= t or procs[n].poll() is not None for n in procs)
    verdicts: dict[str, Mapping[str, Json]] = {}
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
                        pending.append((time.monotonic(), number(ev, "t"), name, ev))
                        reached[name] = max(reached.get(name, -1.0), number(ev, "t"))
                        heard[name] = time.monotonic()
            now = time.monotonic()
            finished = all(p.poll() is not None for p in procs.values())
            # an event is ready once it has waited HOLD and every run has reached its moment
            # (or MAX_HOLD has passed); everything up to the latest ready moment prints
            # with it (and the same moment's steps), in model-time order, from every run
            cutoff = max((p[1] for p in pending if finished or now - p[0] >= MAX_HOLD
                          or (now - p[0] >= HOLD and told_by_all(p[1]))), default=None)
            due = sorted((p for p in pending
                          if cutoff is not None and p[1] <= cutoff + SAME_MOMENT),
                         key=lambda p: p[1])
            pending = [p for p in pending if p not in due]
            if _print_rows(cols, [(t, name, ev) for _, t, name, ev in due], told):
                last_row = now
            elif not finished and now - last_row >= TICK and reached:
                # the idle minutes pass in wall seconds: a row that tells the model time
                running = [n for n in reached if procs[n].poll() is None] or list(reached)
                clock = min(reached[n] + (now - heard[n]) * speed for n in running)
                cols.row(f"{clock:.0f}", *("..." for _ in told.columns))
                last_row = now
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
    for name in told.columns:
        if name not in verdicts:
            out.write(f"{name}: the run failed:\n{errors.get(name, '')}\n")
            return 1
    ends = [verdicts[name] for name in told.columns]  # the runs' verdict lines
    cols.row("outcome", *(f"client {v['client']}, server {v['server']}" for v in ends))

    def said(v: Mapping[str, Json]) -> str:
        return {"PASS": "PASS: as the model predicts", "FAIL": "FAIL: not as predicted"}.get(
            str(v["verdict"]), f"ERROR: {v.get('error')}")

    cols.row("", *(said(v) for v in ends))
    out.write(wrap_text(told.moral, width))
    out.write("Pictures and captures:\n" + "".join(f"  {v['results']}/\n" for v in ends))
    if page is not None:  # the stories side by side, for a projector
        written = write_demo_page(page, told.intro.strip(), told.moral.strip(), [
            (told.headings[n], Path(str(v["results"]))) for n, v in zip(told.columns, ends,
                                                                       strict=True)])
        out.write(f"Page: {written}\n")
    return 0 if all(v["verdict"] == "PASS" for v in ends) else 1
