"""``natsim proxy``: a real HAProxy where the middlebox stands, and a watcher on its links.

The L4-proxy contrast (``scenarios/l4-proxy-keepalive.yaml``) answers a question users ask of
proxy-based fault injectors (Toxiproxy and the like): would an idle timeout in a proxy show
what a NAT Gateway does? It does not, and this shows why with the real thing: HAProxy from
Debian in TCP mode, ``timeout client`` and ``timeout server`` at the appliance's idle timeout
(compressed), in the middlebox's namespace. The client connects to the proxy's address; the
proxy opens its own connection to the server.

HAProxy decides in its own process; natsim cannot see inside it. So this program also
watches the proxy's two links (packet sockets, which see what the kernel sends and
receives) and reports what crossed each with :class:`~simulator.core.observer.Observer`:
the client's keepalive probes reach the proxy's kernel, which answers them, and nothing
crosses on the server side, so the proxy's timeout fires whatever the client's keepalive.

It speaks the dataplane's protocol to the runner (a ready line with its origin, heartbeats,
events with model time, a stopped line with counters) and dies with HAProxy: a proxy that
exits makes the run an ERROR, as a dead middlebox does.
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

from simulator.core.configs import ConfigError, ProxyConfig, decode
from simulator.core.jsonvalue import JsonObject
from simulator.core.messages import Kind, Message, MiddleboxReady, MiddleboxStopped, Role
from simulator.core.observer import Observer
from simulator.dataplane.frames import PcapWriter
from simulator.support.results import write_private

ETH_P_ALL, ETH_P_IP = 0x0003, 0x0800
LINKS = {"inside": "client side", "outside": "server side"}


def haproxy_config(front: str, back: str, port: int, timeout_ms: int) -> str:
    """TCP mode, one listener, both idle timeouts at the appliance's (in wall ms)."""
    return "\n".join([
        "global", "    maxconn 64", "",
        "defaults", "    mode tcp", "    timeout connect 5s",
        f"    timeout client {timeout_ms}ms", f"    timeout server {timeout_ms}ms", "",
        "listen natsim", f"    bind {front}:{port}", f"    server target {back}:{port}", ""])


def listening(ip: str, port: int) -> bool:
    """Whether a socket of this namespace listens on ``ip:port`` (``/proc/net/tcp``)."""
    want = f"{socket.inet_aton(ip)[::-1].hex().upper()}:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == want and fields[3] == "0A":
            return True
    return False


def _emit(out: TextIO, record: JsonObject) -> None:
    out.write(json.dumps(record) + "\n")
    out.flush()


def run(cfg: ProxyConfig, out: TextIO = sys.stdout) -> int:  # noqa: C901
    # long: start, wait, watch and stop in one place: the order is the point
    speed = cfg.speed
    conf = Path(cfg.haproxy_cfg)
    write_private(conf, haproxy_config(cfg.front, cfg.back, cfg.port,
                                       max(1, round(1000 * cfg.timeout / speed))))
    haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(conf)], stdin=subprocess.DEVNULL,
                               stdout=sys.stderr, stderr=sys.stderr)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    socks = {}
    for ifname, link in LINKS.items():
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.bind((ifname, 0))
        socks[sock] = link
    deadline = time.monotonic() + 10.0
    while not listening(cfg.front, cfg.port):
        if haproxy.poll() is not None or time.monotonic() > deadline:
            print(f"haproxy did not start (exit status {haproxy.poll()})", file=sys.stderr)
            haproxy.kill()
            return 1
        time.sleep(0.02)
    observer = Observer({cfg.front: "proxy", cfg.back_self: "proxy",
                         cfg.client: "client", cfg.back: "server"})
    pcap = PcapWriter(Path(cfg.pcap)) if cfg.pcap else None
    origin = time.monotonic()
    _emit(out, Message.carrying(Role.MIDDLEBOX, Kind.READY, MiddleboxReady(origin),
                                "HAProxy listening").to_dict())
    beat = 0.0
    try:
        while not stopping:
            if haproxy.poll() is not None:
                print(f"haproxy exited with status {haproxy.returncode}", file=sys.stderr)
                return 1
            if time.monotonic() - beat >= 0.5:
                beat = time.monotonic()
                _emit(out, {"source": "middlebox", "kind": str(Kind.HEARTBEAT)})
            try:
                ready, _, _ = select.select(list(socks), [], [], 0.1)
            except InterruptedError:
                continue
            for sock in ready:
                frame = sock.recv(65535)
                now = (time.monotonic() - origin) * speed
                if len(frame) < 14 or int.from_bytes(frame[12:14], "big") != ETH_P_IP:
                    continue
                if pcap is not None:
                    pcap.write(now, frame)
                for event in observer.see(socks[sock], frame[14:], now):
                    _emit(out, event.to_dict())
    finally:
        if haproxy.poll() is None:
            haproxy.terminate()
            haproxy.wait(5)
        if pcap is not None:
            pcap.close()
    _emit(out, Message.carrying(Role.MIDDLEBOX, Kind.STOPPED, MiddleboxStopped(
        dict(observer.counters)), "stopped").to_dict())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="natsim proxy", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="JSON object with the settings")
    args = parser.parse_args(argv)
    try:
        cfg = decode(ProxyConfig, args.config)
    except ConfigError as exc:
        parser.error(f"--config: {exc}")
    return run(cfg)


if __name__ == "__main__":
    raise SystemExit(main())
