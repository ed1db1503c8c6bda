"""The idle pool's fields: ``client.requests``, ``pool``, ``retry`` and their expectations.

A scenario with ``client.requests`` is scripted: requests at model times on kept connections
(:mod:`simulator.core.pool_model`). Its ``expect.client`` lists one outcome per request --
``answer``, ``reset``, ``timeout``, ``retransmit_timeout`` -- with a retried request's
attempts joined by ``+`` (``reset+answer``); ``expect.server`` lists the fate of each answer
the server sends (``delivered``...). Both are kept as one text, joined by ``", "``, which is
what the run reports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from simulator.spec.fields import ScenarioError, integer, number

REQUEST_OUTCOMES = ("answer", "reset", "timeout", "retransmit_timeout", "keepalive_failed",
                    "closed", "connect_failed", "error")
ANSWER_FATES = ("delivered", "reset", "unacknowledged")
SCRIPT_FIELDS = ("requests", "pool", "retry", "discard_after", "ping_every", "validate")
HABITS = ("discard_after", "ping_every", "validate")
"""A pool's own habits (model seconds; :class:`simulator.core.pool_model.PoolExchange`)."""
NOT_WITH_A_SCRIPT = {
    "retries": "connect attempts of the one-request client; a pool retries a request on "
               "a new connection with client.retry",
    "backoff": "the one-request client's connect retries",
    "resolve": "the one-request client's connect retries",
}


@dataclass(frozen=True)
class Script:
    requests: tuple[float, ...]
    pool: int
    retry: int
    expect_client: str
    expect_server: str
    habits: dict[str, float]


def _outcome_list(source: str, path: str, value: object, allowed: tuple[str, ...],
                  length: int | None, joined: bool) -> str:
    if not isinstance(value, list) or not value:
        raise ScenarioError(source, path, f"a scripted client expects a list (one entry per "
                            f"{'request' if joined else 'answer'}); got {value!r}")
    if length is not None and len(value) != length:
        raise ScenarioError(source, path, f"{len(value)} entries for {length} requests: give "
                            "one outcome per request")
    words = "|".join(map(re.escape, allowed))
    pattern = re.compile(rf"({words})(\+({words}))*" if joined else rf"({words})")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not pattern.fullmatch(item):
            how = " (a retried request joins its attempts with +: reset+answer)" if joined \
                else ""
            raise ScenarioError(source, f"{path}[{i}]", f"must be one of {', '.join(allowed)}"
                                f"{how}; got {item!r}")
    return ", ".join(value)


def parse_script(source: str, client: dict[str, object], expect: dict[str, object],
                 defaults: dict[str, float] | None = None, retry: int = 0) -> Script:
    """``client.requests`` and its companions, and the per-request expectations; a
    profile's habits and retry are the ``defaults``, which the fields override."""
    for name, why in NOT_WITH_A_SCRIPT.items():
        if name in client:
            raise ScenarioError(source, f"client.{name}", f"not with client.requests: {why}")
    raw = client["requests"]
    if not isinstance(raw, list) or not raw:
        raise ScenarioError(source, "client.requests", "a list of model times (seconds from "
                            f"the first request, which is 0); got {raw!r}")
    times = tuple(number(source, f"client.requests[{i}]", t, positive=False)
                  for i, t in enumerate(raw))
    if times[0] != 0:
        raise ScenarioError(source, "client.requests[0]", "the first request is at 0 (model "
                            "time counts from it)")
    for i in range(1, len(times)):
        if times[i] <= times[i - 1]:
            raise ScenarioError(source, f"client.requests[{i}]", f"{times[i]:g} is not after "
                                f"the request before it ({times[i - 1]:g})")
    if len(times) > 50:
        raise ScenarioError(source, "client.requests", "at most 50 requests")
    habits = dict(defaults or {})
    habits.update({name: number(source, f"client.{name}", client[name])
                   for name in HABITS if name in client})
    return Script(
        requests=times, pool=integer(source, "client.pool", client.get("pool", 1), 1, 16),
        retry=integer(source, "client.retry", client.get("retry", retry), 0, 5),
        habits=habits,
        expect_client=_outcome_list(source, "expect.client", expect["client"],
                                    REQUEST_OUTCOMES, len(times), True),
        expect_server=_outcome_list(source, "expect.server", expect["server"], ANSWER_FATES,
                                    None, False))
