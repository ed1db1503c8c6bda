"""Programs that run inside the simulated hosts: real processes, real sockets, real keepalive.

Each prints one JSON line per thing it saw, stamped with ``time.monotonic()`` (the same clock
in every namespace), and the runner turns those stamps into model time. They report only what
their own sockets told them: an answer, a reset, a timeout. Nothing here is inferred from the
middlebox's log.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from simulator.core.messages import Kind, Message


def config_from_argv(prog: str, description: str | None,
                     argv: list[str] | None) -> dict[str, Any]:
    """The ``--config JSON`` every workload takes (the runner writes it)."""
    return role_and_config(prog, description, argv, ())[1]


def role_and_config(prog: str, description: str | None, argv: list[str] | None,
                    roles: tuple[str, ...] = ("client", "server")) -> tuple[str, dict[str, Any]]:
    """``ROLE --config JSON`` for workloads with a client and a server side (no ROLE when
    ``roles`` is empty)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    if roles:
        parser.add_argument("role", choices=roles)
    parser.add_argument("--config", required=True, help="JSON object with the settings")
    args = parser.parse_args(argv)
    config: dict[str, Any] = json.loads(args.config)
    return getattr(args, "role", ""), config


def report(source: str, kind: Kind, text: str, **data: Any) -> None:
    """One message on stdout (:mod:`simulator.core.messages`), flushed at once so that the
    runner can show it live."""
    msg = Message(source, kind, text, mono=time.monotonic(), data=data)
    sys.stdout.write(msg.to_line() + "\n")
    sys.stdout.flush()
