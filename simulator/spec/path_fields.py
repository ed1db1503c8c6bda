"""The ``events:`` section of a scenario file: path events, each field checked.

What each kind does is :mod:`simulator.core.path_events`; here is only what a scenario may
say, so that a typo or an event the path cannot have (a deregistration without targets, an
event after the run) stops the run before it starts, naming the field (exit status 2).
"""

from __future__ import annotations

from dataclasses import replace

from simulator.core.appliances import Appliance, did_you_mean
from simulator.core.path_events import FAILOVER_MODES, PathEvent, PathKind
from simulator.spec.fields import ScenarioError, choice, mapping, number

MAX_EVENTS = 16
MAX_DEREGISTRATION_DELAY = 3600.0
"""``deregistration_delay.timeout_seconds``: "The range is 0-3600 seconds"."""

_FIELDS: dict[PathKind, tuple[str, ...]] = {
    PathKind.ATTACH: (),
    PathKind.RESTART: (),
    PathKind.REPLACE: (),
    PathKind.BLACKHOLE: ("duration",),
    PathKind.DEREGISTER: ("delay", "termination"),
    PathKind.TARGET_FAILURE: ("delay", "failover"),
}
KINDS = tuple(str(k) for k in _FIELDS)
"""What a scenario file may name (``expire`` is on demand only)."""


def parse_events(src: str, raw: object, appliance: Appliance, *, chain: int, run_end: float,
                 backend: str, protocol: str) -> tuple[PathEvent, ...]:
    """``events:`` as a tuple of :class:`PathEvent`, in time order.

    ``run_end`` is the client's timeout (model seconds): an event at or after it could not
    happen during the run.
    """
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ScenarioError(src, "events", "must be a list of events, each a mapping with "
                            "`kind` and `at`")
    if len(raw) > MAX_EVENTS:
        raise ScenarioError(src, "events", f"{len(raw)} events: at most {MAX_EVENTS}")
    if raw and chain > 1:
        raise ScenarioError(src, "events", "path events apply to a path of one appliance; "
                            "this scenario has a chain")
    events = [_event(src, f"events[{i}]", item, appliance, run_end, backend, protocol)
              for i, item in enumerate(raw)]
    if sum(e.kind is PathKind.ATTACH for e in events) > 1:
        raise ScenarioError(src, "events", "the client's interface can be attached once")
    return tuple(sorted(events, key=lambda e: e.at))


def _event(src: str, path: str, item: object, appliance: Appliance, run_end: float,
           backend: str, protocol: str) -> PathEvent:
    if not isinstance(item, dict) or "kind" not in item:
        raise ScenarioError(src, f"{path}.kind", f"missing; every event has a kind (one of "
                            f"{', '.join(KINDS)}) and a time `at`")
    kind_name = item["kind"]
    if kind_name not in KINDS:
        raise ScenarioError(src, f"{path}.kind", f"unknown event kind {kind_name!r}; "
                            f"{did_you_mean(str(kind_name), KINDS)}known: {', '.join(KINDS)}")
    kind = PathKind(kind_name)
    spec = mapping(src, path, item, ("kind", "at", *_FIELDS[kind]))
    if "at" not in spec:
        raise ScenarioError(src, f"{path}.at", "missing: when it happens, in model seconds "
                            "from the client's request")
    at = number(src, f"{path}.at", spec["at"])
    if at >= run_end:
        raise ScenarioError(src, f"{path}.at", f"{at:g} s is outside the run: it ends at the "
                            f"client's timeout, {run_end:g} s")
    _applies(src, path, kind, appliance, backend, protocol)
    event = PathEvent(kind, at)
    if kind is PathKind.BLACKHOLE:
        if "duration" not in spec:
            raise ScenarioError(src, f"{path}.duration", "missing: how long packets are "
                                "dropped, in model seconds")
        event = replace(event, duration=number(src, f"{path}.duration", spec["duration"]))
    if "delay" in spec:
        event = replace(event, delay=number(src, f"{path}.delay", spec["delay"],
                                            positive=False, high=MAX_DEREGISTRATION_DELAY))
    if "termination" in spec:
        termination = spec["termination"]
        if not isinstance(termination, bool):
            raise ScenarioError(src, f"{path}.termination", "must be true or false "
                                "(deregistration_delay.connection_termination.enabled)")
        event = replace(event, termination=termination)
    if "failover" in spec:
        event = replace(event, failover=choice(src, f"{path}.failover", spec["failover"],
                                               FAILOVER_MODES))
    return event


def _applies(src: str, path: str, kind: PathKind, appliance: Appliance, backend: str,
             protocol: str) -> None:
    """Refuse an event that this path cannot have."""
    where = f"{path}.kind"
    if kind is PathKind.ATTACH and (backend != "namespaces" or protocol != "tcp"):
        raise ScenarioError(src, where, "a late attach is supported for TCP clients in "
                            "namespaces (`backend: namespaces`)")
    if kind is PathKind.REPLACE and not appliance.nat:
        raise ScenarioError(src, where, f"{appliance.name} translates no addresses: a "
                            "replacement would look the same; use `restart`")
    if kind is PathKind.DEREGISTER and appliance.backends < 2:
        raise ScenarioError(src, where, "a deregistration needs a load balancer with "
                            "several targets: give the appliance `backends: 2` or more")
    if kind is PathKind.TARGET_FAILURE and appliance.targets < 1:
        raise ScenarioError(src, where, f"{appliance.name} has no inspection targets (a "
                            "Gateway Load Balancer has: `gwlb`)")
