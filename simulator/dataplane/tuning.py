"""How the dataplane's process keeps its timing under load (``packet_loop.main`` calls it
once, before the loop)."""

from __future__ import annotations

import contextlib
import gc
import os

NICE = -10


def steady_under_load() -> None:
    """Keep the dataplane's timing steady with 100,000 flows and a busy machine.

    Python's cyclic garbage collector now and then walks every tracked object: with 100,000
    flows that pause reached 300 ms (``make bench``: RSTs at expiry that late at p99), far
    past a deadline's precision. The flow table holds no reference cycles, so automatic
    collection is switched off and only the young generations are collected, once a second,
    in the loop (a cycle that survives them is the rare leak we accept).

    The middlebox stands for an appliance with CPUs of its own; on a two-core machine shared
    with thousands of client sockets it would otherwise be starved by the very load it
    models. It asks for a higher priority, which works as root and is quietly refused
    without CAP_SYS_NICE (the rootless path).
    """
    gc.freeze()
    gc.disable()
    with contextlib.suppress(OSError):
        os.nice(NICE)
