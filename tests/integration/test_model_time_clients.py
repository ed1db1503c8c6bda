"""Real clients at their own defaults, unchanged and never told the speed, through a NAT
Gateway world at speed 35, against servers that answer after 400 model seconds: the
verdicts are production's. Every program runs on the world's clock
(``simulator/world/modeltime.py``).

* redis-py (the installed PyPI release, 8.2) blocked in ``BLPOP`` while another client
  pushes the item 400 s later: with its defaults (its own 5 s socket timeout ends the BLPOP
  first), with ``socket_timeout=None`` (its default keepalive keeps the flow), and with
  ``socket_keepalive=False, socket_timeout=None`` (the item is lost).
* Node's default global agent (keep-alive since Node 19, probes every second) and
  ``new http.Agent()`` (no keepalive).
* grpcio with ``grpc.keepalive_time_ms`` 60,000 (model milliseconds) and
  ``grpc.http2.max_pings_without_data`` 0, and with client keepalive off.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys

import pytest

from simulator.cli.pytest_plugin import NatsimWorld

SPEED = 35
IDLE = 400.0
WALL_LIMIT = 600 / SPEED + 3
"""Wall seconds a client may take at most: 600 model s, well past its answer (400 model s
= 11.4 wall s), which the NAT Gateway reset at 400 s; one still waiting then never gets it."""


def needs(*tools: str) -> pytest.MarkDecorator:
    missing = [t for t in tools if shutil.which(t) is None]
    return pytest.mark.skipif(bool(missing), reason=f"{', '.join(missing)} not installed "
                              "(.ci/run installs them)")


def _require(module: str) -> None:
    """The dev extra installs it: missing is a failure, never a silent skip."""
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{module} is not installed: make setup (pip install -e '.[dev]')")


def _outcome(world: NatsimWorld, argv: list[str]) -> tuple[bool, str]:
    """(the client finished well, what it printed); a client still waiting at WALL_LIMIT
    did not get its answer."""
    try:
        done = world.run("client", argv, timeout=WALL_LIMIT)
    except subprocess.TimeoutExpired:
        return False, "still waiting"
    return done.returncode == 0, done.stdout + done.stderr


# -- redis-py -------------------------------------------------------------------------------

PUSHER = """
import time, redis
time.sleep(400)  # model seconds: the world's clock
redis.Redis().lpush("jobs", "the-item")
"""
BLPOP = """
import sys, time, redis
r = redis.Redis(host="server", **eval(sys.argv[1]))
started = time.monotonic()
try:
    print("got", r.blpop(["jobs"], timeout=0))
except Exception as exc:
    print("failed", type(exc).__name__, round(time.monotonic() - started)); sys.exit(1)
"""


def _redis(world: NatsimWorld, options: str) -> tuple[bool, str, str]:
    """redis-py's BLPOP in the client, the item pushed after 400 model s: (got it, what the
    client said, how many items the list holds once the push is done)."""
    _require("redis")
    # redis-server and redis-cli use jemalloc, which cannot start beside Debian's
    # libfaketime (simulator/world/modeltime.py): they run on the wall clock; a BLPOP without a
    # timeout does not depend on the server's clock. The clients are judged.
    world.start("server", ["redis-server", "--port", "6379", "--bind", "0.0.0.0",
                           "--protected-mode", "no", "--save", "", "--appendonly", "no"],
                wall_time=True)
    world.wait_for_port("server", 6379)
    pusher = world.start("server", [sys.executable, "-c", PUSHER])
    survived, said = _outcome(world, [sys.executable, "-c", BLPOP, options])
    pusher.wait(timeout=WALL_LIMIT)
    left = world.run("server", ["redis-cli", "llen", "jobs"], wall_time=True).stdout.strip()
    return survived, said, left


@needs("redis-server", "redis-cli")
@pytest.mark.natsim(appliance="nat-gw", speed=SPEED)
def test_redis_py_defaults_end_a_blocking_blpop_themselves(natsim_world: NatsimWorld) -> None:
    """redis-py 8's own socket_timeout (5 s) ends BLPOP, retried for about a minute of
    model time, as in production: it never waits for the item, which is still there."""
    survived, said, left = _redis(natsim_world, "{}")
    assert not survived and "TimeoutError" in said, said
    waited = int(said.split()[-1])
    assert 30 <= waited <= 120, said  # model seconds: 5 s reads and backoff, not 175 s ones
    assert left == "1"


@needs("redis-server", "redis-cli")
@pytest.mark.natsim(appliance="nat-gw", speed=SPEED)
def test_redis_py_keepalive_default_keeps_a_long_blpop(natsim_world: NatsimWorld) -> None:
    """socket_timeout=None for a long BLPOP, the rest left alone: redis-py 8's keepalive
    (30 s idle, scaled to one wall second, 35 model s) keeps the flow; the item arrives."""
    survived, said, left = _redis(natsim_world, "{'socket_timeout': None}")
    assert survived and "the-item" in said, said
    assert left == "0" and "flow_expired" not in natsim_world.kinds()
    assert any(s["option"] == "TCP_KEEPIDLE" and s["model"] == 30 and s["wall"] == 1
               for s in natsim_world.scaled())


@needs("redis-server", "redis-cli")
@pytest.mark.natsim(appliance="nat-gw", speed=SPEED)
def test_redis_py_without_keepalive_loses_the_item(natsim_world: NatsimWorld) -> None:
    survived, said, left = _redis(natsim_world,
                                  "{'socket_keepalive': False, 'socket_timeout': None}")
    assert not survived, said
    # the server popped it for a connection the NAT Gateway had forgotten: gone
    assert left == "0"
    assert "flow_expired" in natsim_world.kinds()


# -- Node.js --------------------------------------------------------------------------------

NODE = """
const http = require('http');
const options = process.argv[1] === 'new-agent' ? {agent: new http.Agent()} : {};
http.get('http://server:8080/', options, (res) => {
  let body = ''; res.on('data', (c) => body += c);
  res.on('end', () => { console.log('answer', body.trim()); process.exit(0); });
}).on('error', (e) => { console.log('error', e.code); process.exit(1); });
"""


def _slow_server(world: NatsimWorld) -> None:
    world.start("server", [sys.executable, "-m", "simulator.workloads.slow_http",
                           "--port", "8080", "--delay", f"{IDLE:g}"])
    world.wait_for_port("server", 8080)


@needs("node")
@pytest.mark.natsim(appliance="nat-gw", speed=SPEED)
@pytest.mark.parametrize("agent,survives", [("global", True), ("new-agent", False)])
def test_node_agents(natsim_world: NatsimWorld, agent: str, survives: bool) -> None:
    _slow_server(natsim_world)
    survived, said = _outcome(natsim_world, ["node", "-e", NODE, agent])
    assert survived is survives, said
    assert ("flow_expired" in natsim_world.kinds()) is not survives


# -- grpcio ---------------------------------------------------------------------------------

GRPC_SERVER = """
import time
from concurrent import futures
import grpc

def slow(request, context):
    time.sleep(400)  # model seconds
    return b"the answer"

server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=[
    # a server that accepts its clients' keepalive pings (gRPC's default refuses pings
    # more often than every 5 minutes)
    ("grpc.http2.min_ping_interval_without_data_ms", 10000),
    ("grpc.http2.max_ping_strikes", 0),
])
handler = grpc.method_handlers_generic_handler("natsim.Slow", {
    "Call": grpc.unary_unary_rpc_method_handler(slow)})
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port("0.0.0.0:50051")
server.start()
server.wait_for_termination()
"""
GRPC_CLIENT = """
import sys
import grpc
options = [("grpc.keepalive_time_ms", 60000), ("grpc.http2.max_pings_without_data", 0)] \\
    if sys.argv[1] == "keepalive" else []
with grpc.insecure_channel("server:50051", options=options) as channel:
    call = channel.unary_unary("/natsim.Slow/Call")
    try:
        print("answer", call(b"question"))
    except grpc.RpcError as exc:
        print("failed", exc.code()); sys.exit(1)
"""


@pytest.mark.natsim(appliance="nat-gw", speed=SPEED)
@pytest.mark.parametrize("mode,survives", [("keepalive", True), ("off", False)])
def test_grpcio_keepalive(natsim_world: NatsimWorld, mode: str, survives: bool) -> None:
    _require("grpc")
    natsim_world.start("server", [sys.executable, "-c", GRPC_SERVER])
    natsim_world.wait_for_port("server", 50051)
    survived, said = _outcome(natsim_world, [sys.executable, "-c", GRPC_CLIENT, mode])
    assert survived is survives, said
    assert ("flow_expired" in natsim_world.kinds()) is not survives
