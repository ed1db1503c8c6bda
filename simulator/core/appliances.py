"""The appliance catalogue: what each middlebox does to idle flows, as data.

An appliance is a frozen record of numbers and switches; the engine reads it and never
branches on an appliance's name. A scenario picks a catalogue entry by name and may override
any field (``appliance: {name: nat-gw, tcp_idle_timeout: 300}``), which yields a new record.

AWS NAT Gateway (``nat-gw``)
    * "If a connection that's using a NAT gateway is idle for 350 seconds or more, the
      connection times out." -- AWS VPC User Guide, *Troubleshoot NAT gateways*
      (https://docs.aws.amazon.com/vpc/latest/userguide/nat-gateway-troubleshooting.html).
    * "When a connection times out, a NAT gateway returns an RST packet to any resources
      behind the NAT gateway that attempt to continue the connection (it does not send a FIN
      packet)." -- *Compare NAT gateways and NAT instances*
      (https://docs.aws.amazon.com/vpc/latest/userguide/vpc-nat-comparison.html).
    * What the server (outside) sees when it sends after expiry is not documented: the AWS
      networking blog (seed 003) says "the transmitting end of the connection receives a TCP
      RST packet back from the appliance which timed out", so that is the default here, and
      ``late_from_outside: drop`` models the reading "packets aren't delivered".
    * UDP: no separate figure is documented; 350 s is assumed.
    * 55,000 concurrent connections to one destination (IP, port, protocol) per public IP,
      source ports 1024-65535 (*NAT gateway basics*).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class LateAction(StrEnum):
    """What an appliance does with a packet that belongs to no flow it tracks."""

    RST = "rst"
    """Drop it and answer the sender with a TCP RST (UDP and ICMP are just dropped)."""
    DROP = "drop"
    """Drop it silently: the sender retransmits until its own timers give up."""


@dataclass(frozen=True, slots=True)
class Appliance:
    """One middlebox model. Times are model seconds."""

    name: str
    title: str
    tcp_idle_timeout: float
    udp_idle_timeout: float
    late_from_inside: LateAction
    late_from_outside: LateAction
    public_ips: tuple[str, ...] = ("203.0.113.1",)
    ports_per_destination: int = 55_000
    port_min: int = 1024
    port_max: int = 65535
    sources: tuple[str, ...] = ()

    def with_overrides(self, overrides: dict[str, Any]) -> Appliance:
        """A copy with ``overrides`` applied; unknown fields raise ``KeyError`` naming them."""
        known = {f.name for f in dataclasses.fields(self)} - {"name", "title", "sources"}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise KeyError(", ".join(unknown))
        values = dict(overrides)
        for field in ("late_from_inside", "late_from_outside"):
            if field in values:
                values[field] = LateAction(values[field])
        if "public_ips" in values:
            values["public_ips"] = tuple(values["public_ips"])
        return dataclasses.replace(self, **values)

    @staticmethod
    def overridable_fields() -> list[str]:
        return [f.name for f in dataclasses.fields(Appliance)
                if f.name not in ("name", "title", "sources")]


NAT_GATEWAY = Appliance(
    name="nat-gw",
    title="AWS NAT Gateway",
    tcp_idle_timeout=350.0,
    udp_idle_timeout=350.0,
    late_from_inside=LateAction.RST,
    late_from_outside=LateAction.RST,
    sources=(
        "https://docs.aws.amazon.com/vpc/latest/userguide/nat-gateway-troubleshooting.html",
        "https://docs.aws.amazon.com/vpc/latest/userguide/vpc-nat-comparison.html",
        "https://aws.amazon.com/blogs/networking-and-content-delivery/"
        "implementing-long-running-tcp-connections-within-vpc-networking/",
    ),
)

CATALOGUE: dict[str, Appliance] = {a.name: a for a in (NAT_GATEWAY,)}


def get_appliance(name: str) -> Appliance:
    try:
        return CATALOGUE[name]
    except KeyError:
        raise KeyError(f"unknown appliance {name!r}; known: {', '.join(sorted(CATALOGUE))}")\
            from None
