from __future__ import annotations

from simulator.core.metrics import cloud_metrics, namespace_of, prometheus_text

COUNTERS = {"ActiveConnectionCount": 2, "ConnectionAttemptCount": 5, "IdleTimeoutCount": 3,
            "RstSent": 4, "RstFromClient": 1, "BytesInFromSource": 100,
            "BytesInFromDestination": 50, "KeepaliveProbes": 7}


def test_nat_gateway_names() -> None:
    m = cloud_metrics("nat-gw", COUNTERS)
    assert namespace_of("nat-gw") == "AWS/NATGateway"
    assert m["IdleTimeoutCount"] == 3 and m["ErrorPortAllocation"] == 0  # zeros included
    assert m["KeepaliveProbes"] == 7  # natsim's own counter kept


def test_network_elb_names() -> None:
    m = cloud_metrics("nlb", COUNTERS)
    assert namespace_of("nlb") == "AWS/NetworkELB"
    assert (m["ActiveFlowCount"], m["NewFlowCount"], m["ProcessedBytes"]) == (2, 5, 150)
    assert (m["TCP_ELB_Reset_Count"], m["TCP_Client_Reset_Count"],
            m["TCP_Target_Reset_Count"]) == (4, 1, 0)
    assert "IdleTimeoutCount" not in m


def test_prometheus_text() -> None:
    text = prometheus_text({"IdleTimeoutCount": 3}, {"world": "w", "appliance": "nat-gw"})
    assert text == ('# TYPE natsim_idletimeoutcount gauge\n'
                    'natsim_idletimeoutcount{appliance="nat-gw",world="w"} 3\n')
