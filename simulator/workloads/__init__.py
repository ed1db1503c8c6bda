"""Programs that run inside the simulated hosts: real processes, real sockets, real keepalive.

Each prints one JSON line per thing it saw, stamped with ``time.monotonic()`` (the same clock
in every namespace), and the runner turns those stamps into model time. They report only what
their own sockets told them: an answer, a reset, a timeout. Nothing here is inferred from the
middlebox's log.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from typing import TypeVar

from simulator.core.configs import ConfigError, decode
from simulator.core.jsonvalue import Json
from simulator.core.messages import Kind, Message

T = TypeVar("T")


def config_from_argv(prog: str, description: str | None, argv: list[str] | None,
                     cls: type[T]) -> T:
    """The ``--config JSON`` every workload takes (the driver writes it with
    :func:`~simulator.core.configs.encode`), read back strictly."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", required=True, help="JSON object with the settings")
    args = parser.parse_args(argv)
    return _decode(parser, cls, args.config)


def role_and_config(prog: str, description: str | None, argv: list[str] | None,
                    roles: Mapping[str, type[object]]) -> tuple[str, object]:
    """``ROLE --config JSON`` for workloads with a client and a server side; the config
    is decoded as the role's class."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("role", choices=list(roles))
    parser.add_argument("--config", required=True, help="JSON object with the settings")
    args = parser.parse_args(argv)
    return args.role, _decode(parser, roles[args.role], args.config)


def _decode(parser: argparse.ArgumentParser, cls: type[T], text: str) -> T:
    try:
        return decode(cls, text)
    except ConfigError as exc:
        parser.error(f"--config: {exc}")


def report(source: str, kind: Kind, text: str, **data: Json) -> None:
    """One message on stdout (:mod:`simulator.core.messages`), flushed at once so that the
    runner can show it live."""
    msg = Message(source, kind, text, mono=time.monotonic(), data=data)
    sys.stdout.write(msg.to_line() + "\n")
    sys.stdout.flush()


def peer_name(address: tuple[str, int] | tuple[str, int, int, int]) -> str:
    """A socket address as a line names it: ``host:port``, ``[host]:port`` for IPv6."""
    return f"[{address[0]}]:{address[1]}" if ":" in address[0] else f"{address[0]}:{address[1]}"
