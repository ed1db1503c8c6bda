"""Model time against real time (``make verify-model-time``): the same real clients, unchanged,
through the same appliance, once compressed (speed 35, every program on the world's clock)
and once at speed 1 (model time is wall time, nothing compressed); the verdicts and the
timelines' key instants must agree within the documented rounding.

Each client runs in a world of its own (``natsim up``'s world, through the library), all of
one speed at once. What is compared, on each timeline (model seconds from the client's
connection):

* the verdict: did the client get the answer;
* the first keepalive probe the middlebox saw, if any: the compressed world's kernel takes
  whole wall seconds, so a probe due at ``idle`` model seconds comes at
  ``max(1, round(idle / speed)) * speed`` (Node's 1 s at 35 s, curl's 60 s at 70 s): the
  compressed run's probe must be where that rounding puts the real-time run's, within the
  tolerance below;
* the flow's expiry, if any (the last activity plus the idle timeout), and the answer's
  arrival, if any: within the tolerance.

The tolerance is 1.5 model seconds plus 60 wall milliseconds in model seconds (process start,
scheduling). ``--quick`` is the suite's slice (``tests/integration/test_model_time.py``): one
client, the NAT Gateway's timeout overridden to 12 s and an answer after 16 s, at speed 4
against speed 1, in about 20 s.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.core.appliances import get_appliance
from simulator.world.live import LiveWorld

PYTHON_KEEPALIVE = """
import socket, sys
s = socket.create_connection(("server", 8080), timeout=60)
s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)   # redis-py 8's defaults
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, int(sys.argv[1]))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
s.settimeout(float(sys.argv[2]))
s.sendall(b"GET / HTTP/1.0\\r\\nHost: server\\r\\n\\r\\n")
print("answer" if s.recv(4096) else "closed")
"""
NODE_GLOBAL_AGENT = """
const http = require('http');
http.get('http://server:8080/', (res) => {
  let body = ''; res.on('data', (c) => body += c);
  res.on('end', () => { console.log('answer'); process.exit(0); });
}).on('error', (e) => { console.log('error', e.code); process.exit(1); });
"""


@dataclass(frozen=True)
class Client:
    name: str
    argv: list[str]
    needs: str


@dataclass
class Timeline:
    survived: bool
    probe: float | None
    expiry: float | None
    answer: float | None
    raw: list[dict[str, Any]] = field(default_factory=list)


def clients(timeout: float, keepalive: int) -> list[Client]:
    return [
        Client("python socket, keepalive like redis-py 8",
               [sys.executable, "-c", PYTHON_KEEPALIVE, str(keepalive), f"{timeout:g}"],
               sys.executable),
        Client("node, the default global agent", ["node", "-e", NODE_GLOBAL_AGENT], "node"),
        Client("curl, its defaults", ["curl", "-sS", "-m", f"{timeout:g}",
                                      "http://server:8080/"], "curl"),
        # one that fails, for the expiry: silent for good, until its own -m
        Client("curl --no-keepalive", ["curl", "-sS", "--no-keepalive", "-m",
                                       f"{min(timeout, 500):g}", "http://server:8080/"],
               "curl"),
    ]


def one(client: Client, speed: float, idle_timeout: float, delay: float, limit: float,
        results: Path) -> Timeline:
    """One client in a world of its own at ``speed``; its timeline in model seconds."""
    appliance = get_appliance("nat-gw").with_overrides({"tcp_idle_timeout": idle_timeout})
    live = LiveWorld.up(f"v{secrets.token_hex(3)}", appliance, speed,
                        results_dir=results / f"{secrets.token_hex(3)}-{speed:g}")
    try:
        server = live.popen("server", [sys.executable, "-m", "simulator.workloads.slow_http",
                                       "--port", "8080", "--delay", f"{delay:g}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        try:
            done = live.run("client", client.argv, timeout=limit / speed + 30)
            survived = done.returncode == 0 and "answer" in done.stdout
        except subprocess.TimeoutExpired:
            survived = False
        finally:
            server.kill()
            server.wait()
        events = live.events()
    finally:
        live.down()
    return timeline(events, survived)


def timeline(events: list[dict[str, Any]], survived: bool) -> Timeline:
    """Key instants from the middlebox's events, from the client's connection on."""
    start = next((float(e["t"]) for e in events if e.get("kind") == "flow_created"), None)
    if start is None:
        return Timeline(survived, None, None, None, events)

    def first(kind: str, **match: Any) -> float | None:
        for e in events:
            if e.get("kind") == kind and all(e.get(k) == v for k, v in match.items()):
                return round(float(e["t"]) - start, 3)
        return None

    answer = None
    if survived:  # the server's data: the first data event from the outside after 1 s
        answer = next((round(float(e["t"]) - start, 3) for e in events
                       if e.get("kind") == "data" and float(e["t"]) - start > 1.0), None)
    return Timeline(survived, first("keepalive"), first("flow_expired"), answer, events)


def compare(fast: Timeline, slow: Timeline, speed: float) -> list[str]:
    """What disagrees (nothing: an empty list)."""
    tolerance = 1.5 + 0.06 * speed
    wrong = []
    if fast.survived != slow.survived:
        wrong.append(f"verdict: {fast.survived} at speed {speed:g}, {slow.survived} at 1")
    probe = None if slow.probe is None else max(1, round(slow.probe / speed)) * speed
    for what, a, b in (("first probe", fast.probe, probe), ("expiry", fast.expiry, slow.expiry),
                       ("answer", fast.answer, slow.answer)):
        if (a is None) != (b is None):
            wrong.append(f"{what}: {a} at speed {speed:g}, {b} at 1")
        elif a is not None and b is not None and abs(a - b) > tolerance:
            wrong.append(f"{what}: {a:g} s at speed {speed:g}, {b:g} s expected from speed "
                         f"1 (allowed {tolerance:g} s)")
    return wrong


def verify(speed: float, idle_timeout: float, delay: float, limit: float, keepalive: int,
           only: int | None = None, out: Any = sys.stdout) -> int:
    chosen = [c for c in clients(limit, keepalive)
              if shutil.which(c.needs) or Path(c.needs).exists()]
    if only is not None:
        chosen = chosen[:only]
    if not chosen:
        out.write("no client to run (node, curl?)\n")
        return 1
    with tempfile.TemporaryDirectory(prefix="natsim-verify-") as tmp:
        found: dict[tuple[str, float], Timeline] = {}

        def run(client: Client, s: float) -> None:
            found[(client.name, s)] = one(client, s, idle_timeout, delay, limit, Path(tmp))

        started = time.monotonic()
        for s in (speed, 1.0):  # the worlds of one speed at once: the slow ones take minutes
            threads = [threading.Thread(target=run, args=(c, s)) for c in chosen]
            for t in threads:
                t.start()
            out.write(f"  speed {s:g}: {len(chosen)} client(s), up to "
                      f"{limit / s + 30:.0f} wall s\n")
            out.flush()
            for t in threads:
                t.join()
        failed = 0
        for client in chosen:
            fast, slow = found[(client.name, speed)], found[(client.name, 1.0)]
            wrong = compare(fast, slow, speed)
            failed += bool(wrong)
            out.write(f"{client.name}: speed {speed:g} (model time) "
                      f"{json.dumps(_key(fast))} vs speed 1 {json.dumps(_key(slow))}: "
                      f"{'AGREE' if not wrong else 'DISAGREE: ' + '; '.join(wrong)}\n")
        out.write(f"{len(chosen) - failed} of {len(chosen)} agree "
                  f"({time.monotonic() - started:.0f} s)\n")
    return 1 if failed else 0


def _key(t: Timeline) -> dict[str, Any]:
    return {"survived": t.survived, "first_probe": t.probe, "expiry": t.expiry,
            "answer": t.answer}


def main(argv: list[str] | None = None, out: Any = sys.stdout) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="the suite's slice: one client, a 12 s timeout, speed 4")
    args = parser.parse_args(argv)
    if args.quick:
        return verify(4.0, 12.0, 16.0, 40.0, 5, only=1, out=out)
    return verify(35.0, 350.0, 400.0, 900.0, 30, out=out)


if __name__ == "__main__":
    sys.exit(main())
