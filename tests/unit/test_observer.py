"""The proxy's link watcher: connections, probes, FIN and RST as they cross each link."""

from __future__ import annotations

from simulator.core.events import EventKind
from simulator.core.observer import Observer
from tests.unit.helpers import tcp

CLIENT, PROXY_FRONT, PROXY_BACK, SERVER = "198.18.1.10", "198.18.1.1", "198.19.1.1", \
    "198.19.1.10"


def test_probes_are_seen_where_they_cross_and_nowhere_else() -> None:
    seen = Observer({CLIENT: "client", PROXY_FRONT: "proxy", PROXY_BACK: "proxy",
                     SERVER: "server"})
    front, back = "client side", "server side"
    assert seen.see(front, tcp(CLIENT, 40000, PROXY_FRONT, 8080, "S", 100), 0.0)[0].kind \
        is EventKind.FLOW_CREATED
    seen.see(front, tcp(PROXY_FRONT, 8080, CLIENT, 40000, "SA", 900, 101), 0.0)
    data = seen.see(front, tcp(CLIENT, 40000, PROXY_FRONT, 8080, "PA", 101, 901, b"GET\n"),
                    0.1)
    assert data[0].kind is EventKind.DATA and data[0].flow == 1
    [opened] = seen.see(back, tcp(PROXY_BACK, 50000, SERVER, 8080, "S", 7), 0.1)
    assert opened.flow == 2 and "proxy opens connection #2 to the server" in opened.text
    # a keepalive probe: one below the next expected sequence number, no data
    [probe] = seen.see(front, tcp(CLIENT, 40000, PROXY_FRONT, 8080, "A", 104, 901), 300.0)
    assert probe.kind is EventKind.KEEPALIVE and probe.data["link"] == front
    assert "after 299.9 s idle" in probe.text and probe.data["refreshed"] is False
    assert seen.see(front, tcp(PROXY_FRONT, 8080, CLIENT, 40000, "A", 901, 105), 300.0) == []
    [fin] = seen.see(front, tcp(PROXY_FRONT, 8080, CLIENT, 40000, "FA", 901, 105), 350.0)
    assert "FIN from the proxy to the client" in fin.text
    [rst] = seen.see(back, tcp(PROXY_BACK, 50000, SERVER, 8080, "R", 8), 350.0)
    assert "RST from the proxy to the server" in rst.text
    assert seen.counters == {"KeepaliveProbes:client side": 1, "DataSegments:client side": 1,
                             "Fin:client side": 1, "Rst:server side": 1}


def test_segments_of_unknown_connections_are_ignored() -> None:
    seen = Observer({})
    assert seen.see("client side", tcp(CLIENT, 1, SERVER, 2, "A", 5), 0.0) == []
    assert seen.see("client side", b"\x00" * 10, 0.0) == []
