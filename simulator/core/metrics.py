"""The engine's counters under the names the cloud's own metrics use.

A user who watches ``IdleTimeoutCount`` climb on a real NAT Gateway dashboard should see the
same name climb here. The engine counts in one vocabulary (NAT Gateway's, which is the
richest); this module renames per CloudWatch namespace:

* ``AWS/NATGateway`` (NAT gateways, and the other NATs of the catalogue): the counters as they
  are -- ActiveConnectionCount, ConnectionAttemptCount, ConnectionEstablishedCount,
  ErrorPortAllocation, IdleTimeoutCount, PacketsDropCount, Bytes/Packets In/Out From/To
  Source/Destination.
* ``AWS/NetworkELB`` (NLB, TLS listener, interface endpoint): ActiveFlowCount, NewFlowCount,
  ProcessedBytes, ProcessedPackets, TCP_ELB_Reset_Count, TCP_Client_Reset_Count,
  TCP_Target_Reset_Count, RejectedFlowCount.
* ``AWS/GatewayELB``: ActiveFlowCount, NewFlowCount, ProcessedBytes.

Anything else uses the NAT Gateway names. Every other counter natsim keeps (KeepaliveProbes,
ApplianceKeepalives, UnsupportedPackets, RejectedFlowCount, MalformedPackets,
RxQueueFullDrops, TxQueueFullDrops...) is kept under its own name in every namespace.
"""

from __future__ import annotations

from collections.abc import Mapping

NATGATEWAY = "AWS/NATGateway"
NETWORK_ELB = "AWS/NetworkELB"
GATEWAY_ELB = "AWS/GatewayELB"

_NAT_NAMES = (
    "ActiveConnectionCount", "ConnectionAttemptCount", "ConnectionEstablishedCount",
    "ErrorPortAllocation", "IdleTimeoutCount", "PacketsDropCount",
    "BytesInFromSource", "BytesOutToDestination", "BytesInFromDestination", "BytesOutToSource",
    "PacketsInFromSource", "PacketsOutToDestination", "PacketsInFromDestination",
    "PacketsOutToSource",
)
_OWN = ("KeepaliveProbes", "ApplianceKeepalives", "UnsupportedPackets")

NAMESPACES: dict[str, str] = {
    "nlb": NETWORK_ELB, "nlb-tls": NETWORK_ELB, "vpc-endpoint": NETWORK_ELB,
    "gwlb": GATEWAY_ELB,
}


def namespace_of(appliance_name: str) -> str:
    return NAMESPACES.get(appliance_name, NATGATEWAY)


GAUGES = ("ActiveConnectionCount", "ActiveFlowCount")
"""The metrics that go up and down; every other one only counts up (a Prometheus counter)."""


def cloud_metrics(appliance_name: str, counters: Mapping[str, int]) -> dict[str, int]:
    """The counters renamed for the appliance's CloudWatch namespace (zeros included), and
    every other counter the middlebox keeps under its own name (``RejectedFlowCount``,
    ``MalformedPackets``, ``RxQueueFullDrops``...): nothing it counts is left out."""
    c = {k: int(v) for k, v in counters.items()}

    def get(name: str) -> int:
        return c.get(name, 0)

    namespace = namespace_of(appliance_name)
    consumed: set[str] = set()
    if namespace == NATGATEWAY:
        out = {name: get(name) for name in _NAT_NAMES}
    else:
        out = {
            "ActiveFlowCount": get("ActiveConnectionCount"),
            "NewFlowCount": get("ConnectionAttemptCount"),
            "ProcessedBytes": get("BytesInFromSource") + get("BytesInFromDestination"),
        }
        consumed = {"ActiveConnectionCount", "ConnectionAttemptCount", "BytesInFromSource",
                    "BytesInFromDestination"}
        if namespace == NETWORK_ELB:
            out.update({
                "ProcessedPackets": get("PacketsInFromSource") + get("PacketsInFromDestination"),
                "TCP_ELB_Reset_Count": get("RstSent"),
                "TCP_Client_Reset_Count": get("RstFromClient"),
                "TCP_Target_Reset_Count": get("RstFromServer"),
                "RejectedFlowCount": get("RejectedFlowCount") + get("ErrorPortAllocation"),
            })
            consumed |= {"PacketsInFromSource", "PacketsInFromDestination", "RstSent",
                         "RstFromClient", "RstFromServer", "ErrorPortAllocation"}
    out.update({name: value for name, value in c.items()
                if name not in out and name not in consumed})
    return out


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _metric(name: str) -> str:
    return "natsim_" + "".join(ch if ch.isalnum() else "_" for ch in name).lower()


def prometheus_text(metrics: Mapping[str, int], labels: Mapping[str, str]) -> str:
    """The Prometheus text exposition format: gauges for what goes up and down, counters
    (``_total``) for the rest; a counter kept per reason (``MalformedPackets:short``) is
    one family with a ``reason`` label."""
    families: dict[str, list[tuple[dict[str, str], int]]] = {}
    kinds: dict[str, str] = {}
    for name, value in sorted(metrics.items()):
        base, _, reason = name.partition(":")
        extra = {"reason": reason} if reason else {}
        family = _metric(base + ("_by_reason" if reason else ""))
        if base not in GAUGES:
            family += "_total"
        kinds[family] = "gauge" if base in GAUGES else "counter"
        families.setdefault(family, []).append(({**labels, **extra}, value))
    lines = []
    for family, samples in families.items():
        lines.append(f"# TYPE {family} {kinds[family]}")
        for sample_labels, value in samples:
            text = ",".join(f'{k}="{_label(str(v))}"' for k, v in sorted(sample_labels.items()))
            lines.append(f"{family}{{{text}}} {value}")
    return "\n".join(lines) + "\n"
