"""The timeline picture: what client, middlebox and server saw, on one model-time axis.

Three lanes, top to bottom: client, middlebox, server. The request and the answer are arrows
between the lanes; the middlebox lane shows each flow's life as a bar and, after every
packet, the idle countdown to the appliance's deadline (a keepalive probe restarts it); an
expiry is a red cross, an RST a red arrow back to whoever sent the late packet. The top axis
gives wall seconds, so the picture also says how long the compressed run took.

Written as SVG (for documents) and PNG (for slides) with matplotlib's Agg backend: no
display is needed.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from simulator.core.jsonvalue import Json, number, text
from simulator.core.session import TimelineEvent
from simulator.support.results import Folder

LANES = {"client": 2.5, "middlebox": 1.35, "server": 0.0}
COLOURS = {"ok": "#2e7d32", "bad": "#c62828", "info": "#1565c0", "idle": "#f9a825",
           "flow": "#90caf9", "grey": "#616161"}
ACTIVITY = {"flow_created", "data", "keepalive", "flow_established"}
MARKERS = {
    ("client", "request_sent"): ("o", "info", "request sent"),
    ("client", "answer"): ("*", "ok", "answer received"),
    ("client", "timeout"): ("X", "bad", "client gives up (timeout)"),
    ("client", "reset"): ("X", "bad", "client reset"),
    ("client", "keepalive_failed"): ("X", "bad", "keepalive failed"),
    ("client", "connect_failed"): ("x", "bad", "connect failed"),
    ("client", "closed"): ("X", "bad", "closed without an answer"),
    ("server", "request_received"): ("o", "info", "request received"),
    ("server", "answer_sent"): ("D", "info", "answer sent"),
    ("server", "delivered"): ("*", "ok", "answer delivered"),
    ("server", "reset"): ("X", "bad", "server reset"),
    ("server", "unacknowledged"): ("X", "bad", "answer never acknowledged"),
}


def seconds_label(t: float) -> str:
    """A model time as a picture labels it: whole seconds, and never "-0 s" (an event a
    few milliseconds before the request is at 0 s)."""
    return f"{round(t) + 0:d} s"


def _flows(events: Sequence[TimelineEvent]) -> dict[str, list[TimelineEvent]]:
    """Events by flow; in a chain each appliance numbers its own flows."""
    flows: dict[str, list[TimelineEvent]] = {}
    for ev in events:
        flow = ev.raw.get("flow")
        if ev.source == "middlebox" and isinstance(flow, int):
            stage, link = ev.raw.get("appliance"), ev.raw.get("link")
            label = (f"{link} connection #{flow}" if link else
                     f"{stage} flow #{flow}" if stage else f"flow #{flow}")
            flows.setdefault(label, []).append(ev)
    return flows


def draw(events: Sequence[TimelineEvent], timeout: float, speed: float | None,  # noqa: C901
         title: str, out: Folder, stem: str) -> list[Path]:
    """Write ``stem``.svg and .png into ``out``; return their paths. ``speed`` None: the
    events are a capture's, in its own time (``natsim replay``)."""
    # long: one matplotlib figure drawn top to bottom (lanes, flows, arrows, labels); split
    # into helpers it would pass the same axes and scales around for no clarity
    # every backend (server, server1, ...) shares the server lane
    events = [TimelineEvent(e.t, e.wall, "server", e.kind, e.text, e.raw)
              if e.source.startswith("server") else e for e in events]
    fig, ax = plt.subplots(figsize=(12, 5.4), dpi=110)
    # the axis ends with the story (a run that ends long before the timeout is not squashed)
    end = max(ev.t for ev in events) * 1.04 + 1 if events else timeout
    start = min([ev.t for ev in events] + [0.0])
    for name, y in LANES.items():
        ax.axhline(y, color="#e0e0e0", lw=8, zorder=0, solid_capstyle="butt")
        ax.text(start - 0.01 * (end - start), y, name, ha="right", va="center", fontsize=11,
                fontweight="bold")

    # Flows in the middlebox lane: life bar, idle countdowns, expiry.
    y_mb = LANES["middlebox"]
    labelled_once: set[str] = set()
    for index, (flow_label, evs) in enumerate(_flows(events).items()):
        first = index == 0
        flow_timeout = next((number(e.raw, "timeout") for e in evs if "timeout" in e.raw),
                            timeout)
        created = next((e.t for e in evs if e.kind == "flow_created"), evs[0].t)
        ended = next((e.t for e in evs if e.kind in ("flow_expired",)), None)
        closed = next((e.t for e in evs if e.kind == "flow_closed"), None)
        bar_end = ended if ended is not None else (closed if closed is not None else end)
        bar_y = y_mb + 0.12 + 0.16 * (index % 3)  # several flows: one above the other
        ax.plot([created, bar_end], [bar_y] * 2, color=COLOURS["flow"], lw=5,
                solid_capstyle="butt", label="flow in the table" if first else None)
        ax.text(created, bar_y + 0.05, flow_label, fontsize=8, color=COLOURS["grey"])
        # The idle time as a sawtooth under the lane: it climbs towards the timeout (the
        # dotted line) and drops to zero at every packet; reaching the line is expiry.
        base, height = y_mb - 0.6, 0.4
        ax.plot([created, bar_end], [base + height] * 2, color=COLOURS["idle"], lw=0.8,
                ls=":")
        # a probe that did not refresh the timer (Global Accelerator, a proxy) is no activity
        activity = sorted(e.t for e in evs if e.kind in ACTIVITY
                          and e.raw.get("refreshed", True) is not False)
        for i, t in enumerate(activity):
            nxt = activity[i + 1] if i + 1 < len(activity) else None
            stop = min(t + flow_timeout, nxt if nxt is not None else t + flow_timeout,
                       bar_end)
            if stop <= t:
                continue
            ax.plot([t, stop, stop], [base, base + height * (stop - t) / flow_timeout, base],
                    color=COLOURS["idle"], lw=1.8,
                    label="idle time (timeout at the dotted line)"
                    if "idle" not in labelled_once else None)
            labelled_once.add("idle")
        for e in evs:
            if e.kind == "keepalive":
                ax.plot(e.t, bar_y, marker="|", ms=18, mew=2, color=COLOURS["info"],
                        label="keepalive probe" if e is _first(evs, "keepalive") else None)
            elif e.kind == "flow_expired":
                ax.plot(e.t, y_mb, marker="X", ms=13, color=COLOURS["bad"],
                        label="flow expired" if first else None)
                stage = text(e.raw, "appliance")
                ax.annotate(f"{stage + ' ' if stage else ''}expired after {flow_timeout:g} s "
                            "idle", (e.t, y_mb), xytext=(-8, 10 + 11 * index),
                            textcoords="offset points", fontsize=8,
                            ha="right", color=COLOURS["bad"])

    # A replayed capture's late packet: an arrow from its sender's lane to the middlebox.
    for e in events:
        if e.source == "middlebox" and e.kind == "late_packet":
            lane = LANES["client"] if e.raw.get("sender") == "client" else LANES["server"]
            _arrow(ax, e.t, lane, e.t, y_mb, COLOURS["bad"])
            ax.text(e.t, (lane + y_mb) / 2, f" {e.text} ({seconds_label(e.t)})",
                    color=COLOURS["bad"], fontsize=8, va="center", ha="right")
    # Drops and RSTs: an arrow from the middlebox back to the sender's lane.
    for e in events:
        if e.source != "middlebox" or e.kind != "rst_sent":
            continue
        target = LANES["client"] if e.raw.get("side") == "inside" else LANES["server"]
        x = e.t + 0.006 * (end - start)  # beside the packet it answers, not on top of it
        ax.annotate("", xy=(x, target), xytext=(x, y_mb),
                    arrowprops={"arrowstyle": "-|>", "color": COLOURS["bad"], "lw": 1.8})
        ax.text(x, (target + y_mb) / 2, " RST", color=COLOURS["bad"], fontsize=8,
                va="center")

    # Request and answer arrows between the endpoints.
    sent = _find(events, "client", "request_sent")
    got = _find(events, "server", "request_received")
    if sent is not None and got is not None:
        _arrow(ax, sent.t, LANES["client"], got.t, LANES["server"], COLOURS["info"])
    answer = _find(events, "server", "answer_sent")
    if answer is not None:
        received = _find(events, "client", "answer")
        if received is not None:
            _arrow(ax, answer.t, LANES["server"], received.t, LANES["client"], COLOURS["ok"])
        else:
            x = answer.t - 0.006 * (end - start)
            _arrow(ax, x, LANES["server"], x, y_mb - 0.05, COLOURS["bad"])

    labelled: set[str] = set()
    last_label: dict[str, tuple[float, int]] = {}
    crowd = 0.07 * (end - start)
    for e in events:
        spec = MARKERS.get((e.source, e.kind))
        if spec is None:
            continue
        marker, colour, label = spec
        ax.plot(e.t, LANES[e.source], marker=marker, ms=11, color=COLOURS[colour],
                label=label if label not in labelled else None, zorder=5)
        labelled.add(label)
        # Labels of nearly simultaneous events alternate above and below the lane.
        prev = last_label.get(e.source)
        level = prev[1] + 1 if prev is not None and e.t - prev[0] < crowd else 0
        last_label[e.source] = (e.t, level)
        # beside the marker (right of it), above the lane for the client, below it for the
        # server, on a white ground: clear of the vertical arrows that start at the marker
        below = e.source == "server"
        offset = (-30 if below else 10) + (22 if below else -22) * (level % 2)
        right = e.t > start + 0.75 * (end - start)  # near the right edge: to the left
        ax.annotate(f"{label} ({seconds_label(e.t)})", (e.t, LANES[e.source]),
                    xytext=(-9 if right else 9, offset), textcoords="offset points",
                    ha="right" if right else "left", fontsize=8,
                    color=COLOURS[colour] if colour != "info" else "black",
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85,
                          "pad": 0.6}, zorder=6)

    ax.set_xlim(start - 0.02 * (end - start), end)
    ax.set_ylim(-0.85, 3.15)
    ax.set_yticks([])
    _time_axes(ax, speed)
    for side in ("left", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title(title, fontsize=11, pad=10)
    _path_events(ax, events)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, -0.42), ncol=5, fontsize=8,
                  frameon=False)
    return _save(fig, out, stem)


def _time_axes(ax: Axes, speed: float | None) -> None:
    """Model time below; wall time at the run's speed above. A capture (``speed`` None)
    has only its own time: there was no compression to undo."""
    if speed is None:
        ax.set_xlabel("capture time (s)")
        return
    ax.set_xlabel("model time (s)")

    def to_wall(t: Any) -> Any:  # matplotlib passes arrays
        return t / speed

    def to_model(w: Any) -> Any:
        return w * speed

    top = ax.secondary_xaxis("top", functions=(to_wall, to_model))
    top.set_xlabel(f"wall time (s) at speed {speed:g}")


def _path_events(ax: Axes, events: Sequence[TimelineEvent]) -> None:
    """A path event (attach, restart, blackhole...) is a dashed line across every lane,
    named at the top: it happens to the path, not to one host."""
    for e in events:
        if e.kind != "path_event":
            continue
        ax.axvline(e.t, color=COLOURS["grey"], ls="--", lw=1.2, zorder=1)
        what = str(e.raw.get("path_event", "path event")).replace("_", " ")
        phase = e.raw.get("phase")
        if phase and phase != "start":
            what += f" ({phase})"
        ax.text(e.t, 3.05, f" {what} ({seconds_label(e.t)})", rotation=0, fontsize=8, va="top",
                color=COLOURS["grey"], bbox={"facecolor": "white", "edgecolor": "none",
                                             "alpha": 0.85, "pad": 0.6})


def _save(fig: Figure, out: Folder, stem: str) -> list[Path]:
    """``stem``.svg (its text stays searchable text) and .png in ``out``, written through
    the folder's descriptor; closes the figure."""
    fig.tight_layout()
    paths = []
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        for suffix in ("svg", "png"):
            with out.open(f"{stem}.{suffix}", "wb") as f:
                fig.savefig(f, format=suffix)
            paths.append(out / f"{stem}.{suffix}")
    plt.close(fig)
    return paths


def _first(events: Sequence[TimelineEvent], kind: str) -> TimelineEvent | None:
    return next((e for e in events if e.kind == kind), None)


def _find(events: Sequence[TimelineEvent], source: str, kind: str) -> TimelineEvent | None:
    return next((e for e in events if e.source == source and e.kind == kind), None)


def _arrow(ax: Axes, x0: float, y0: float, x1: float, y1: float, colour: str) -> None:
    ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 1.5, "alpha": 0.8})


METRIC_KEYS = ("ActiveConnectionCount", "ActiveFlowCount", "NewFlowCount", "IdleTimeoutCount",
               "PacketsDropCount", "TCP_ELB_Reset_Count", "ErrorPortAllocation",
               "KeepaliveProbes")


def draw_metrics(samples: Sequence[Mapping[str, Json]], namespace: str, speed: float, title: str,
                 out: Folder, stem: str) -> list[Path]:
    """The cloud-named counters over model time, one step line each (SVG and PNG). A
    counter that stayed at zero gets no panel (an empty chart says nothing); its name is
    listed under the title. Nothing is drawn when every counter stayed at zero."""
    recorded = [k for k in METRIC_KEYS if any(k in s for s in samples)]
    keys = [k for k in recorded if any(number(s, k, 0) for s in samples)]
    if not keys:
        return []
    fig, axes = plt.subplots(len(keys), 1, figsize=(10, 1.3 * len(keys) + 1.4), dpi=100,
                             sharex=True, squeeze=False)
    times = [number(s, "t") for s in samples]
    for ax, key in zip(axes[:, 0], keys, strict=True):
        ax.step(times, [number(s, key, 0) for s in samples], where="post",
                color=COLOURS["info"])
        ax.set_ylabel(key, rotation=0, ha="right", va="center", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1, 0].set_xlabel(f"model time (s); speed {speed:g}")
    zero = [k for k in recorded if k not in keys]
    fig.suptitle(f"{title} ({namespace} metrics)"
                 + (f"\nstayed at 0: {', '.join(zero)}" if zero else ""), fontsize=10)
    return _save(fig, out, stem)


# -- the ladder (sequence) diagram ------------------------------------------------------------

LADDER_X = {"client": 0.0, "middlebox": 1.0, "proxy": 1.0, "server": 2.0}
LADDER_STEPS = {
    ("client", "request_sent"), ("client", "answer"), ("client", "timeout"),
    ("client", "reset"), ("client", "keepalive_failed"), ("client", "closed"),
    ("server", "answer_sent"), ("server", "delivered"), ("server", "reset"),
    ("server", "unacknowledged"), ("server", "send_failed"),
    ("middlebox", "keepalive"), ("middlebox", "flow_expired"), ("middlebox", "rst_sent"),
    ("middlebox", "dropped"), ("middlebox", "port_allocation_error"),
    ("middlebox", "flow_closed"),
}
LADDER_MARKS = {**MARKERS, ("server", "send_failed"): ("X", "bad", "sending the answer failed")}


@dataclass(frozen=True)
class LadderStep:
    """One row of the ladder, decided before anything is drawn (so that a test can read
    which way each arrow goes): an arrow between two columns, or a mark on one."""

    t: float
    label: str
    colour: str
    """A key of ``COLOURS``."""
    start: float
    """The column the arrow leaves, or the column of the mark."""
    end: float | None = None
    """The column the arrow reaches; None for a mark."""
    marker: str = ""
    note: str = ""
    """Small text beside the appliance's line (whether a probe counted)."""
    note_colour: str = "grey"


def ladder_steps(events: Sequence[TimelineEvent], timeout: float) -> list[LadderStep]:
    """The rows of the ladder, in model time."""
    events = [TimelineEvent(e.t, e.wall, "server", e.kind, e.text, e.raw)
              if e.source.startswith("server") else e for e in events]
    last_activity = next((e.t for e in events if e.source == "client"
                          and e.kind == "request_sent"), min((e.t for e in events), default=0))
    steps = []
    for e in sorted(events, key=lambda e: e.t):
        if (e.source, e.kind) not in LADDER_STEPS:
            continue
        if e.kind == "keepalive":
            refreshed = e.raw.get("refreshed", True) is not False
            idle = number(e.raw, "idle", e.t - last_activity)
            steps.append(LadderStep(e.t, f"keepalive probe ({idle:.0f} s idle)", "info",
                                    LADDER_X[ladder_sender(e)], 1.0,
                                    note="idle timer reset" if refreshed
                                    else "NOT counted: no data",
                                    note_colour="ok" if refreshed else "bad"))
            last_activity = e.t if refreshed else last_activity
        else:
            steps.append(_ladder_step(e, timeout))
    return steps


def _ladder_step(e: TimelineEvent, timeout: float) -> LadderStep:
    step = (e.source, e.kind)
    if step == ("client", "request_sent"):
        return LadderStep(e.t, "request", "info", 0.0, 2.0)
    if step == ("server", "answer_sent"):
        return LadderStep(e.t, "the answer", "info", 2.0, 1.0)
    if step == ("middlebox", "flow_closed"):
        flag = str(e.raw.get("flag", "FIN"))
        return LadderStep(e.t, flag, "bad" if flag == "RST" else "grey",
                          LADDER_X[ladder_sender(e)], LADDER_X[ladder_receiver(e)])
    if step == ("middlebox", "rst_sent"):
        return LadderStep(e.t, "RST", "bad", 1.0, 0.0 if e.raw.get("side") == "inside"
                          else 2.0)
    if step == ("middlebox", "flow_expired"):
        return LadderStep(e.t, f"flow forgotten: idle {timeout:g} s, nothing sent", "bad",
                          1.0, marker="X")
    if step == ("middlebox", "dropped"):
        return LadderStep(e.t, "dropped (late: the flow is gone)", "bad", 1.0, marker="x")
    if step == ("middlebox", "port_allocation_error"):
        return LadderStep(e.t, "no room: new connection dropped", "bad", 1.0)
    marker, colour, label = LADDER_MARKS[step]
    return LadderStep(e.t, label, colour, LADDER_X[e.source], marker=marker)


def draw_ladder(events: Sequence[TimelineEvent], timeout: float, title: str,
                out: Folder, stem: str) -> list[Path]:
    """The run as a ladder (sequence) diagram, as network people draw these stories.

    Client, appliance and server are vertical lines; time runs down, one row per step (not
    to scale: the model time is written beside each row, and the idle time of the flow in
    the appliance's column, so that a 350-second silence reads as one). Requests, probes,
    answers, FINs and RSTs are arrows from the side that sent them; what the appliance
    does (forget, drop, reset) happens on its own line. Written as ``stem``.svg and .png
    in ``out``.
    """
    steps = ladder_steps(events, timeout)
    rows = max(1, len(steps))
    fig, ax = plt.subplots(figsize=(9, 1.6 + 0.55 * rows), dpi=110)
    for name in ("client", "middlebox", "server"):
        x = LADDER_X[name]
        ax.plot([x, x], [0.6, -rows - 0.2], color="#9e9e9e", lw=2, zorder=0)
        ax.text(x, 0.8, "appliance" if name == "middlebox" else name, ha="center",
                fontsize=11, fontweight="bold")
    for i, step in enumerate(steps):
        y = -i - 0.5
        ax.text(-0.35, y, f"{seconds_label(step.t)}", ha="right", va="center", fontsize=9,
                color=COLOURS["grey"])
        gap = step.t - steps[i - 1].t if i else 0.0
        if gap >= 0.1 * timeout:  # the silence the appliance counts, between two rows
            ax.text(1.0, y + 0.5, f"{gap:.0f} s without a packet", ha="center",
                    va="center", fontsize=8, style="italic", color=COLOURS["idle"],
                    bbox={"facecolor": "white", "edgecolor": COLOURS["idle"], "pad": 1.5})
        _draw_step(ax, step, y)
    ax.set_xlim(-0.9, 2.9)
    ax.set_ylim(-rows - 0.4, 1.2)
    ax.axis("off")
    ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=11)
    return _save(fig, out, stem)


def _draw_step(ax: Axes, step: LadderStep, y: float) -> None:
    colour = COLOURS[step.colour]
    if step.end is not None:
        _ladder_arrow(ax, step.start, step.end, y, colour, step.label)
        if step.note:
            ax.text(1.06, y - 0.18, step.note, fontsize=8, color=COLOURS[step.note_colour])
        return
    if step.marker:
        ax.plot(step.start, y, marker=step.marker, ms=12, mew=2, color=colour, zorder=5)
    left = step.start < 2.0
    ax.text(step.start + (0.08 if left else -0.08), y, step.label, va="center",
            ha="left" if left else "right", fontsize=9,
            color=colour if step.colour != "info" else "black")


def ladder_sender(e: TimelineEvent) -> str:
    """Which column a middlebox event's packet comes from: the proxy's watcher names the
    sender; the engine says which of its ports the packet came in on."""
    sender = e.raw.get("sender")
    if isinstance(sender, str) and sender in LADDER_X:
        return sender
    return "client" if e.raw.get("side") == "inside" else "server"


def ladder_receiver(e: TimelineEvent) -> str:
    receiver = e.raw.get("receiver")
    if isinstance(receiver, str) and receiver in LADDER_X:
        return receiver
    return "server" if ladder_sender(e) == "client" else "client"


def _ladder_arrow(ax: Axes, x0: float, x1: float, y: float, colour: str, label: str) -> None:
    """A message from column ``x0`` to ``x1``, sloping down a little, labelled above."""
    ax.annotate("", xy=(x1, y - 0.25), xytext=(x0, y + 0.1),
                arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 1.6})
    ax.text((x0 + x1) / 2, y + 0.02, label, ha="center", va="bottom", fontsize=8.5,
            color=colour, bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
