"""The run page's data: a capture's frames paired into crossings, each with its flow and the
rule that decided it; the page itself self-contained and safe from the data it embeds."""

from __future__ import annotations

import json
import re

from simulator.core.jsonvalue import JsonObject
from simulator.views.run_page import Port, crossings, page_data, render
from tests.unit.helpers import CLIENT, PUBLIC, SERVER, tcp

INSIDE, OUTSIDE = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"
CLIENT_MAC, SERVER_MAC = b"\x02\x00\x00\x00\x00\x0a", b"\x02\x00\x00\x00\x00\x0b"
PORTS = [Port(INSIDE, "client"), Port(OUTSIDE, "server")]


def arriving_inside(packet: bytes) -> bytes:
    return INSIDE + CLIENT_MAC + b"\x08\x00" + packet


def leaving_outside(packet: bytes) -> bytes:
    return SERVER_MAC + OUTSIDE + b"\x08\x00" + packet


def arriving_outside(packet: bytes) -> bytes:
    return OUTSIDE + SERVER_MAC + b"\x08\x00" + packet


def leaving_inside(packet: bytes) -> bytes:
    return CLIENT_MAC + INSIDE + b"\x08\x00" + packet


def capture() -> list[tuple[float, bytes]]:
    """A NAT Gateway story: handshake, request, a keepalive probe at 300 s, the flow forgotten
    at 650 s, the server's late answer at 700 s dropped and answered with an RST."""
    c, s = 1000, 5000
    frames = []

    def both_ways_out(t: float, flags: str, seq: int, ack: int, payload: bytes = b"") -> None:
        frames.append((t, arriving_inside(bytes(tcp(CLIENT, 40001, SERVER, 8080, flags, seq,
                                                     ack, payload)))))
        frames.append((t + 0.001, leaving_outside(bytes(tcp(PUBLIC, 1024, SERVER, 8080, flags,
                                                            seq, ack, payload)))))

    both_ways_out(0.0, "S", c, 0)
    frames.append((0.002, arriving_outside(bytes(tcp(SERVER, 8080, PUBLIC, 1024, "SA", s,
                                                     c + 1)))))
    frames.append((0.003, leaving_inside(bytes(tcp(SERVER, 8080, CLIENT, 40001, "SA", s,
                                                   c + 1)))))
    both_ways_out(0.004, "A", c + 1, s + 1)
    both_ways_out(0.01, "PA", c + 1, s + 1, b"GET /slow\r\n")
    both_ways_out(300.0, "A", c + 11, s + 1)  # a probe: one below the next sequence number
    frames.append((700.0, arriving_outside(bytes(tcp(SERVER, 8080, PUBLIC, 1024, "PA", s + 1,
                                                     c + 12, b"late answer")))))
    frames.append((700.01, leaving_outside(bytes(tcp(PUBLIC, 1024, SERVER, 8080, "R", c + 12,
                                                     0)))))
    return frames


RESULT: JsonObject = {
    "scenario": "nat-gw", "verdict": "PASS", "model_agrees": True, "speed": 35.0,
    "appliance": {"name": "nat-gw", "title": "AWS NAT Gateway", "tcp_idle_timeout": 350.0},
    "predicted": {"story": ["the flow expires at 650 s"]},
    "outcome": {"client": "timeout", "server": "reset"},
    "expected": {"client": "timeout", "server": "reset"},
    "events": [
        {"source": "middlebox", "kind": "flow_created", "text": "new TCP flow #1", "flow": 1,
         "client": f"{CLIENT}:40001", "server": f"{SERVER}:8080", "public": f"{PUBLIC}:1024",
         "t": -0.01},
        {"source": "middlebox", "kind": "flow_expired", "text": "flow #1 expired", "flow": 1,
         "t": 650.0},
        {"source": "middlebox", "kind": "dropped", "flow": 1, "t": 700.0,
         "text": "dropped PA packet from server of expired flow #1"},
        {"source": "middlebox", "kind": "rst_sent", "flow": 1, "t": 700.0,
         "text": "RST sent back to the server"},
        {"source": "server1", "kind": "reset", "text": "connection reset", "t": 700.02},
    ],
}


def test_frames_pair_across_the_translation() -> None:
    found = crossings(capture(), PORTS)
    assert [(c.source, c.to, c.outcome) for c in found] == [
        ("client", "server", "forwarded"), ("server", "client", "forwarded"),
        ("client", "server", "forwarded"), ("client", "server", "forwarded"),
        ("client", "server", "forwarded"), ("server", "middlebox", "dropped"),
        ("middlebox", "server", "made")]
    syn = found[0]
    assert syn.before is not None and syn.after is not None
    assert (syn.before["src"], syn.after["src"]) == (f"{CLIENT}:40001", f"{PUBLIC}:1024")
    assert syn.t_out == 0.001
    assert found[5].after is None and found[6].before is None


def test_each_crossing_says_the_rule_that_decided_it() -> None:
    data = page_data(RESULT, capture(), PORTS, ["capture.pcap"])
    frames = data["frames"]
    assert isinstance(frames, list)
    rules = [f["rule"] for f in frames if isinstance(f, dict)]
    assert rules[0].startswith("a new flow (flow #1)")
    assert rules[2] == "forwarded: flow #1's idle timer restarts at 0"
    assert rules[4].startswith("a keepalive probe")  # and only the probe
    assert not any(r.startswith("a keepalive probe") for r in rules[:4])
    assert rules[5] == ("dropped PA packet from server of expired flow #1: a late packet of "
                        "flow #1, forgotten at 650.0 s after 350 s idle")
    assert rules[6] == "made by the appliance: RST sent back to the server"
    assert all(isinstance(f, dict) and f["flow"] == 1 for f in frames)
    flows = data["flows"]
    assert isinstance(flows, list) and isinstance(flows[0], dict)
    # what the idle meter plays: every forwarded packet restarts the timer, the drop does not
    assert flows[0]["activity"] == [0.0, 0.002, 0.004, 0.01, 300.0]
    assert flows[0]["expired"] == 650.0
    assert data["end"] == 700.02
    events = data["events"]
    assert isinstance(events, list) and isinstance(events[-1], dict)
    assert events[-1]["lane"] == "server"  # every backend on the server lane


def test_without_a_capture_the_page_has_the_events_only() -> None:
    data = page_data(RESULT, [], PORTS, [])
    assert data["frames"] == [] and data["left_out"] == 0
    assert isinstance(data["events"], list) and len(data["events"]) == 5


def test_the_page_is_self_contained_and_its_data_cannot_end_the_script() -> None:
    hostile = dict(RESULT, scenario="</script><script>alert(1)</script>")
    page = render(page_data(hostile, capture(), PORTS, []))
    assert page.count("</script>") == 2  # the data's and the code's, nothing from the data
    assert "<title>&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;: AWS NAT Gateway" \
        in page
    assert not re.search(r"(src|href)=\"?https?:", page)  # no network: nothing fetched
    blob = re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S)
    assert blob is not None
    assert json.loads(blob.group(1))["title"].startswith("</script>")
    assert len(page) < 1_000_000


def test_an_l4_proxys_links_end_when_it_closes_them_and_count_data_only() -> None:
    """The proxy's page has no frames (no middlebox.json): its links' meters come from its
    events, and a keepalive probe the proxy's kernel answered restarts nothing."""
    events: list[JsonObject] = [
        {"source": "middlebox", "kind": "flow_created", "flow": 1, "t": 0.0,
         "text": "client side: client opens connection #1 to the proxy"},
        {"source": "middlebox", "kind": "data", "flow": 1, "t": 0.05, "text": "17 bytes"},
        {"source": "middlebox", "kind": "keepalive", "flow": 1, "t": 307.0,
         "text": "keepalive probe from the client; nothing is relayed"},
        {"source": "middlebox", "kind": "flow_closed", "flow": 1, "t": 350.1,
         "text": "client side: FIN from the proxy to the client (connection #1)"},
        {"source": "middlebox", "kind": "flow_closed", "flow": 1, "t": 350.2,
         "text": "client side: FIN from the client to the proxy (connection #1)"},
    ]
    data = page_data({**RESULT, "scenario": "l4-proxy-keepalive", "proxy": "haproxy",
                      "events": events}, [], [], [])
    assert data["title"] == "l4-proxy-keepalive: an L4 proxy (haproxy)"
    flows = data["flows"]
    assert isinstance(flows, list) and isinstance(flows[0], dict)
    assert (flows[0]["how"], flows[0]["expired"], flows[0]["activity"]) == \
        ("closed", 350.1, [0.05])
