"""The appliance record's field types and the values a provider allows in them: what an
appliance does with a late packet or at expiry, and the checks an override passes (a value
of the wrong type or out of the provider's range is refused, naming the field). The record
itself and the catalogue are :mod:`simulator.core.appliances`, which re-exports these."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from enum import StrEnum

from simulator.core.jsonvalue import Json


class LateAction(StrEnum):
    """What an appliance does with a packet that belongs to no flow it tracks."""

    RST = "rst"
    """Drop it and answer the sender with a TCP RST (UDP and ICMP are just dropped)."""
    DROP = "drop"
    """Drop it silently: the sender retransmits until its own timers give up."""
    PASS = "pass"
    """Track it as a new flow and forward it (rules that allow it, e.g. an outbound rule)."""
    REHASH = "rehash"
    """Track it as a new flow on a target chosen by hash; the target forwards it only if it
    still holds the flow's state (Gateway Load Balancer)."""


class ExpiryAction(StrEnum):
    """What an appliance does at the moment a flow expires."""

    SILENT = "silent"
    RST_BOTH = "rst_both"
    """Send an RST to both ends at once (Azure Load Balancer with TCP reset enabled)."""


class ApplianceError(ValueError):
    """An override the provider itself would refuse; the message names the field."""


def timeout_range(value: object) -> tuple[float, float] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or len(value) != 2 or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise ApplianceError(f"tcp_timeout_range: must be [low, high], got {value!r}")
    return float(value[0]), float(value[1])


MAX_MODEL_SECONDS = 1_000_000.0
"""The longest duration any field accepts (11.6 days; Linux conntrack's 5 days fits)."""
_SECONDS = ("seconds", 0.001, MAX_MODEL_SECONDS)
_FIELD_RULES: dict[str, tuple[str, float, float]] = {
    "tcp_idle_timeout": _SECONDS, "udp_idle_timeout": _SECONDS,
    "transitory_timeout": _SECONDS, "target_idle_timeout": _SECONDS,
    "keepalive_echo": ("seconds", 1.0, 3600.0),
    "capacity_scale": ("number", 1e-6, 1.0),
    "ports_per_destination": ("integer", 1, 1_000_000),
    "port_min": ("integer", 1, 65535), "port_max": ("integer", 1, 65535),
    "targets": ("integer", 0, 64), "stickiness": ("integer", 2, 5),
    "hash_seed": ("integer", 0, 2**32 - 1), "backends": ("integer", 1, 8),
    "connections_per_eni": ("integer", 0, 10_000_000), "enis": ("integer", 1, 1000),
    "max_flows": ("integer", 1, 10_000_000),
    "public_ips": ("addresses", 1, 32), "backend_ips": ("addresses", 0, 8),
    "public_ip_limit": ("integer", 1, 32),
    "vip": ("address", 0, 0), "vip6": ("address6", 0, 0),
}
"""Type and range of every numeric or address field (min, max inclusive)."""
_NULLABLE = ("transitory_timeout", "keepalive_echo")
_PUBLIC_NETS = ("203.0.113.", "198.51.100.")
_SERVER_SIDE6 = ipaddress.IPv6Network("2001:db8:2::/64")
"""NAT public addresses: the documentation ranges (never the host's own networks)."""


def json_list(value: Json) -> Sequence[Json]:
    if not isinstance(value, list | tuple):
        raise ApplianceError(f"sources: must be a list, got {value!r}")
    return value


def _ipv4(value: object) -> bool:
    parts = value.split(".") if isinstance(value, str) else []
    return len(parts) == 4 and all(p.isdigit() and len(p) <= 3 and int(p) <= 255
                                   for p in parts)


def check_field(key: str, value: object) -> None:
    """Refuse a value of the wrong type or out of range for appliance field ``key``, with a
    message that starts with the field's name (callers prefix the file and path)."""
    if key in _NULLABLE and value is None:
        return
    if key in ("late_from_inside", "late_from_outside", "on_expiry"):
        allowed = [str(v) for v in (LateAction if key != "on_expiry" else ExpiryAction)]
        if not isinstance(value, str) or value not in allowed:
            raise ApplianceError(f"{key}: must be one of {', '.join(allowed)}; got {value!r}")
    elif key in ("nat", "send_tcp_reset_on_idle_timeout", "keepalive_refreshes", "icmp",
                 "nat64"):
        if not isinstance(value, bool):
            raise ApplianceError(f"{key}: must be true or false, got {value!r}")
    elif key in _FIELD_RULES:
        kind, low, high = _FIELD_RULES[key]
        _CHECKS[kind](key, value, low, high)


def _check_number(key: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not low <= value <= high:  # NaN fails both comparisons
        unit = " model seconds" if _FIELD_RULES[key][0] == "seconds" else ""
        raise ApplianceError(f"{key}: must be a number from {low:g} to {high:g}{unit}, "
                             f"got {value!r}")


def _check_integer(key: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApplianceError(f"{key}: must be a whole number from {low:g} to {high:g}, "
                             f"got {value!r}")
    if key == "stickiness" and value not in (2, 3, 5):
        raise ApplianceError(f"stickiness: must be 5, 3 or 2 (tuple), got {value!r}")


def _check_address(key: str, value: object, low: float, high: float) -> None:
    if not _ipv4(value) or not str(value).startswith("198.19."):
        raise ApplianceError(f"{key}: must be an IPv4 address in 198.19.0.0/16 (the "
                             f"server side), got {value!r}")


def _check_address6(key: str, value: object, low: float, high: float) -> None:
    """An IPv6 address on the server's side (2001:db8:2::/64), or empty (not dual-stack)."""
    text = str(value)
    if value == "":
        return
    try:
        ok = isinstance(value, str) and ipaddress.IPv6Address(text) in _SERVER_SIDE6
    except ValueError:
        ok = False
    if not ok:
        raise ApplianceError(f"{key}: must be an IPv6 address in 2001:db8:2::/64 (the server "
                             f"side), or empty; got {value!r}")


def _check_addresses(key: str, value: object, low: float, high: float) -> None:
    if not isinstance(value, list | tuple) or not low <= len(value) <= high \
            or not all(_ipv4(v) for v in value):
        raise ApplianceError(f"{key}: must be a list of {low:g} to {high:g} IPv4 "
                             f"addresses, got {value!r}")
    if key == "public_ips" and not all(str(v).startswith(_PUBLIC_NETS) for v in value):
        raise ApplianceError("public_ips: use addresses from the documentation ranges "
                             f"203.0.113.0/24 and 198.51.100.0/24, got {value!r}")
    if key == "public_ips" and len(set(value)) != len(value):
        raise ApplianceError(f"public_ips: listed twice: {value!r}")


_CHECKS = {"seconds": _check_number, "number": _check_number, "integer": _check_integer,
           "address": _check_address, "address6": _check_address6,
           "addresses": _check_addresses}
