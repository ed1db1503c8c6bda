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


def draw(events: Sequence[TimelineEvent], timeout: float, speed: float, title: str,  # noqa: C901
         out: Folder, stem: str) -> list[Path]:
    """Write ``stem``.svg and .png into ``out``; return their paths."""
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
    ax.set_xlabel("model time (s)")
    def to_wall(t: Any) -> Any:  # matplotlib passes arrays
        return t / speed

    def to_model(w: Any) -> Any:
        return w * speed

    top = ax.secondary_xaxis("top", functions=(to_wall, to_model))
    top.set_xlabel(f"wall time (s) at speed {speed:g}")
    for side in ("left", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title(title, fontsize=11, pad=10)
    _path_events(ax, events)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, -0.42), ncol=5, fontsize=8,
                  frameon=False)
    return _save(fig, out, stem)


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


def draw_metrics(samples: Sequence[Mapping[str, Json]], namespace: str, speed: float, title: str,
                 out: Folder, stem: str) -> list[Path]:
    """The cloud-named counters over model time, one step line each (SVG and PNG)."""
    keys = [k for k in ("ActiveConnectionCount", "ActiveFlowCount", "NewFlowCount",
                        "IdleTimeoutCount", "PacketsDropCount", "TCP_ELB_Reset_Count",
                        "ErrorPortAllocation", "KeepaliveProbes")
            if any(k in s for s in samples)]
    fig, axes = plt.subplots(len(keys), 1, figsize=(10, 1.3 * len(keys) + 1.2), dpi=100,
                             sharex=True, squeeze=False)
    times = [number(s, "t") for s in samples]
    for ax, key in zip(axes[:, 0], keys, strict=True):
        ax.step(times, [s.get(key, 0) for s in samples], where="post", color=COLOURS["info"])
        ax.set_ylabel(key, rotation=0, ha="right", va="center", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1, 0].set_xlabel(f"model time (s); speed {speed:g}")
    fig.suptitle(f"{title} ({namespace} metrics)", fontsize=10)
    return _save(fig, out, stem)


# -- the ladder (sequence) diagram ------------------------------------------------------------

LADDER_X = {"client": 0.0, "middlebox": 1.0, "server": 2.0}
LADDER_STEPS = {
    ("client", "request_sent"), ("client", "answer"), ("client", "timeout"),
    ("client", "reset"), ("client", "keepalive_failed"), ("server", "answer_sent"),
    ("server", "delivered"), ("server", "reset"), ("server", "unacknowledged"),
    ("middlebox", "keepalive"), ("middlebox", "flow_expired"), ("middlebox", "rst_sent"),
    ("middlebox", "dropped"), ("middlebox", "port_allocation_error"),
}


def draw_ladder(events: Sequence[TimelineEvent], timeout: float, title: str,
                out: Folder, stem: str) -> list[Path]:
    """The run as a ladder (sequence) diagram, as network people draw these stories.

    Client, appliance and server are vertical lines; time runs down, one row per step (not
    to scale: the model time is written beside each row, and the idle time of the flow in
    the appliance's column, so that a 350-second silence reads as one). Requests, probes and
    answers are arrows across; what the appliance does (forget, drop, reset) happens on its
    own line. Written as ``stem``.svg and .png in ``out``.
    """
    # long: one figure drawn row by row; each kind of step is two or three drawing calls
    events = [TimelineEvent(e.t, e.wall, "server", e.kind, e.text, e.raw)
              if e.source.startswith("server") else e for e in events]
    steps = [e for e in sorted(events, key=lambda e: e.t) if (e.source, e.kind) in LADDER_STEPS]
    rows = max(1, len(steps))
    fig, ax = plt.subplots(figsize=(9, 1.6 + 0.55 * rows), dpi=110)
    for name, x in LADDER_X.items():
        ax.plot([x, x], [0.6, -rows - 0.2], color="#9e9e9e", lw=2, zorder=0)
        ax.text(x, 0.8, "appliance" if name == "middlebox" else name, ha="center",
                fontsize=11, fontweight="bold")
    last_activity = next((e.t for e in events if e.source == "client"
                          and e.kind == "request_sent"), steps[0].t if steps else 0.0)
    for row, e in enumerate(steps):
        y = -row - 0.5
        ax.text(-0.35, y, f"{seconds_label(e.t)}", ha="right", va="center", fontsize=9,
                color=COLOURS["grey"])
        gap = e.t - steps[row - 1].t if row else 0.0
        if gap >= 0.1 * timeout:  # the silence the appliance counts, between two rows
            ax.text(1.0, y + 0.5, f"{gap:.0f} s without a packet", ha="center",
                    va="center", fontsize=8, style="italic", color=COLOURS["idle"],
                    bbox={"facecolor": "white", "edgecolor": COLOURS["idle"], "pad": 1.5})
        red, blue, green = COLOURS["bad"], COLOURS["info"], COLOURS["ok"]
        step = (e.source, e.kind)
        if step == ("client", "request_sent"):
            _ladder_arrow(ax, 0.0, 2.0, y, blue, "request")
        elif step == ("server", "answer_sent"):
            _ladder_arrow(ax, 2.0, 1.0, y, blue, "the answer")
        elif step == ("middlebox", "keepalive"):
            refreshed = e.raw.get("refreshed", True)
            idle = number(e.raw, "idle", e.t - last_activity)
            from_client = e.raw.get("side") == "inside"
            _ladder_arrow(ax, 0.0 if from_client else 2.0, 1.0, y, blue,
                          f"keepalive probe ({idle:.0f} s idle)")
            note = "idle timer reset" if refreshed else "NOT counted: no data"
            ax.text(1.06, y - 0.18, note, fontsize=8, color=green if refreshed else red)
            if refreshed:
                last_activity = e.t
        elif step == ("middlebox", "flow_expired"):
            ax.plot(1.0, y, marker="X", ms=14, color=red)
            ax.text(1.08, y, f"flow forgotten: idle {timeout:g} s, nothing sent",
                    va="center", fontsize=9, color=red)
        elif step == ("middlebox", "rst_sent"):
            to_client = e.raw.get("side") == "inside"
            _ladder_arrow(ax, 1.0, 0.0 if to_client else 2.0, y, red, "RST")
        elif step == ("middlebox", "dropped"):
            ax.plot(1.0, y, marker="x", ms=10, mew=2, color=red)
            ax.text(1.08, y, "dropped (late: the flow is gone)", va="center", fontsize=9,
                    color=red)
        elif step == ("middlebox", "port_allocation_error"):
            ax.text(1.08, y, "no room: new connection dropped", va="center", fontsize=9,
                    color=red)
        else:
            marker, colour, label = MARKERS[step]
            x = LADDER_X[e.source]
            ax.plot(x, y, marker=marker, ms=11, color=COLOURS[colour], zorder=5)
            ax.text(x + (0.08 if e.source == "client" else -0.08), y, label, va="center",
                    ha="left" if e.source == "client" else "right", fontsize=9,
                    color=COLOURS[colour] if colour != "info" else "black")
    ax.set_xlim(-0.9, 2.9)
    ax.set_ylim(-rows - 0.4, 1.2)
    ax.axis("off")
    ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=11)
    return _save(fig, out, stem)


def _ladder_arrow(ax: Axes, x0: float, x1: float, y: float, colour: str, label: str) -> None:
    """A message from column ``x0`` to ``x1``, sloping down a little, labelled above."""
    ax.annotate("", xy=(x1, y - 0.25), xytext=(x0, y + 0.1),
                arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 1.6})
    ax.text((x0 + x1) / 2, y + 0.02, label, ha="center", va="bottom", fontsize=8.5,
            color=colour, bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
