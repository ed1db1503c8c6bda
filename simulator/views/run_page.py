"""``index.html``: one self-contained page per run, for a room or beside a pcap.

The page shows the run on one model-time axis, three lanes (client, appliance, server):
every event of the timeline and every captured frame, each clickable. A frame's details say
what it was before and after the appliance (addresses, flags, sequence numbers, length) and
the rule that decided it: a new flow, a packet that restarted the idle timer (a keepalive
probe counts), a late packet of a forgotten flow and what the appliance did with it, a frame
the appliance made itself (its RST). A play control replays model time: each flow's idle
meter climbs towards the timeout and falls back at each packet; the expiry, the late packet
and the RSTs appear when they happen, the verdict at the end.

Everything the page needs is in the file (its data as JSON, its script and style inline):
no network, nothing to install. This module works out the page's data from the result
document and the capture's frames (pure: no files read here) and fills the template in
:mod:`simulator.views.run_page_assets`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from simulator.core.configs import ConfigError, MiddleboxConfig, decode
from simulator.core.jsonvalue import Json, JsonObject, number, text, to_json
from simulator.core.packets import IPPROTO_TCP, IPPROTO_UDP, endpoint, flags_to_str, parse
from simulator.support import pcap
from simulator.support.results import Folder
from simulator.views.run_page_assets import TEMPLATE

MAX_FRAMES = 3000
"""Frames drawn at most (a capacity run's tens of thousands would make an unreadable wall and
a page of many megabytes); the page says how many it left out."""
PAIR_WINDOW = 2.0
"""Model seconds within which a frame leaving the appliance is the same packet that arrived."""
EVENT_WINDOW = 1.0
"""Model seconds between a frame and the appliance's event about it (same clock)."""
DECISIVE = ("dropped", "rst_sent", "port_allocation_error", "icmp_dropped")


@dataclass(frozen=True, slots=True)
class Port:
    """One interface of the appliance: its MAC and which lane is behind it."""

    mac: bytes
    lane: str


Header = dict[str, str | int]
"""A frame's fields as the page shows them (addresses, flags, numbers, lengths)."""


@dataclass(slots=True)
class Seen:
    """A captured frame, decoded, with the direction it crossed the interface."""

    t: float
    lane: str
    arriving: bool
    header: Header
    match: tuple[int, int, int, int, int]
    """(proto, flags, seq, ack, payload): what stays the same across the translation."""


@dataclass(slots=True)
class Crossing:
    """One packet at the appliance: as it arrived (``before``) and as it left (``after``);
    one of them is None for a packet dropped, or one the appliance made."""

    t: float
    source: str
    to: str
    outcome: str
    """``forwarded``, ``dropped`` or ``made``."""
    before: Header | None
    after: Header | None
    t_out: float | None = None
    i: int = 0
    flow: int | None = None
    probe: bool = False
    rule: str = ""

    @property
    def header(self) -> Header:
        header = self.before or self.after
        assert header is not None
        return header

    def to_record(self) -> JsonObject:
        record: JsonObject = {"t": self.t, "from": self.source, "to": self.to,
                              "outcome": self.outcome, "before": self.before,
                              "after": self.after, "i": self.i, "flow": self.flow,
                              "probe": self.probe, "rule": self.rule}
        if self.t_out is not None:
            record["t_out"] = self.t_out
        return record


@dataclass(slots=True)
class PageFlow:
    """A flow of the appliance's table, as the play control's idle meter needs it."""

    id: int
    created: float
    ends: set[str]
    expired: float | None = None
    """When the appliance forgot it, or (an L4 proxy) first closed it."""
    how: str = "forgotten"
    activity: list[float] = field(default_factory=list)

    def to_record(self) -> JsonObject:
        return {"id": self.id, "created": self.created, "expired": self.expired,
                "how": self.how, "ends": sorted(self.ends),
                "activity": sorted(self.activity)}


@dataclass(frozen=True, slots=True)
class PageEvent:
    """The fields of a timeline event the rules are matched on."""

    t: float
    kind: str
    text: str
    flow: int | None


def _decode(t: float, frame: bytes, ports: Sequence[Port]) -> Seen | None:
    if len(frame) < 14 or frame[12:14] not in (b"\x08\x00", b"\x86\xdd"):
        return None
    packet = parse(frame[14:])
    if packet is None:
        return None
    for port in ports:
        if port.mac in (frame[0:6], frame[6:12]):
            arriving = frame[0:6] == port.mac
            break
    else:
        return None
    tcp = packet.proto == IPPROTO_TCP
    header: Header = {
        "proto": "TCP" if tcp else "UDP" if packet.proto == IPPROTO_UDP else "ICMP",
        "src": endpoint(packet.src, packet.sport),
        "dst": endpoint(packet.dst, packet.dport),
        "length": packet.total_len, "payload": packet.payload_len}
    if tcp:
        header.update(flags=flags_to_str(packet.flags), seq=packet.seq, ack=packet.ack)
    return Seen(round(t, 6), port.lane, arriving, header,
                (packet.proto, packet.flags, packet.seq, packet.ack, packet.payload_len))


def crossings(frames: Iterable[tuple[float, bytes]], ports: Sequence[Port]) -> list[Crossing]:
    """The capture as crossings: a frame that arrived paired with the frame the appliance
    sent on for it (the same packet, translated), a frame that arrived and went nowhere
    (dropped), a frame only sent (made by the appliance)."""
    seen = [s for t, frame in frames if (s := _decode(t, frame, ports)) is not None]
    used: set[int] = set()
    out: list[Crossing] = []
    for i, s in enumerate(seen):
        if i in used:
            continue
        used.add(i)
        if not s.arriving:
            out.append(Crossing(s.t, "middlebox", s.lane, "made", None, s.header))
            continue
        item = Crossing(s.t, s.lane, "middlebox", "dropped", s.header, None)
        for j in range(i + 1, len(seen)):
            other = seen[j]
            if other.t - s.t > PAIR_WINDOW:
                break
            if j not in used and not other.arriving and other.lane != s.lane \
                    and other.match == s.match:
                used.add(j)
                item.to, item.outcome, item.after, item.t_out = \
                    other.lane, "forwarded", other.header, other.t
                break
        out.append(item)
    return out


def _page_events(events: Sequence[JsonObject]) -> list[PageEvent]:
    return [PageEvent(number(ev, "t"), text(ev, "kind"), text(ev, "text"),
                      flow if isinstance(flow := ev.get("flow"), int) else None)
            for ev in events if ev.get("source") == "middlebox" and "t" in ev]


def _flows(events: Sequence[JsonObject]) -> dict[int, PageFlow]:
    flows: dict[int, PageFlow] = {}
    for ev in events:
        flow = ev.get("flow")
        if ev.get("source") != "middlebox" or not isinstance(flow, int) or "t" not in ev:
            continue
        if ev.get("kind") == "flow_created" and flow not in flows:
            flows[flow] = PageFlow(flow, number(ev, "t"),
                                   {text(ev, k) for k in ("client", "public") if ev.get(k)})
        elif flow not in flows:
            continue
        elif ev.get("kind") == "flow_expired":
            flows[flow].expired = number(ev, "t")
        elif ev.get("kind") == "flow_closed" and flows[flow].expired is None:
            flows[flow].expired, flows[flow].how = number(ev, "t"), "closed"
        elif ev.get("kind") == "data":  # an L4 proxy's links have no frames, only events
            flows[flow].activity.append(number(ev, "t"))
    return flows


def _flow_of(item: Crossing, flows: dict[int, PageFlow]) -> PageFlow | None:
    ends = {str(h[k]) for h in (item.before, item.after) if h is not None
            for k in ("src", "dst")}
    found = None
    for flow in flows.values():  # the last flow with these ends (ports are reused)
        if ends & flow.ends and flow.created <= item.t + EVENT_WINDOW:
            found = flow
    return found


def _rule(item: Crossing, flow: PageFlow | None, timeout: float,
          events: Sequence[PageEvent]) -> str:
    """What decided this crossing, in the words of the appliance's rules."""
    near = [ev for ev in events if ev.kind in DECISIVE and abs(ev.t - item.t) <= EVENT_WINDOW
            and (flow is None or ev.flow in (None, flow.id))]
    label = f"flow #{flow.id}" if flow is not None else "its flow"
    if item.outcome == "made":
        said = next((ev.text for ev in near if ev.kind == "rst_sent"), "")
        return f"made by the appliance: {said or 'a frame of its own'}"
    if item.outcome == "dropped":
        said = next((ev.text for ev in near if ev.kind != "rst_sent"),
                    "dropped by the appliance")
        if flow is not None and flow.expired is not None and flow.expired <= item.t:
            return (f"{said}: a late packet of {label}, forgotten at {flow.expired:.1f} s "
                    f"after {timeout:g} s idle")
        return said
    flags = str(item.header.get("flags", ""))
    if "S" in flags and "A" not in flags:
        return f"a new flow ({label}): the appliance adds it to its table, idle timer at 0"
    if item.probe:
        return (f"a keepalive probe: forwarded like any packet, so {label}'s idle timer "
                "restarts at 0")
    return f"forwarded: {label}'s idle timer restarts at 0"


def _is_probe(item: Crossing, expected: dict[tuple[int, str], int], fid: int) -> bool:
    """A zero- or one-byte segment one below the sender's next sequence number (how Linux
    probes); ``expected`` follows each sender's next sequence number."""
    header = item.header
    if header.get("proto") != "TCP" or item.outcome == "made":
        return False
    key = (fid, item.source)
    seq, payload, flags = int(header["seq"]), int(header["payload"]), str(header["flags"])
    probe = key in expected and payload <= 1 and seq == (expected[key] - 1) & 0xFFFFFFFF \
        and not any(f in flags for f in "SFR")
    end = (seq + payload + (1 if "S" in flags or "F" in flags else 0)) & 0xFFFFFFFF
    if key not in expected or (end - expected[key]) & 0xFFFFFFFF < 0x80000000:
        expected[key] = end
    return probe


def _mapping(value: Json) -> Mapping[str, Json]:
    return value if isinstance(value, Mapping) else {}


def page_data(result: Mapping[str, Json], frames: Iterable[tuple[float, bytes]],
              ports: Sequence[Port], links: Sequence[str]) -> JsonObject:
    """Everything the page shows, as one JSON object (the template's script reads it)."""
    raw = result.get("events")
    events: list[JsonObject] = [dict(ev) for ev in (raw if isinstance(raw, list) else [])
                                if isinstance(ev, Mapping)]
    for i, ev in enumerate(events):
        ev["i"] = i
        ev["lane"] = "server" if text(ev, "source").startswith("server") \
            else text(ev, "source")
    appliance = _mapping(result.get("appliance"))
    timeout = number(appliance, "tcp_idle_timeout", 0.0)
    flows = _flows(events)
    decisive = _page_events(events)
    every = crossings(frames, ports)
    shown = every[:MAX_FRAMES]
    expected: dict[tuple[int, str], int] = {}
    for i, item in enumerate(shown):
        flow = _flow_of(item, flows)
        item.i, item.flow = i, flow.id if flow is not None else None
        item.probe = flow is not None and _is_probe(item, expected, flow.id)
        item.rule = _rule(item, flow, timeout, decisive)
        if flow is not None and item.outcome == "forwarded" and item.t not in flow.activity:
            flow.activity.append(item.t)
    end = max([number(e, "t") for e in events if "t" in e] + [c.t for c in shown] + [0.0])
    predicted = _mapping(result.get("predicted"))
    return {
        "title": f"{text(result, 'scenario', 'run')}: " + (
            f"an L4 proxy ({text(result, 'proxy')})" if result.get("proxy")
            else text(appliance, "title")),
        "verdict": result.get("verdict"), "model_agrees": result.get("model_agrees"),
        "expected": result.get("expected"), "outcome": result.get("outcome"),
        "story": predicted.get("story", []),
        "appliance": {k: appliance.get(k) for k in (
            "name", "title", "tcp_idle_timeout", "udp_idle_timeout", "late_from_inside",
            "late_from_outside", "on_expiry")},
        "timeout": timeout, "speed": result.get("speed"), "end": end,
        "settings": result.get("settings", []), "counters": result.get("counters", {}),
        "namespace": _mapping(result.get("metrics")).get("namespace", ""),
        "events": events, "flows": [to_json(f) for f in flows.values()],
        "frames": [to_json(c) for c in shown], "left_out": len(every) - len(shown),
        "links": list(links),
    }


def render(data: JsonObject) -> str:
    """The page: the template with the data embedded, every ``<`` written ``\\u003c`` (only
    strings hold one in JSON), so no string in the data can end the script element or open
    a comment in it."""
    blob = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    title = str(data.get("title", "natsim run"))
    escaped = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return TEMPLATE.replace("__TITLE__", escaped).replace("__DATA__", blob)


LINKED = ("capture.pcap", "result.json", "timeline.png", "ladder.png", "metrics.png",
          "timeline.svg", "ladder.svg", "metrics.svg", "events.jsonl")


def _ports(out: Folder) -> list[Port]:
    """The appliance's interfaces from the run's own middlebox.json (none: no frames)."""
    text = out.read_text("middlebox.json")
    if text is None:
        return []
    try:
        cfg = decode(MiddleboxConfig, text)
    except ConfigError:
        return []
    return [Port(bytes.fromhex(cfg.inside.mac.replace(":", "")), "client"),
            *(Port(bytes.fromhex(o.mac.replace(":", "")), "server") for o in cfg.outside)]


def _frames(out: Folder) -> Iterator[tuple[float, bytes]]:
    if not out.is_file("capture.pcap"):
        return
    with out.reader("capture.pcap") as src:
        try:
            yield from pcap.records(src)
        except ValueError:  # not a capture natsim wrote: the page shows the events only
            return


def run_page_html(out: Folder, result: Mapping[str, Json]) -> str:
    """The page of the run in ``out``, from its result document, its capture and its
    middlebox's interfaces."""
    links = [name for name in LINKED if out.is_file(name)]
    if out.exists("logs"):
        links += [f"logs/{name}" for name in out.sub("logs").names()]
    return render(page_data(result, _frames(out), _ports(out), links))


def write_run_page(out: Folder, result: Mapping[str, Json]) -> Path:
    """``index.html`` in a run's results folder."""
    return out.write("index.html", run_page_html(out, result))


def write_world_page(out: Folder, name: str, appliance: Mapping[str, Json], speed: float,
                     events: Sequence[Mapping[str, Json]], story: Sequence[str],
                     counters: Mapping[str, Json], namespace: str) -> Path:
    """``index.html`` for a world taken down (``natsim down``): its middlebox's events and
    capture, on the capture's own axis (0 at its first packet, as the connections' verdicts
    in ``story`` count it); no verdict, the connections' fates instead."""
    frames = list(_frames(out))
    origin = frames[0][0] if frames else 0.0
    shifted = [{**ev, "t": round(number(ev, "t") - origin, 6)} if "t" in ev else dict(ev)
               for ev in events]
    document: JsonObject = {
        "scenario": f"world {name}", "appliance": dict(appliance), "speed": speed,
        "events": shifted, "predicted": {"story": list(story)}, "verdict": None,
        "counters": dict(counters), "metrics": {"namespace": namespace}}
    links = [n for n in LINKED if out.is_file(n)]
    if out.exists("connections"):
        links += [f"connections/{n}" for n in out.sub("connections").names()]
    data = page_data(document, [(t - origin, f) for t, f in frames], _ports(out), links)
    return out.write("index.html", render(data))
