"""Fuzz what people hand natsim: scenario and matrix files, and captures (``make fuzz``).

Every input goes through the command a person would run, in-process: ``natsim check FILE``
and ``natsim matrix FILE --list`` for YAML, ``natsim replay FILE --appliance nat-gw --json``
for captures. Whatever the bytes, the command must end with one of its own exit statuses
(0, 1, or 2 naming the file); any exception that escapes it (a ``RecursionError`` from deep
nesting, a ``struct.error`` from a short block, a ``MemoryError`` from a lying length) is an
**escape**, reported with the input that caused it, and the run exits 1.

Inputs start from valid ones (the shipped scenarios and matrices; a pcap and a pcapng of a
few TCP and UDP conversations, a 400-second gap among them) and go through random mutations:
values swapped for odd ones (huge, negative, NaN, nested, lists where maps go, control
characters), text cut, bytes flipped, lengths that lie. ``tests/unit/test_fuzz_inputs.py``
runs a slice of the same under hypothesis in the unit suite.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import random
import struct
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from simulator.cli import main as cli
from simulator.spec.scenario import SCENARIO_DIR

ODD_VALUES: list[Any] = [
    0, -5, -1e308, 1e308, float("nan"), float("inf"), 10 ** 400, 2 ** 64, True, None, "",
    "on", "\x1b[2J\x07", "a" * 5000, [], {}, [1, [2, [3]]], {"name": "nlb"},
    {"name": "nat-gw", "tcp_idle_timeout": -1}, 0.0001, "1e999", "nlb", [None], 1.5,
]


def _odd(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.random()
    if pick < 0.6 or depth > 3:
        return copy.deepcopy(rng.choice(ODD_VALUES))  # never one shared list mutated later
    if pick < 0.8:
        return [_odd(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["name", "idle", "speed", "x", "timeout", "delay"]): _odd(rng, depth + 1)
            for _ in range(rng.randint(0, 3))}


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found += _paths(value, (*prefix, i))
    return found


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return doc


def yaml_seeds() -> list[str]:
    files = sorted(SCENARIO_DIR.glob("*.yaml")) + sorted((SCENARIO_DIR / "matrix").glob("*.yaml"))
    return [p.read_text() for p in files]


def mutate_yaml(rng: random.Random, seed: str) -> bytes:
    """A shipped file, changed: values replaced, keys added or doubled, nesting deepened,
    text cut or bytes flipped."""
    how = rng.random()
    if how < 0.6:
        doc = yaml.safe_load(seed)
        for _ in range(rng.randint(1, 3)):
            doc = _set(doc, rng.choice(_paths(doc)), _odd(rng))
        if rng.random() < 0.2 and isinstance(doc, dict):
            doc[rng.choice(["extra", "name", "speed"])] = _odd(rng)
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True).encode()
    raw = bytearray(seed.encode())
    if how < 0.7:  # deep nesting, or a list or a map as a key
        depth = rng.choice([40, 1000, 50_000])
        extra = rng.choice([b"[" * depth + b"]" * depth, b"{a: " * depth + b"1" + b"}" * depth,
                            b"? [1, 2]\n: 3\n", b"? {a: 1}\n: 3\n",
                            b"speed: " + b"9" * rng.choice([400, 5000]) + b"\n"])
        return bytes(raw) + b"\nx" + bytes(rng.randint(0, 9)) + b": " + extra + b"\n" \
            if rng.random() < 0.5 else extra
    if how < 0.85 and raw:  # cut
        return bytes(raw[:rng.randrange(len(raw))])
    for _ in range(rng.randint(1, 8)):  # flip bytes
        if raw:
            raw[rng.randrange(len(raw))] = rng.randrange(256)
    return bytes(raw)


def _ipv4_tcp(src: bytes, sport: int, dst: bytes, dport: int, flags: int, seq: int,
              payload: bytes = b"") -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0) + payload
    total = 20 + len(tcp)
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0x4000, 64, 6, 0, src, dst) + tcp


def _ipv4_udp(src: bytes, sport: int, dst: bytes, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, src, dst) + udp


def conversation() -> list[tuple[float, bytes]]:
    """Two TCP connections (one silent 400 s, then answered) and a UDP exchange."""
    c, s = bytes([198, 18, 1, 10]), bytes([198, 19, 1, 10])
    packets = []
    for i, (sport, gap) in enumerate([(40000, 400.0), (40001, 10.0)]):
        t = float(i)
        packets += [(t, _ipv4_tcp(c, sport, s, 8080, 0x02, 100)),
                    (t + 0.01, _ipv4_tcp(s, 8080, c, sport, 0x12, 500)),
                    (t + 0.02, _ipv4_tcp(c, sport, s, 8080, 0x10, 101)),
                    (t + 0.03, _ipv4_tcp(c, sport, s, 8080, 0x18, 101, b"GET /")),
                    (t + gap, _ipv4_tcp(s, 8080, c, sport, 0x18, 501, b"200 OK")),
                    (t + gap + 0.01, _ipv4_tcp(c, sport, s, 8080, 0x11, 106))]
    packets += [(3.0, _ipv4_udp(c, 5353, s, 53, b"q")), (3.1, _ipv4_udp(s, 53, c, 5353, b"a"))]
    return sorted(packets)


def pcap_bytes(packets: list[tuple[float, bytes]]) -> bytes:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)]  # raw IP
    for t, pkt in packets:
        out.append(struct.pack("<IIII", int(t), int(t % 1 * 1e6), len(pkt), len(pkt)) + pkt)
    return b"".join(out)


def _block(kind: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    length = 12 + len(body)
    return struct.pack("<II", kind, length) + body + struct.pack("<I", length)


def pcapng_bytes(packets: list[tuple[float, bytes]]) -> bytes:
    out = [_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)),
           _block(1, struct.pack("<HHI", 101, 0, 65535)
                  + struct.pack("<HHB3x", 9, 1, 6) + struct.pack("<HH", 0, 0))]
    for t, pkt in packets:
        stamp = int(t * 1e6)
        out.append(_block(6, struct.pack("<IIIII", 0, stamp >> 32, stamp & 0xFFFFFFFF,
                                         len(pkt), len(pkt)) + pkt))
    return b"".join(out)


def capture_seeds() -> list[bytes]:
    packets = conversation()
    return [pcap_bytes(packets), pcapng_bytes(packets)]


def mutate_capture(rng: random.Random, seed: bytes) -> bytes:
    raw = bytearray(seed)
    for _ in range(rng.randint(1, 6)):
        how = rng.random()
        if how < 0.35 and raw:  # a byte anywhere
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        elif how < 0.65 and len(raw) >= 4:  # a 32-bit field that lies (lengths, offsets)
            at = rng.randrange(0, len(raw) - 3) & ~3 if rng.random() < 0.7 \
                else rng.randrange(len(raw) - 3)
            raw[at:at + 4] = struct.pack("<I", rng.choice(
                [0, 1, 4, 7, 11, 12, 16, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFC, 0xFFFFFFFF,
                 rng.randrange(1 << 32)]))
        elif how < 0.8 and raw:  # cut
            del raw[rng.randrange(len(raw)):]
        elif how < 0.9 and raw:  # a chunk doubled or dropped
            a = rng.randrange(len(raw))
            b = min(len(raw), a + rng.randint(1, 64))
            raw[a:a] = raw[a:b] if rng.random() < 0.5 else b""
            if rng.random() < 0.5:
                del raw[a:b]
        else:  # an IPv4 header whose lengths lie: the IHL nibble anywhere
            at = raw.find(b"\x45\x00")
            if at >= 0:
                raw[at] = 0x40 | rng.randrange(16)
    return bytes(raw)


@contextlib.contextmanager
def _quiet() -> Any:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def check_yaml(path: Path) -> int:
    """``natsim check FILE`` and ``natsim matrix FILE --list``: their exit statuses as two
    digits (check's, matrix's); an exception escapes."""
    with _quiet():
        first = cli.main(["check", str(path)])
        second = cli.main(["matrix", str(path), "--list"])
    return first * 10 + second


def check_capture(path: Path) -> int:
    with _quiet():
        return cli.main(["replay", str(path), "--appliance", "nat-gw", "--json"])


def run(kind: str, count: int, seed: int, folder: Path,
        progress: Callable[[str], None] | None = None) -> tuple[Counter[str], list[str]]:
    """``count`` inputs of ``kind`` ("yaml" or "capture"): exit statuses by value, and a
    description of each escape."""
    rng = random.Random(seed)
    yamls, captures = yaml_seeds(), capture_seeds()
    path = folder / ("input.yaml" if kind == "yaml" else "input.pcap")
    statuses: Counter[str] = Counter()
    escapes: list[str] = []
    started = time.monotonic()
    for i in range(count):
        data = mutate_yaml(rng, rng.choice(yamls)) if kind == "yaml" else \
            mutate_capture(rng, rng.choice(captures))
        path.write_bytes(data)
        try:
            code = check_yaml(path) if kind == "yaml" else check_capture(path)
        except BaseException as exc:  # everything that escapes is what we look for
            if isinstance(exc, KeyboardInterrupt):
                raise
            escapes.append(f"input {i}: {type(exc).__name__}: {exc}\n"
                           f"{traceback.format_exc(limit=-3)}first bytes: {data[:200]!r}")
            statuses["escape"] += 1
            continue
        statuses[str(code) if kind != "yaml" else f"check {code // 10}/matrix {code % 10}"] += 1
        if any(c not in (0, 1, 2) for c in ((code // 10, code % 10) if kind == "yaml"
                                             else (code,))):
            escapes.append(f"input {i}: exit status {code}; first bytes: {data[:200]!r}")
        if progress is not None and (i + 1) % 1000 == 0:
            rate = (i + 1) / (time.monotonic() - started)
            progress(f"  {kind}: {i + 1:,} of {count:,} ({rate:,.0f}/s)")
    return statuses, escapes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000,
                        help="inputs of each kind (default 20,000)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    failed = False
    with tempfile.TemporaryDirectory(prefix="natsim-fuzz-inputs-") as tmp:
        for kind in ("yaml", "capture"):
            started = time.monotonic()
            statuses, escapes = run(kind, args.count, args.seed, Path(tmp),
                                    lambda line: print(line, file=sys.stderr, flush=True))
            took = time.monotonic() - started
            print(f"{kind}: {args.count:,} inputs in {took:.1f} s; exit statuses "
                  + ", ".join(f"{k}: {v:,}" for k, v in sorted(statuses.items()))
                  + f"; {len(escapes)} escapes")
            for line in escapes[:5]:
                print("  " + line.replace("\n", "\n  "))
            failed |= bool(escapes)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
