"""Where a load balancer sends a flow, and what its inspection hosts remember.

A Network Load Balancer spreads the flows to its virtual address over its targets by a hash
of the 5-tuple (a flow created again with the same 5-tuple returns to the same target); a
Gateway Load Balancer sends each flow to one of its inspection hosts by a hash of 5, 3 or 2
fields (its *stickiness*). A late packet re-hashed by a Gateway Load Balancer counts a
*generation*, and with 5-tuple stickiness the next generation is taken to move on to the
next host (the catalogue's reproducible worst case). The generations are remembered for the most
recent keys only (bounded memory).

Each inspection host is stateful: it forwards only the connections it learnt from their
SYN, and forgets one idle past its own timeout (``target_idle_timeout``). Those forgettings
are timers in the appliance's one deadline heap (:class:`~simulator.core.flows.FlowTable`),
so that nothing stays behind once a connection is gone.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Iterable

from simulator.core.appliances import Appliance
from simulator.core.flows import Flow, FlowTable, Key, Timer

GENERATIONS_KEPT = 65_536


def _five_tuple(key: Key) -> bytes:
    proto, client_ip, client_port, server_ip, server_port = key
    return client_ip + server_ip + bytes([proto]) + client_port.to_bytes(2, "big") \
        + server_port.to_bytes(2, "big")


def _avoid(choice: int, n: int, unavailable: set[int]) -> int:
    """``choice``, or the next target after it that is available (if any is)."""
    for step in range(n):
        candidate = (choice + step) % n
        if candidate not in unavailable:
            return candidate
    return choice


class Balancer:
    """Flow hashing (backends, inspection hosts) and the inspection hosts' memory."""

    def __init__(self, appliance: Appliance, backends: int, timers: FlowTable) -> None:
        self.appliance = appliance
        self.backends = backends
        self.timers = timers
        self.host_state: list[dict[Key, float]] = [{} for _ in range(appliance.targets)]
        """Per inspection host: connection (inside key) -> when it last let a packet by."""
        self.generations: OrderedDict[Key, int] = OrderedDict()
        self.unavailable_backends: set[int] = set()
        """Deregistered targets: no new flows go to them (path events)."""
        self.failed: set[int] = set()
        """Failed inspection hosts: they forward nothing, new flows avoid them."""

    def next_generation(self, key: Key) -> int:
        """How many times ``key`` has been hashed, this time included."""
        generation = self.generations.pop(key, 0) + 1
        self.generations[key] = generation
        while len(self.generations) > GENERATIONS_KEPT:
            self.generations.popitem(last=False)
        return generation

    def pick_backend(self, key: Key) -> int:
        """A 5-tuple hash, the same for a flow created again (a UDP flow after its expiry):
        "A UDP flow has the same source and destination, so it is consistently routed to a
        single target throughout its lifetime" (NLB documentation); a deregistered target is
        passed over while another remains."""
        choice = zlib.crc32(_five_tuple(key), self.appliance.hash_seed) % self.backends
        return _avoid(choice, self.backends, self.unavailable_backends)

    def pick_target(self, key: Key) -> int:
        """Which inspection host a flow goes to (deterministic, see the catalogue entry)."""
        generation = self.next_generation(key)
        proto, client_ip, _, server_ip, _ = key
        n, a = self.appliance.targets, self.appliance
        if a.stickiness == 5:
            return _avoid((zlib.crc32(_five_tuple(key), a.hash_seed) + generation - 1) % n, n,
                          self.failed)
        basis = client_ip + server_ip + (bytes([proto]) if a.stickiness == 3 else b"")
        return _avoid(zlib.crc32(basis, a.hash_seed) % n, n, self.failed)

    def fail(self, target: int) -> None:
        """An inspection host fails: it forgets everything and forwards nothing."""
        self.failed.add(target)
        self.host_state[target].clear()

    def rebalance(self, flows: Iterable[Flow]) -> int:
        """Target failover ``rebalance``: the flows on failed hosts are hashed again onto
        healthy ones (which never saw their SYN). How many moved."""
        moved = 0
        for flow in flows:
            if flow.target in self.failed:
                flow.target = self.pick_target(flow.inside)
                moved += 1
        return moved

    def knows(self, target: int, key: Key, now: float) -> bool:
        if target in self.failed:
            return False
        last = self.host_state[target].get(key)
        return last is not None and now - last < self.appliance.target_idle_timeout

    def remember(self, target: int, key: Key, now: float) -> None:
        state = self.host_state[target]
        if key not in state:
            self.timers.schedule(now + self.appliance.target_idle_timeout,
                                 Timer.TARGET_STATE, (target, key))
        state[key] = now

    def prune(self, target: int, key: Key, now: float) -> None:
        """A host forgets a connection idle past its timeout (re-armed if seen since)."""
        last = self.host_state[target].get(key)
        if last is None:
            return
        if now - last >= self.appliance.target_idle_timeout:
            del self.host_state[target][key]
        else:
            self.timers.schedule(last + self.appliance.target_idle_timeout,
                                 Timer.TARGET_STATE, (target, key))

    def remembered(self) -> int:
        return sum(len(state) for state in self.host_state)
