"""What the pictures say, read from the rows they are drawn from: which way each arrow of
the ladder goes, and when."""

from __future__ import annotations

from pathlib import Path

from simulator.core.jsonvalue import Json
from simulator.core.observer import Observer
from simulator.core.session import TimelineEvent
from simulator.support.results import Folder
from simulator.views.timeline import LadderStep, ladder_steps
from tests.unit.helpers import tcp

CLIENT, FRONT, BACK, SERVER = "198.18.1.10", "198.18.1.1", "198.19.1.1", "198.19.1.10"
CLIENT_COL, APPLIANCE_COL, SERVER_COL = 0.0, 1.0, 2.0


def _l4_proxy_story() -> list[TimelineEvent]:
    """l4-proxy-keepalive as the proxy's link watcher sees it: a request, one probe at
    316 s that the proxy's kernel answers, HAProxy's timeout at 350 s closing both sides,
    the server's late answer failing."""
    seen = Observer({CLIENT: "client", FRONT: "proxy", BACK: "proxy", SERVER: "server"})
    front, back = "client side", "server side"
    packets = [
        (front, tcp(CLIENT, 40000, FRONT, 8080, "S", 100), 0.0),
        (front, tcp(FRONT, 8080, CLIENT, 40000, "SA", 900, 101), 0.0),
        (front, tcp(CLIENT, 40000, FRONT, 8080, "PA", 101, 901, b"GET\n"), 0.0),
        (back, tcp(BACK, 50000, SERVER, 8080, "S", 7), 0.0),
        (front, tcp(CLIENT, 40000, FRONT, 8080, "A", 104, 901), 316.0),
        (front, tcp(FRONT, 8080, CLIENT, 40000, "FA", 901, 105), 350.0),
        (back, tcp(BACK, 50000, SERVER, 8080, "FA", 8, 1), 350.0),
        (front, tcp(CLIENT, 40000, FRONT, 8080, "FA", 105, 902), 350.1),
        (back, tcp(BACK, 50000, SERVER, 8080, "R", 9), 350.1),
    ]
    events = [TimelineEvent(0.0, 0.0, "client", "request_sent", "request sent")]
    for link, packet, t in packets:
        events += [TimelineEvent(e.t, e.t / 35, "middlebox", str(e.kind), e.text, e.to_dict())
                   for e in seen.see(link, packet, t)]
    events += [TimelineEvent(350.05, 10.0, "client", "closed", "closed without an answer"),
               TimelineEvent(400.0, 11.4, "server", "send_failed", "Broken pipe")]
    return events


def _arrows(steps: list[LadderStep]) -> list[tuple[int, str, float, float]]:
    return [(round(s.t), s.label.split(" (")[0], s.start, s.end) for s in steps
            if s.end is not None]


def test_the_proxy_ladder_draws_every_packet_from_the_side_that_sent_it() -> None:
    steps = ladder_steps(_l4_proxy_story(), 350.0)
    assert _arrows(steps) == [
        (0, "request", CLIENT_COL, SERVER_COL),
        (316, "keepalive probe", CLIENT_COL, APPLIANCE_COL),  # the client's, not the server's
        (350, "FIN", APPLIANCE_COL, CLIENT_COL),
        (350, "FIN", APPLIANCE_COL, SERVER_COL),
        (350, "FIN", CLIENT_COL, APPLIANCE_COL),
        (350, "RST", APPLIANCE_COL, SERVER_COL),
    ]
    probe = next(s for s in steps if s.label.startswith("keepalive"))
    assert probe.note == "NOT counted: no data" and "316 s idle" in probe.label
    marks = [(round(s.t), s.label, s.start) for s in steps if s.end is None]
    assert marks == [(350, "closed without an answer", CLIENT_COL),
                     (400, "sending the answer failed", SERVER_COL)]
    assert steps[-1].t == 400.0  # the ladder goes on past the probe to the late answer


def test_the_engine_ladder_draws_rsts_towards_the_side_named() -> None:
    events = [
        TimelineEvent(0.0, 0.0, "client", "request_sent", "request sent"),
        TimelineEvent(340.0, 9.7, "middlebox", "keepalive", "probe",
                      {"side": "inside", "idle": 340.0, "refreshed": True}),
        TimelineEvent(690.0, 19.7, "middlebox", "flow_expired", "expired"),
        TimelineEvent(700.0, 20.0, "server", "answer_sent", "answer"),
        TimelineEvent(700.0, 20.0, "middlebox", "rst_sent", "RST", {"side": "outside"}),
        TimelineEvent(900.0, 25.7, "client", "timeout", "gives up"),
    ]
    steps = ladder_steps(events, 350.0)
    assert _arrows(steps) == [(0, "request", CLIENT_COL, SERVER_COL),
                              (340, "keepalive probe", CLIENT_COL, APPLIANCE_COL),
                              (700, "the answer", SERVER_COL, APPLIANCE_COL),
                              (700, "RST", APPLIANCE_COL, SERVER_COL)]
    assert steps[1].note == "idle timer reset"
    assert [s.marker for s in steps if s.end is None] == ["X", "X"]


def test_metrics_draw_a_panel_only_for_a_counter_that_moved(tmp_path: Path) -> None:
    from simulator.views.timeline import draw_metrics  # noqa: PLC0415

    samples: list[dict[str, Json]] = [
        {"t": float(t), "ActiveConnectionCount": 1 if t < 350 else 0,
         "IdleTimeoutCount": 0 if t < 350 else 1, "ErrorPortAllocation": 0,
         "PacketsDropCount": 0} for t in range(0, 400, 10)]
    with Folder.create(tmp_path / "out") as out:
        written = draw_metrics(samples, "AWS/NATGateway", 35, "nat-gw", out, "metrics")
        svg = (tmp_path / "out" / "metrics.svg").read_text()
        panels = [k for k in ("ActiveConnectionCount", "IdleTimeoutCount",
                              "ErrorPortAllocation", "PacketsDropCount")
                  if f">{k}<" in svg]
        assert panels == ["ActiveConnectionCount", "IdleTimeoutCount"]
        assert "stayed at 0: PacketsDropCount, ErrorPortAllocation" in svg
        assert [p.name for p in written] == ["metrics.svg", "metrics.png"]
        quiet = [{"t": 0.0, "ErrorPortAllocation": 0}, {"t": 10.0, "ErrorPortAllocation": 0}]
        assert draw_metrics(quiet, "AWS/NATGateway", 35, "nat-gw", out, "quiet") == []
