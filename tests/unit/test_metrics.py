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
    assert m["IdleTimeoutCount"] == 3  # no NLB metric of that name: natsim's own, kept
    assert "ActiveConnectionCount" not in m and "RstSent" not in m  # renamed above


def test_every_counter_the_middlebox_keeps_is_shown() -> None:
    kept = {**COUNTERS, "RejectedFlowCount": 2, "MalformedPackets": 5,
            "MalformedPackets:short frame": 5, "RxQueueFullDrops": 9, "TxQueueFullDrops": 1}
    for appliance in ("nat-gw", "nlb", "gwlb", "gcp-nat"):
        m = cloud_metrics(appliance, kept)
        assert (m["MalformedPackets"], m["RxQueueFullDrops"], m["TxQueueFullDrops"]) == (5, 9, 1)
        assert m["RejectedFlowCount"] == 2 and m["MalformedPackets:short frame"] == 5


def test_prometheus_text() -> None:
    text = prometheus_text({"IdleTimeoutCount": 3, "ActiveConnectionCount": 1,
                            "MalformedPackets:bad \"len\"": 2},
                           {"world": "w", "appliance": "nat-gw"})
    assert text == ('# TYPE natsim_activeconnectioncount gauge\n'
                    'natsim_activeconnectioncount{appliance="nat-gw",world="w"} 1\n'
                    '# TYPE natsim_idletimeoutcount_total counter\n'
                    'natsim_idletimeoutcount_total{appliance="nat-gw",world="w"} 3\n'
                    '# TYPE natsim_malformedpackets_by_reason_total counter\n'
                    'natsim_malformedpackets_by_reason_total{appliance="nat-gw",'
                    'reason="bad \\"len\\"",world="w"} 2\n')
