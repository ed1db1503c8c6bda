"""Real clients through a NAT Gateway world: each with its default and with the documented
fix, and three answers that must agree -- the real client's outcome, what the emulation did
(did the middlebox expire the flow?) and the analytic model's prediction for the client's
profile (``natsim check``).

The server thinks for 420 model seconds (the NAT Gateway forgets after 350). Everything runs
compressed at speed 100, and every client runs on the world's clock
(``simulator/world/modeltime.py``):
each is given its settings in model seconds, as in production, and its own defaults are left
alone (curl's 60 s keepalive, Node's agent's 1 s, a 300 s ``TCP_KEEPIDLE`` set by Java): the
timer shim scales what they set on their sockets, libfaketime their timeouts. Nobody tells a
client the speed. Defaults that come from the operating system are the real defaults: the
world's ``tcp_keepalive_time`` is Linux's 7200 s, or the documented fix, 300 s.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from simulator.cli.pytest_plugin import NatsimWorld
from simulator.core.advice import check
from simulator.core.appliances import get_appliance
from simulator.core.profiles import get_profile
from tests.integration.conftest import compile_java

SPEED = 100
IDLE = 420.0
"""Model seconds the server thinks."""
CLIENT_TIMEOUT = 900.0
"""Model seconds each client waits, given to it as such."""
FIX_KEEPALIVE_TIME = 300
WALL_LIMIT = CLIENT_TIMEOUT / SPEED + 30
"""Wall seconds the test waits for a client at most (its own timeout ends it well before)."""


def needs(*tools: str) -> pytest.MarkDecorator:
    missing = [t for t in tools if shutil.which(t) is None]
    return pytest.mark.skipif(bool(missing), reason=f"{', '.join(missing)} not installed "
                              "(.ci/run installs them)")


def slow_server(world: NatsimWorld, port: int = 8080) -> None:
    world.start("server", [sys.executable, "-m", "simulator.workloads.slow_http",
                           "--port", str(port), "--delay", str(IDLE)])
    world.wait_for_port("server", port)


def agree(world: NatsimWorld, profile: str, real_survived: bool, keepalive_time: float = 7200,
          **profile_changes: object) -> None:
    """The real client, the emulation and the model say the same thing."""
    expired = "flow_expired" in world.kinds()
    prof = replace(get_profile(profile), **profile_changes)  # type: ignore[arg-type]
    advice = check(get_appliance("nat-gw"), prof, IDLE, CLIENT_TIMEOUT,
                   sysctl_time=keepalive_time)
    assert (real_survived, not expired, advice.survives) in (
        (True, True, True), (False, False, False)), (
        f"{profile}: real client survived={real_survived}, emulation kept the flow="
        f"{not expired}, model predicts survives={advice.survives} "
        f"({'; '.join(advice.prediction.story)}); middlebox: {world.kinds()}")


# -- curl ---------------------------------------------------------------------------------


@needs("curl")
@pytest.mark.natsim(appliance="nat-gw", speed=SPEED)
@pytest.mark.parametrize("profile,args", [
    ("curl-default", []),  # curl's own 60 s keepalive, left alone
    ("curl-no-keepalive", ["--no-keepalive"]),
])
def test_curl(natsim_world: NatsimWorld, profile: str, args: list[str]) -> None:
    slow_server(natsim_world)
    done = natsim_world.run("client", ["curl", "-sS", "-m", f"{CLIENT_TIMEOUT:g}", *args,
                                       "http://server:8080/"], timeout=WALL_LIMIT)
    agree(natsim_world, profile, done.returncode == 0 and "slow answer" in done.stdout)


# -- Node.js --------------------------------------------------------------------------------

NODE_AGENT = """
const http = require('http');
// the agent the profile names (Node >= 19 makes the global agent one like it)
const agent = new http.Agent({keepAlive: true});
const req = http.get('http://server:8080/', {agent, timeout: %d}, (res) => {
  let body = ''; res.on('data', (c) => body += c);
  res.on('end', () => { console.log('answer', body.trim()); process.exit(0); });
});
req.on('timeout', () => { console.log('timeout'); process.exit(1); });
req.on('error', (e) => { console.log('error', e.code); process.exit(1); });
"""
NODE_SOCKET = """
const net = require('net');
const s = net.connect(8080, 'server', () => s.write('GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n'));
s.setTimeout(%d); let body = '';
s.on('data', (c) => body += c);
s.on('end', () => { console.log('answer', body.length); process.exit(body ? 0 : 1); });
s.on('timeout', () => { console.log('timeout'); process.exit(1); });
s.on('error', (e) => { console.log('error', e.code); process.exit(1); });
"""


@needs("node")
@pytest.mark.natsim(appliance="nat-gw", speed=SPEED)
@pytest.mark.parametrize("profile,script", [
    ("node-http-agent", NODE_AGENT),
    ("node-net-socket", NODE_SOCKET),
])
def test_node(natsim_world: NatsimWorld, profile: str, script: str) -> None:
    slow_server(natsim_world)
    done = natsim_world.run("client", ["node", "-e", script % (CLIENT_TIMEOUT * 1000)],
                            timeout=WALL_LIMIT)
    agree(natsim_world, profile, done.returncode == 0)


# -- Python's socket with SO_KEEPALIVE (the OS timing): the default and the sysctl fix -----

SO_KEEPALIVE_CLIENT = """
import socket, sys
s = socket.create_connection(("server", 8080), timeout=%f)
s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
s.sendall(b"GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
try:
    data = s.recv(4096)
except OSError as exc:
    print("failed", exc); sys.exit(1)
print("answer" if data else "closed"); sys.exit(0 if data else 1)
"""


@pytest.mark.natsim(appliance="nat-gw", speed=SPEED)
def test_so_keepalive_with_linux_defaults_fails(natsim_world: NatsimWorld) -> None:
    slow_server(natsim_world)
    done = natsim_world.run("client", [sys.executable, "-c",
                                       SO_KEEPALIVE_CLIENT % CLIENT_TIMEOUT], timeout=WALL_LIMIT)
    agree(natsim_world, "linux-so-keepalive", done.returncode == 0)


@pytest.mark.natsim(appliance="nat-gw", speed=SPEED,
                    sysctls={"tcp_keepalive_time": FIX_KEEPALIVE_TIME})
def test_so_keepalive_with_the_sysctl_fix_survives(natsim_world: NatsimWorld) -> None:
    slow_server(natsim_world)
    done = natsim_world.run("client", [sys.executable, "-c",
                                       SO_KEEPALIVE_CLIENT % CLIENT_TIMEOUT], timeout=WALL_LIMIT)
    agree(natsim_world, "linux-so-keepalive", done.returncode == 0,
          keepalive_time=FIX_KEEPALIVE_TIME)


# -- botocore ------------------------------------------------------------------------------

BOTOCORE_CLIENT = """
import sys
import botocore.session
from botocore.config import Config
session = botocore.session.get_session()
client = session.create_client(
    "lambda", region_name="us-east-1", endpoint_url="http://server:8080",
    aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
    config=Config(read_timeout=%f, connect_timeout=5, retries={"max_attempts": 0},
                  tcp_keepalive=%s))
try:
    client.invoke(FunctionName="slow")
except Exception as exc:
    print("failed", type(exc).__name__, exc); sys.exit(1)
print("answer"); sys.exit(0)
"""


def _botocore(world: NatsimWorld, keepalive: bool) -> bool:
    slow_server(world)
    done = world.run("client", [sys.executable, "-c",
                                BOTOCORE_CLIENT % (CLIENT_TIMEOUT, keepalive)],
                     timeout=WALL_LIMIT)
    assert "ModuleNotFoundError" not in done.stdout + done.stderr, done.stderr
    return done.returncode == 0


@pytest.mark.natsim(appliance="nat-gw", speed=SPEED)
def test_botocore_default(natsim_world: NatsimWorld) -> None:
    agree(natsim_world, "boto3-default", _botocore(natsim_world, False))


@pytest.mark.natsim(appliance="nat-gw", speed=SPEED,
                    sysctls={"tcp_keepalive_time": FIX_KEEPALIVE_TIME})
def test_botocore_tcp_keepalive_and_the_sysctl_fix(natsim_world: NatsimWorld) -> None:
    agree(natsim_world, "boto3-tcp-keepalive", _botocore(natsim_world, True),
          keepalive_time=FIX_KEEPALIVE_TIME)


# -- the JDK -------------------------------------------------------------------------------

JAVA_CLIENT = """
import java.net.*;
import java.net.http.*;
import java.io.*;
import java.time.Duration;
import jdk.net.ExtendedSocketOptions;

public class Client {
    public static void main(String[] args) throws Exception {
        int timeoutMs = Integer.parseInt(args[1]);
        try {
            if (args[0].equals("httpclient")) {  // the JDK's own HTTP client, its default
                HttpClient client = HttpClient.newHttpClient();
                HttpRequest req = HttpRequest.newBuilder(URI.create("http://server:8080/"))
                    .timeout(Duration.ofMillis(timeoutMs)).build();
                HttpResponse<String> res = client.send(req, HttpResponse.BodyHandlers.ofString());
                System.out.println("answer " + res.statusCode());
            } else {  // the documented fix: SO_KEEPALIVE and TCP_KEEPIDLE on the socket (JDK 11+)
                Socket s = new Socket();
                s.setOption(StandardSocketOptions.SO_KEEPALIVE, true);
                s.setOption(ExtendedSocketOptions.TCP_KEEPIDLE, Integer.parseInt(args[2]));
                s.setOption(ExtendedSocketOptions.TCP_KEEPINTERVAL, 1);
                s.setOption(ExtendedSocketOptions.TCP_KEEPCOUNT, 5);
                s.connect(new InetSocketAddress("server", 8080), 5000);
                s.setSoTimeout(timeoutMs);
                s.getOutputStream().write("GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n".getBytes());
                int n = s.getInputStream().read(new byte[4096]);
                System.out.println(n > 0 ? "answer" : "closed");
                if (n <= 0) System.exit(1);
            }
        } catch (Exception e) {
            System.out.println("failed " + e);
            System.exit(1);
        }
    }
}
"""


@pytest.fixture(scope="module")
def java_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_java(tmp_path_factory, "Client", JAVA_CLIENT)


@pytest.mark.natsim(appliance="nat-gw", speed=SPEED)
@pytest.mark.parametrize("mode,profile", [
    ("httpclient", "java-httpclient-default"),
    ("socket-keepidle", "java-socket-keepidle-300"),
])
def test_jdk(natsim_world: NatsimWorld, java_client: Path, mode: str, profile: str) -> None:
    slow_server(natsim_world)
    done = natsim_world.run("client", ["java", "-cp", str(java_client), "Client", mode,
                                       str(int(CLIENT_TIMEOUT * 1000)),
                                       str(FIX_KEEPALIVE_TIME)], timeout=WALL_LIMIT)
    agree(natsim_world, profile, done.returncode == 0)


# -- PostgreSQL: psql (libpq) against a real server, pg_sleep as the slow answer -------------

def _psql(world: NatsimWorld) -> bool:
    """psql has no timeout of its own: one that hangs past the client's 900 model s (9 wall
    s) is one that did not get its answer."""
    sleep = world.wall(IDLE)  # the server's pg_sleep runs on the wall clock (see above)
    try:
        done = world.run("client", ["psql", "-h", "server", "-U", "postgres", "-At", "-c",
                                    f"select 'answer', pg_sleep({sleep})"],
                         timeout=CLIENT_TIMEOUT / SPEED)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0 and "answer" in done.stdout


@pytest.mark.natsim(appliance="nat-gw", speed=SPEED)
def test_psql_libpq_default(natsim_world: NatsimWorld, postgres: None) -> None:
    agree(natsim_world, "libpq-default", _psql(natsim_world))


@pytest.mark.natsim(appliance="nat-gw", speed=SPEED,
                    sysctls={"tcp_keepalive_time": FIX_KEEPALIVE_TIME})
def test_psql_libpq_with_the_sysctl_fix(natsim_world: NatsimWorld, postgres: None) -> None:
    agree(natsim_world, "libpq-default", _psql(natsim_world),
          keepalive_time=FIX_KEEPALIVE_TIME)


def test_every_runnable_profile_has_a_real_client_test() -> None:
    """``natsim list`` says which profiles run for real; each of those is tested above."""
    from simulator.core.profiles import PROFILES  # noqa: PLC0415

    tested = {"curl-default", "curl-no-keepalive", "node-http-agent", "node-net-socket",
              "linux-so-keepalive", "boto3-default", "boto3-tcp-keepalive", "libpq-default",
              "java-httpclient-default", "java-socket-keepidle-300",
              "redis-py-default",  # in test_model_time_clients.py
              "requests-urllib3"}  # in test_pool_clients.py
    runnable = {p.name for p in PROFILES.values() if p.real_client}
    assert runnable == tested, json.dumps(sorted(runnable ^ tested))
