"""A large synthetic capture for ``natsim replay``'s speed (``make bench-replay``).

``python -m bench.replay_capture OUT.pcap --megabytes 1024`` writes an Ethernet pcap of many
TCP connections (handshake, request, answer, ACKs, keepalive probes, some idle past 350 s)
with struct alone, then times ``natsim replay`` on it through the NAT Gateway's rules and
prints packets per second.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from pathlib import Path

from simulator.core.appliances import get_appliance
from simulator.core.packets import build_tcp, ip_from_str
from simulator.core.replay import Replay
from simulator.dataplane.capture import CaptureStats, read

ETH = bytes.fromhex("020000000002020000000001") + b"\x08\x00"
REC = struct.Struct("<IIII")


def write(path: Path, megabytes: int, flows: int = 20_000) -> int:
    """Write about ``megabytes`` MB; returns the number of packets."""
    server = ip_from_str("198.19.1.10")
    clients = [ip_from_str(f"198.18.{1 + i // 250}.{10 + i % 200}") for i in range(64)]
    budget = megabytes << 20
    # a connection: handshake, request, a 40-segment answer, its ACKs, a keepalive probe;
    # every tenth connection's probe comes after 400 s of silence
    written = packets = 0
    t = 1_700_000_000.0
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        n = 0
        while written < budget:
            i = n % flows
            client, port = clients[i % len(clients)], 1024 + (n // len(clients)) % 60_000
            seq, ack = 1000 + n, 5000 + n
            step = 0.0005
            # handshake, request, answer, ack, a keepalive probe, and for one flow in ten a
            # late answer after a 400 s silence
            segments = [(client, port, server, 8080, seq, 0, 0x02, b""),
                        (server, 8080, client, port, ack, seq + 1, 0x12, b""),
                        (client, port, server, 8080, seq + 1, ack + 1, 0x10, b""),
                        (client, port, server, 8080, seq + 1, ack + 1, 0x18, b"GET /\n")]
            # the answer: 40 segments of 200 bytes, each acknowledged
            for j in range(40):
                segments += [(server, 8080, client, port, ack + 1 + 200 * j, seq + 7, 0x18,
                              b"x" * 200),
                             (client, port, server, 8080, seq + 7, ack + 201 + 200 * j, 0x10,
                              b"")]
            segments.append((client, port, server, 8080, seq + 6, ack + 8001, 0x10, b""))
            for k, (src, sp, dst, dp, sq, ak, fl, pl) in enumerate(segments):
                frame = ETH + bytes(build_tcp(src, sp, dst, dp, sq, ak, fl, 64240,
                                              payload=pl))
                late = i % 10 == 0 and k == len(segments) - 1  # a probe after 400 s idle
                ts = t + k * step + (400.0 if late else 0.0)
                f.write(REC.pack(int(ts), int((ts % 1) * 1e6), len(frame), len(frame)))
                f.write(frame)
                written += 16 + len(frame)
                packets += 1
            t += 0.0001
            n += 1
    return packets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replay_capture",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--megabytes", type=int, default=1024)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    packets = write(args.out, args.megabytes)
    print(f"wrote {args.out}: {args.out.stat().st_size / 2**20:,.0f} MB, {packets:,} packets "
          f"in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    stats = CaptureStats()
    replay = Replay(get_appliance("nat-gw"))
    started = time.perf_counter()
    replay.feed_all(read(args.out, stats))
    seconds = time.perf_counter() - started
    print(f"replayed {stats.packets:,} packets in {seconds:.1f} s: "
          f"{stats.packets / seconds:,.0f} packets/s; {replay.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
