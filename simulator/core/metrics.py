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

Anything else uses the NAT Gateway names. natsim-only counters (KeepaliveProbes,
ApplianceKeepalives, UnsupportedPackets) are kept under their own names in every namespace.
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


def cloud_metrics(appliance_name: str, counters: Mapping[str, int]) -> dict[str, int]:
    """The counters renamed for the appliance's CloudWatch namespace (zeros included)."""
    c = {k: int(v) for k, v in counters.items()}

    def get(name: str) -> int:
        return c.get(name, 0)

    namespace = namespace_of(appliance_name)
    if namespace == NATGATEWAY:
        out = {name: get(name) for name in _NAT_NAMES}
    else:
        out = {
            "ActiveFlowCount": get("ActiveConnectionCount"),
            "NewFlowCount": get("ConnectionAttemptCount"),
            "ProcessedBytes": get("BytesInFromSource") + get("BytesInFromDestination"),
        }
        if namespace == NETWORK_ELB:
            out.update({
                "ProcessedPackets": get("PacketsInFromSource") + get("PacketsInFromDestination"),
                "TCP_ELB_Reset_Count": get("RstSent"),
                "TCP_Client_Reset_Count": get("RstFromClient"),
                "TCP_Target_Reset_Count": get("RstFromServer"),
                "RejectedFlowCount": get("ErrorPortAllocation"),
            })
    out.update({name: get(name) for name in _OWN if name in c})
    return out


def prometheus_text(metrics: Mapping[str, int], labels: Mapping[str, str]) -> str:
    """The Prometheus text exposition format (one gauge per metric)."""
    label_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    lines = []
    for name, value in sorted(metrics.items()):
        metric = "natsim_" + "".join(ch if ch.isalnum() else "_" for ch in name).lower()
        lines.append(f"# TYPE {metric} gauge")
        lines.append(f"{metric}{{{label_text}}} {value}")
    return "\n".join(lines) + "\n"
