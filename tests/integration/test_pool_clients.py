"""Real pool clients, unchanged and on the world's clock, reusing a connection after it
idled 400 model seconds behind a NAT Gateway (speed 35): each verdict checked against what
``natsim check --client-profile X --appliance nat-gw --reuse-after 400`` predicts for the
profile that describes the client's library, and against what the middlebox did.

* requests 2.x / urllib3 2.x: a ``Session``'s pooled connection (no keepalive, no retry of
  the reset: 'Connection aborted');
* psql (libpq) on one connection, as a pool holds it: libpq turns keepalive on with the
  operating system's timing (7200 s), too late; with ``keepalives_idle=300`` in the
  connection string the connection survives;
* the JDK's ``java.net.http.HttpClient``: its pool keeps an idle HTTP/1.1 connection for
  ``jdk.httpclient.keepalive.timeout`` (1200 s on the JDK 17 this suite installs) and sets
  no keepalive.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from simulator.cli.pytest_plugin import NatsimWorld
from simulator.core.advice import check_reuse
from simulator.core.appliances import get_appliance
from simulator.core.profiles import get_profile
from tests.integration.conftest import compile_java

SPEED = 35
REUSE_AFTER = 400.0
"""Model seconds the pooled connection idles: past the NAT Gateway's 350."""
WALL_LIMIT = 900 / SPEED + 20


def _outcome(world: NatsimWorld, argv: list[str]) -> str:
    """What the client printed; a client still waiting at WALL_LIMIT says so."""
    try:
        done = world.run("client", argv, timeout=WALL_LIMIT)
    except subprocess.TimeoutExpired:
        return "still waiting"
    return done.stdout + done.stderr


def _predicted(profile: str, **changes: object) -> str:
    """The model's outcome for the reused request: 'answer', 'reset', ..."""
    prof = replace(get_profile(profile), **changes)  # type: ignore[arg-type]
    advice = check_reuse(get_appliance("nat-gw"), prof, REUSE_AFTER)
    return advice.prediction.requests[-1].text


def _http_server(world: NatsimWorld) -> None:
    world.start("server", [sys.executable, "-m", "simulator.workloads.slow_http",
                           "--port", "8080", "--delay", "0.5"])
    world.wait_for_port("server", 8080)


# -- requests: a Session's pooled connection -------------------------------------------------

SESSION = """
import time, requests, urllib3
print("versions", requests.__version__, urllib3.__version__, flush=True)
s = requests.Session()
print("first", s.get("http://server:8080/", timeout=(10, 60)).status_code, flush=True)
time.sleep(400)  # model seconds: the pooled connection idles past the NAT Gateway's 350 s
try:
    print("second", s.get("http://server:8080/", timeout=(10, 60)).status_code)
except requests.ConnectionError as exc:
    print("failed", exc)
"""


@pytest.mark.natsim(appliance="nat-gw", speed=SPEED)
def test_a_requests_session_reused_after_idling_gets_the_reset(
        natsim_world: NatsimWorld) -> None:
    """The requests-urllib3 profile, checked against the installed release: no keepalive,
    no retry of the reset (max_retries=0), so the reused connection's request fails at once
    with 'Connection aborted'."""
    _http_server(natsim_world)
    said = _outcome(natsim_world, [sys.executable, "-c", SESSION])
    assert "first 200" in said and "failed" in said and "Connection aborted" in said, said
    assert "rst_sent" in natsim_world.kinds()
    assert _predicted("requests-urllib3") == "reset"


# -- psql (libpq): one connection, a query, 400 s idle, a query ------------------------------

PSQL = """
python3 -c '
import time
print("select 1 as first;", flush=True)
time.sleep(400)  # model seconds
print("select 2 as second;", flush=True)
' | psql "$1" -At -v ON_ERROR_STOP=1
"""


def _psql(world: NatsimWorld, conninfo: str) -> tuple[int, str]:
    try:
        done = world.run("client", ["sh", "-c", PSQL, "psql", conninfo], timeout=WALL_LIMIT)
    except subprocess.TimeoutExpired:
        return -1, "still waiting"
    return done.returncode, done.stdout + done.stderr


@pytest.mark.natsim(appliance="nat-gw", speed=SPEED)
def test_psql_reusing_its_connection_after_idling_gets_the_reset(
        natsim_world: NatsimWorld, postgres: None) -> None:
    """libpq's keepalive follows the OS (7200 s): the second query meets the NAT Gateway's
    RST, and psql reports the lost connection, as the libpq-default profile predicts."""
    code, said = _psql(natsim_world, "host=server user=postgres")
    assert code != 0 and said.startswith("1\n"), said
    assert "server closed the connection unexpectedly" in said, said
    assert "rst_sent" in natsim_world.kinds()
    assert _predicted("libpq-default") == "reset"


@pytest.mark.natsim(appliance="nat-gw", speed=SPEED)
def test_psql_with_keepalives_idle_300_keeps_its_connection(
        natsim_world: NatsimWorld, postgres: None) -> None:
    """``keepalives_idle=300`` (model seconds, scaled by the timer shim): probes every 300
    s keep the flow, and the second query is answered on the same connection."""
    code, said = _psql(natsim_world, "host=server user=postgres keepalives_idle=300")
    assert code == 0 and said.split() == ["1", "2"], said
    assert "flow_expired" not in natsim_world.kinds()
    assert any(s["option"] == "TCP_KEEPIDLE" and s["model"] == 300
               for s in natsim_world.scaled())
    assert _predicted("libpq-default", keepalive="socket", idle=300, interval=75,
                      count=9) == "answer"


# -- the JDK's HttpClient: its pool, two GETs 400 s apart ------------------------------------

JAVA_POOL = """
import java.net.URI;
import java.net.http.*;
import java.time.Duration;

public class PoolClient {
    public static void main(String[] args) throws Exception {
        System.out.println("java " + System.getProperty("java.version"));
        HttpClient client = HttpClient.newHttpClient();
        HttpRequest req = HttpRequest.newBuilder(URI.create("http://server:8080/"))
            .timeout(Duration.ofSeconds(60)).build();
        System.out.println("first " + client.send(req, HttpResponse.BodyHandlers.ofString())
            .statusCode());
        Thread.sleep(400_000);  // model seconds: the pooled connection idles past 350 s
        try {
            System.out.println("second " + client.send(req,
                HttpResponse.BodyHandlers.ofString()).statusCode());
        } catch (Exception e) {
            System.out.println("failed " + e);
            System.exit(1);
        }
    }
}
"""


@pytest.fixture(scope="module")
def java_pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_java(tmp_path_factory, "PoolClient", JAVA_POOL)


@pytest.mark.natsim(appliance="nat-gw", speed=SPEED)
def test_the_jdk_httpclient_resends_a_get_after_the_reset(
        natsim_world: NatsimWorld, java_pool: Path) -> None:
    """The pooled connection (kept up to 1200 s) meets the NAT Gateway's RST; the client
    resends the GET once on a new connection, and the application sees an answer, as the
    java-httpclient-default profile (retry 1) predicts."""
    _http_server(natsim_world)
    said = _outcome(natsim_world, ["java", "-cp", str(java_pool), "PoolClient"])
    assert "first 200" in said and "second 200" in said, said
    kinds = natsim_world.kinds()
    # the reset, then a second connection for the resent request
    assert "rst_sent" in kinds and kinds.count("flow_established") == 2, kinds
    assert _predicted("java-httpclient-default") == "reset+answer"


# -- a silent appliance: the kernel's retransmissions, compressed in a live world ----------

HANG = """
import time, requests
s = requests.Session()
print("first", s.get("http://server:8080/", timeout=(10, 3000)).status_code, flush=True)
time.sleep(400)  # model seconds
sent = time.monotonic()
try:
    print("second", s.get("http://server:8080/", timeout=(10, 3000)).status_code)
except requests.RequestException as exc:
    chain, cause = [], exc
    while cause is not None:  # down to the socket's own error
        chain.append(repr(cause))
        cause = cause.__context__
    print("failed after", round(time.monotonic() - sent), " <- ".join(chain))
"""


@pytest.mark.natsim(appliance="gwlb", speed=100)
def test_a_requests_session_hangs_behind_a_silent_appliance_until_the_kernel_gives_up(
        natsim_world: NatsimWorld) -> None:
    """The GWLB drops the reused connection's request silently; the client's kernel
    retransmits it (its timer compressed in the live world: tcp_rto_min_us, tcp_rto_max_ms,
    tcp_retries2) and gives up about 925 model seconds later, as the requests-urllib3
    profile predicts. urllib3 2.x reports the kernel's ETIMEDOUT as a *read* timeout
    ('Read timed out. (read timeout=3000)', after 925 s, not 3000): the message misleads."""
    assert natsim_world.live.uncompressed_retransmissions == "", \
        natsim_world.live.uncompressed_retransmissions
    _http_server(natsim_world)
    try:
        done = natsim_world.run("client", [sys.executable, "-c", HANG], timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("still waiting after 60 wall s (6000 model s): the retransmission "
                    "timer was not compressed")
    said = done.stdout + done.stderr
    assert "first 200" in said and "failed after" in said and "ReadTimeout" in said, said
    assert "TimeoutError(110" in said, said  # ETIMEDOUT: the kernel gave up, not a timer
    took = int(said.split("failed after", 1)[1].split()[0])
    advice = check_reuse(get_appliance("gwlb"), get_profile("requests-urllib3"), REUSE_AFTER,
                         client_timeout=3000)
    reused = advice.prediction.requests[-1]
    assert reused.text == "retransmit_timeout", reused.text
    # the kernel's give-up lands within one capped step of the model's (the tolerance the
    # scripted scenarios use)
    assert abs(took - reused.took) <= 130, (took, reused.took)
