"""Profiles against the libraries installed today: each client profile that describes a
library from PyPI is checked against the release ``pip`` installed, at its defaults.

The library connects to a server that accepts and never answers (every library then waits
on its socket), and a thread of the same process finds that socket in ``/proc/self/fd`` and
reads its options with ``getsockopt``: ``SO_KEEPALIVE``, ``TCP_KEEPIDLE``,
``TCP_KEEPINTVL``, ``TCP_KEEPCNT`` and ``TCP_USER_TIMEOUT``. The client's namespace has
unusual keepalive sysctls (4321/43/7), so a socket that keeps the operating system's timing
(a profile's ``os``) reads them back, and one that sets its own (``socket``) does not. The
programs run on the wall clock: natsim's timer shim would hand back the values they set,
which is what is read here, but the point is to read the kernel's.

Libraries change their defaults (redis-py 8 turned keepalive on): a profile that no longer
says what its library does fails here, naming the installed version.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
from collections.abc import Callable

import pytest

from simulator.cli.pytest_plugin import NatsimWorld
from simulator.core.profiles import ClientProfile, get_profile

SYSCTLS = {"tcp_keepalive_time": 4321, "tcp_keepalive_intvl": 43, "tcp_keepalive_probes": 7}
PORT = 8080

SILENT_SERVER = f"""
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {PORT})); s.listen(16)
held = []
while True:
    held.append(s.accept()[0])  # accepted, never answered
"""

PROBE = f"""
import json, os, socket, sys, threading, time

def connect():
    try:
        exec(sys.argv[1], {{}})
    except Exception:
        pass  # the silent server makes every library fail in the end: only its socket matters

threading.Thread(target=connect, daemon=True).start()
OPTIONS = {{"SO_KEEPALIVE": (socket.SOL_SOCKET, socket.SO_KEEPALIVE),
           "TCP_KEEPIDLE": (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
           "TCP_KEEPINTVL": (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
           "TCP_KEEPCNT": (socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
           "TCP_USER_TIMEOUT": (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)}}

def connected():
    for fd in os.listdir("/proc/self/fd"):
        try:
            s = socket.socket(fileno=os.dup(int(fd)))
        except OSError:
            continue  # not a socket
        try:
            if s.type == socket.SOCK_STREAM and s.getpeername()[1] == {PORT}:
                return s
        except OSError:
            pass
        s.close()
    return None

deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    s = connected()
    if s is not None:
        time.sleep(1.0)  # let the library finish setting its options after connect()
        print(json.dumps({{name: s.getsockopt(*where) for name, where in OPTIONS.items()}}),
              flush=True)
        os._exit(0)
    time.sleep(0.05)
print("no connection to port {PORT} within 20 s", flush=True)
os._exit(1)
"""

BOTO = """
import botocore.session
from botocore.config import Config
client = botocore.session.get_session().create_client(
    "s3", endpoint_url="http://server:8080", region_name="us-east-1",
    aws_access_key_id="x", aws_secret_access_key="y", config=Config({}))
client.list_buckets()
"""
LIBRARIES = {
    # profile: (distribution whose installed version is named, the code that connects)
    "requests-urllib3": ("requests", "import requests; requests.get('http://server:8080/')"),
    "httpx": ("httpx", "import httpx; httpx.get('http://server:8080/', timeout=60)"),
    "boto3-default": ("botocore", BOTO.format("")),
    "boto3-tcp-keepalive": ("botocore", BOTO.format("tcp_keepalive=True")),
    "redis-py-default": ("redis",
                         "import redis; redis.Redis(host='server', port=8080).ping()"),
    "libpq-default": ("psycopg", "import psycopg; psycopg.connect("
                                 "'host=server port=8080 user=natsim connect_timeout=60')"),
    "grpc-default": ("grpcio", "import grpc; grpc.channel_ready_future(grpc.insecure_channel("
                               "'server:8080')).result(timeout=60)"),
}


def expected(profile: ClientProfile) -> dict[str, int]:
    """What the profile says the kernel reads back in a namespace with ``SYSCTLS``."""
    user = {"TCP_USER_TIMEOUT": round((profile.user_timeout or 0) * 1000)}
    if profile.keepalive == "off":
        return {"SO_KEEPALIVE": 0, **user}
    if profile.keepalive == "os":
        return {"SO_KEEPALIVE": 1, "TCP_KEEPIDLE": SYSCTLS["tcp_keepalive_time"],
                "TCP_KEEPINTVL": SYSCTLS["tcp_keepalive_intvl"],
                "TCP_KEEPCNT": SYSCTLS["tcp_keepalive_probes"], **user}
    assert profile.idle is not None and profile.interval is not None
    return {"SO_KEEPALIVE": 1, "TCP_KEEPIDLE": round(profile.idle),
            "TCP_KEEPINTVL": round(profile.interval), "TCP_KEEPCNT": profile.count or 0,
            **user}


@pytest.mark.natsim(appliance="nat-gw", speed=1, sysctls=SYSCTLS, wall_time=True,
                    capture=False)
@pytest.mark.parametrize("profile", sorted(LIBRARIES))
def test_the_profile_says_what_the_installed_library_does(natsim_world: NatsimWorld,
                                                          profile: str) -> None:
    distribution, code = LIBRARIES[profile]
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"{distribution} is not installed: make setup (pip install -e '.[dev]')")
    natsim_world.start("server", [sys.executable, "-c", SILENT_SERVER])
    natsim_world.wait_for_port("server", PORT)
    done = natsim_world.run("client", [sys.executable, "-c", PROBE, code], timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    read = json.loads(done.stdout.splitlines()[-1])
    want = expected(get_profile(profile))
    got = {name: read[name] for name in want}
    assert got == want, (f"{profile} describes {distribution} as {want}, but {distribution} "
                         f"{version} (installed) sets {got}: fix the profile (keep the old "
                         f"one as '{profile}-before-N' if the library changed its default)")


def test_every_pypi_profile_is_checked() -> None:
    """A profile whose real client is a PyPI library belongs in LIBRARIES."""
    from simulator.core.profiles import PROFILES  # noqa: PLC0415

    pypi = {p.name for p in PROFILES.values() if "PyPI" in p.real_client}
    assert pypi <= set(LIBRARIES), sorted(pypi - set(LIBRARIES))


def _redis_timeout() -> object:
    import redis  # noqa: PLC0415

    return redis.Redis().connection_pool.connection_kwargs.get("socket_timeout")


def _httpx_retries() -> object:
    import httpx  # noqa: PLC0415

    return httpx.HTTPTransport()._pool._retries  # httpcore keeps it there


def _httpx_expiry() -> object:
    import httpx  # noqa: PLC0415

    return httpx.Limits().keepalive_expiry


def _requests_retries() -> object:
    import requests.adapters  # noqa: PLC0415

    return requests.adapters.DEFAULT_RETRIES


DEFAULTS: dict[str, tuple[str, Callable[[], object], Callable[[ClientProfile], object]]] = {
    # what a profile relies on beyond the socket: the profile, the installed library's
    # value, the value the profile stands for
    "httpx keepalive_expiry": ("httpx", _httpx_expiry, lambda p: p.discard_after),
    "httpx retries": ("httpx", _httpx_retries, lambda p: p.retry),
    "requests max_retries": ("requests-urllib3", _requests_retries, lambda p: p.retry),
    "redis-py socket_timeout": ("redis-py-default", _redis_timeout, lambda p: 5),
}


@pytest.mark.parametrize("what", sorted(DEFAULTS))
def test_the_library_defaults_a_profile_relies_on(what: str) -> None:
    """Pool habits and timeouts, read from the installed library's own objects."""
    profile, installed, described = DEFAULTS[what]
    assert installed() == described(get_profile(profile)), what


def test_every_profile_names_the_release_it_describes() -> None:
    from simulator.core.profiles import PROFILES  # noqa: PLC0415

    assert [p.name for p in PROFILES.values() if not p.version] == []
