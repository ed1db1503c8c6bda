"""Client keepalive profiles: what real stacks do by default, and the usual fixes.

A scenario can say ``client: {profile: boto3-tcp-keepalive}`` instead of spelling out the
socket options; ``natsim check --client-profile`` uses the same table. Each entry says where
its figures come from (``shared/research-aws.md`` section 6 has the quotes). ``os`` means
``SO_KEEPALIVE`` is set but the timing is the operating system's (Linux:
``net.ipv4.tcp_keepalive_time`` 7200 s, ``intvl`` 75 s, ``probes`` 9, per network namespace).
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.core.appliances import did_you_mean


@dataclass(frozen=True, slots=True)
class ClientProfile:
    name: str
    title: str
    keepalive: str
    """``off``, ``os`` (SO_KEEPALIVE only) or ``socket`` (TCP_KEEPIDLE/INTVL/CNT set)."""
    idle: float | None = None
    interval: float | None = None
    count: int | None = None
    source: str = ""
    real_client: str = ""
    """How the integration suite runs this client for real (empty: it cannot be run here;
    ``natsim list`` says so)."""
    version: str = ""
    """The library release whose defaults this describes (defaults change)."""
    user_timeout: float | None = None
    """``TCP_USER_TIMEOUT`` the library sets (seconds)."""
    discard_after: float | None = None
    ping_every: float | None = None
    validate: float | None = None
    pooled: bool = False
    """A connection pool: it keeps connections between requests (the reuse question)."""
    retry: int = 0
    """A pool's habits (:class:`simulator.core.pool_model.PoolExchange`): closing a
    connection idle too long, pinging idle ones, checking one before use, resending a
    request after a reset."""
    fix: str = ""
    """The fix in the library's own words; ``{idle}`` and ``{idle_ms}`` stand for a keepalive
    idle time below the appliance's timeout (``natsim check`` fills them in)."""

    def habits(self) -> dict[str, float]:
        return {name: value for name, value in (
            ("discard_after", self.discard_after), ("ping_every", self.ping_every),
            ("validate", self.validate)) if value is not None}


PROFILES: dict[str, ClientProfile] = {p.name: p for p in (
    ClientProfile("linux-so-keepalive", "any program that sets SO_KEEPALIVE on Linux", "os",
                  version="Linux (any release: tcp(7) defaults)",
                  fix=("setsockopt(IPPROTO_TCP, TCP_KEEPIDLE, {idle}) beside SO_KEEPALIVE, or "
                      "the sysctl net.ipv4.tcp_keepalive_time={idle}"),
                  source="Linux tcp(7): tcp_keepalive_time 7200, intvl 75, probes 9",
                  real_client="python3 socket with SO_KEEPALIVE"),
    ClientProfile("dotnet-socketshttphandler", ".NET HttpClient / SocketsHttpHandler default",
                  "off", version=".NET Core 2.1 and later (SocketsHttpHandler)",
                  fix=("a SocketsHttpHandler.ConnectCallback that sets "
                      "socket.SetSocketOption(SocketOptionLevel.Socket, "
                      "SocketOptionName.KeepAlive, true) and SocketOptionLevel.Tcp, "
                      "SocketOptionName.TcpKeepAliveTime, {idle}"),
                  source="AWS re:Post, long-running Lambda invokes from .NET 6+: "
                         "SocketsHttpHandler has TCP keep-alive turned off"),
    ClientProfile("dotnet-connectcallback-300", ".NET with the ConnectCallback keepalive fix",
                  "socket", 300, 15, 5,
                  version=".NET 5 and later (ConnectCallback)",
                  fix=("TcpKeepAliveTime {idle} in the ConnectCallback"),
                  source="AWS re:Post (.NET 6+ Lambda invokes): TcpKeepAliveTime 300, "
                         "Interval 15, RetryCount 5"),
    ClientProfile("aws-sdk-dotnet-lambda-netcore", "AWS SDK for .NET Lambda client on .NET "
                  "Core / .NET 6+", "off",
                  version="AWS SDK for .NET v3 on .NET Core / .NET 6+",
                  fix=("an HttpClientFactory for the SDK client whose "
                      "SocketsHttpHandler.ConnectCallback sets KeepAlive and "
                      "TcpKeepAliveTime={idle}"),
                  source="AWS re:Post (.NET 6+ Lambda invokes): the SDK's 300 s/15 s "
                         "keepalive works only on .NET Framework"),
    ClientProfile("boto3-default", "boto3 / botocore default", "off",
                  version="botocore 1.x (1.44.8 checked in the suite)",
                  fix=("botocore.config.Config(tcp_keepalive=True) and the sysctl "
                      "net.ipv4.tcp_keepalive_time={idle} (botocore sets SO_KEEPALIVE only, "
                      "never TCP_KEEPIDLE)"),
                  source="botocore config: tcp_keepalive defaults to false",
                  real_client="botocore (PyPI) against a slow endpoint"),
    ClientProfile("boto3-tcp-keepalive", "boto3 with tcp_keepalive=true", "os",
                  version="botocore 1.x (1.44.8 checked in the suite)",
                  fix=("the sysctl net.ipv4.tcp_keepalive_time={idle} in the client's host or "
                      "pod (botocore sets SO_KEEPALIVE only)"),
                  source="botocore sets SO_KEEPALIVE only; the OS's 7200 s still applies "
                         "(AWS networking blog, long-running TCP connections)",
                  real_client="botocore (PyPI) against a slow endpoint"),
    ClientProfile("java-sdk-apache", "AWS SDK for Java v2, Apache client default", "off",
                  version="AWS SDK for Java 2.x",
                  fix=("ApacheHttpClient.builder().tcpKeepAlive(true) and the sysctl "
                      "net.ipv4.tcp_keepalive_time={idle} (the SDK sets SO_KEEPALIVE only)"),
                  source="ApacheHttpClient.Builder.tcpKeepAlive defaults to false "
                         "(AWS networking blog, long-running TCP connections)"),
    ClientProfile("java-sdk-apache-tcpkeepalive", "AWS SDK for Java v2, Apache client with "
                  "tcpKeepAlive(true)", "os",
                  version="AWS SDK for Java 2.x",
                  fix=("the sysctl net.ipv4.tcp_keepalive_time={idle} (tcpKeepAlive(true) sets "
                      "SO_KEEPALIVE only)"),
                  source="SO_KEEPALIVE with OS timing; a 2021 Lambda-in-VPC write-up: "
                         "'these values are not honored by the SDK'"),
    ClientProfile("java-httpclient-default", "the JDK's java.net.http.HttpClient default",
                  "off", fix=("java.net.http.HttpClient sets no socket options at all: an "
                              "application ping more often than every {idle} s, or a client "
                              "whose sockets take ExtendedSocketOptions.TCP_KEEPIDLE"),
                  source="StandardSocketOptions.SO_KEEPALIVE: 'The initial value of "
                  "this socket option is FALSE'; HttpClient exposes no keepalive option. Its "
                  "pool keeps an idle HTTP/1.1 connection jdk.httpclient.keepalive.timeout "
                  "(1200 s in JDK 17's ConnectionPool) and MultiExchange resends an "
                  "idempotent request (GET, HEAD...) once on a new connection when the "
                  "pooled one fails (ConnectionExpiredException); other methods only with "
                  "jdk.httpclient.enableAllMethodRetry",
                  version="JDK 17 (17.0.21 run in the suite)", discard_after=1200.0, retry=1,
                  real_client="java (the JDK), HttpClient.send"),
    ClientProfile("java-socket-keepidle-300", "a Java Socket with SO_KEEPALIVE and "
                  "TCP_KEEPIDLE=300 (JDK 11+)", "socket", 300, 15, 5,
                  version="JDK 11 and later (17 run in the suite)",
                  fix=("socket.setOption(ExtendedSocketOptions.TCP_KEEPIDLE, {idle})"),
                  source="jdk.net.ExtendedSocketOptions.TCP_KEEPIDLE, TCP_KEEPINTERVAL, "
                         "TCP_KEEPCOUNT (JDK 11+, JDK-8194298)",
                  real_client="java (the JDK), java.net.Socket"),
    ClientProfile("go-net-dialer", "Go net.Dialer default", "socket", 15, 15, 9,
                  version="Go 1.13 and later (KeepAliveConfig's defaults since 1.23)",
                  fix=("net.Dialer{{KeepAliveConfig: net.KeepAliveConfig{{Enable: true, Idle: "
                      "{idle} * time.Second}}}} (Go 1.23+), or KeepAlive: {idle} * "
                      "time.Second"),
                  source="Go net/dial.go: defaultTCPKeepAliveIdle and Interval 15 s, Count 9"),
    ClientProfile("libpq-default", "PostgreSQL libpq default", "os",
                  version="libpq 9 and later (psql 15 run, psycopg 3.3 checked)",
                  fix=("keepalives_idle={idle} in the connection string"),
                  source="libpq: keepalives=1, keepalives_idle=0 (the OS default)",
                  real_client="psql (Debian postgresql-client) with pg_sleep on a real "
                              "PostgreSQL server"),
    ClientProfile("pgjdbc-default", "PostgreSQL JDBC default", "off",
                  version="pgJDBC 42.x",
                  fix=("tcpKeepAlive=true in the JDBC URL and the sysctl "
                      "net.ipv4.tcp_keepalive_time={idle} (pgJDBC sets no TCP_KEEPIDLE)"),
                  source="pgjdbc: tcpKeepAlive=false by default"),
    ClientProfile("node-http-agent", "Node.js http.Agent({keepAlive: true}), and the default "
                  "global agent since Node 19", "socket", 1, 1, 10,
                  version="Node.js 19 and later (20 run in the suite)",
                  fix=("new http.Agent({{keepAlive: true, keepAliveMsecs: {idle_ms}}})"),
                  source="Node agent.keepSocketAlive: socket.setKeepAlive(true, "
                         "keepAliveMsecs=1000); setKeepAlive also sets TCP_KEEPINTVL=1, "
                         "TCP_KEEPCNT=10 (Node net.md)",
                  real_client="node (Debian nodejs), http.get with a keep-alive agent"),
    ClientProfile("node-net-socket", "Node.js bare net.Socket", "off",
                  version="Node.js (any; 20 run in the suite)",
                  fix=("socket.setKeepAlive(true, {idle_ms})"),
                  source="Node net.md: setKeepAlive([enable=false]): off unless called",
                  real_client="node (Debian nodejs), net.connect"),
    ClientProfile("curl-default", "curl default", "socket", 60, 60, 9,
                  version="curl 7.25 and later (7.88 run in the suite)",
                  fix=("--keepalive-time {idle}"),
                  source="curl --keepalive-time defaults to 60 s (idle and interval)",
                  real_client="curl"),
    ClientProfile("curl-no-keepalive", "curl --no-keepalive", "off",
                  version="curl 7.25 and later (7.88 run in the suite)",
                  fix=("leave out --no-keepalive (curl probes after 60 s by default), or "
                      "--keepalive-time {idle}"),
                  source="curl: --no-keepalive disables SO_KEEPALIVE", real_client="curl"),
    ClientProfile("grpc-default", "gRPC core client default (Python grpcio, C++)", "off",
                  version="grpcio 1.x (1.85 checked in the suite), gRPC C++ core",
                  fix=("channel options grpc.keepalive_time_ms={idle_ms} and "
                      "grpc.http2.max_pings_without_data=0 (without it the pings stop after "
                      "two), and a server that allows them "
                      "(grpc.http2.min_ping_interval_without_data_ms)"),
                  source="grpc doc/keepalive.md: GRPC_ARG_KEEPALIVE_TIME_MS INT_MAX "
                         "(disabled) on clients; even when enabled, at most 2 pings without "
                         "data (GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA)"),
    ClientProfile("mysql-connector-j", "MySQL Connector/J default", "os",
                  version="Connector/J 5.0.7 and later",
                  fix=("the sysctl net.ipv4.tcp_keepalive_time={idle} (tcpKeepAlive=true uses "
                      "the OS timing)"),
                  source="Connector/J tcpKeepAlive default true since 5.0.7: SO_KEEPALIVE, "
                         "OS timing"),
    ClientProfile("redis-py-default", "redis-py 8 default (socket_timeout=None for a "
                  "blocking command)", "socket", 30, 5, 3,
                  version="redis-py 8.x (8.2 run in the suite)",
                  fix=("socket_keepalive_options={{socket.TCP_KEEPIDLE: {idle}}} (the default "
                      "30 s already probes in time), and socket_timeout=None for a blocking "
                      "command"),
                  source="redis-py 8.2 redis/_defaults.py: socket_keepalive on, "
                         "TCP_KEEPIDLE 30, TCP_KEEPINTVL 5, TCP_KEEPCNT 3 (redis-py 7 and "
                         "earlier: off); its default socket_timeout of 5 s ends a blocking "
                         "BLPOP itself (retried, about 60 s in all), so a long BLPOP needs "
                         "socket_timeout=None",
                  real_client="redis-py (PyPI) BLPOP against redis-server, on the world's "
                              "clock"),
    ClientProfile("redis-py-before-8", "redis-py 7 and earlier default", "off",
                  version="redis-py 4.x-7.x",
                  fix=("socket_keepalive=True, socket_keepalive_options={{socket.TCP_KEEPIDLE: "
                      "{idle}}}, or redis-py 8"),
                  source="redis-py 7 Connection(socket_keepalive=False, socket_timeout=None): "
                         "no SO_KEEPALIVE; a blocking command waits for ever (redis-py 8 "
                         "turned keepalive on: redis-py-default)"),
    # -- pools: what happens to a connection kept between requests (natsim check
    # --reuse-after, scripted scenarios)
    ClientProfile("requests-urllib3", "requests Session (urllib3 pool)", "off",
                  pooled=True,
                  version="requests 2.32-2.34, urllib3 2.x (2.34.2, 2.8.0 run in the suite)",
                  fix=("an HTTPAdapter with max_retries=urllib3.Retry(total=1, "
                      "allowed_methods=None) to resend after the reset, or pool connections "
                      "with socket_options=HTTPConnection.default_socket_options + "
                      "[(SOL_SOCKET, SO_KEEPALIVE, 1), (IPPROTO_TCP, TCP_KEEPIDLE, {idle})]"),
                  source="urllib3 HTTPConnection.default_socket_options: TCP_NODELAY only "
                         "(no SO_KEEPALIVE); connections kept with no idle limit; requests' "
                         "HTTPAdapter max_retries=0, so a reset on a reused connection "
                         "reaches the application as ConnectionError('Connection aborted.')",
                  real_client="requests (PyPI) Session reused after an idle spell, on the "
                              "world's clock"),
    ClientProfile("httpx", "httpx Client (httpcore pool)", "off", pooled=True,
                  version="httpx 0.28-0.29 (0.29.0 checked in the suite)", discard_after=5.0,
                  fix=("httpx.HTTPTransport(socket_options=[(socket.SOL_SOCKET, "
                      "socket.SO_KEEPALIVE, 1), (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, "
                      "{idle})]) for a long request (idle pooled connections are closed after "
                      "keepalive_expiry, 5 s)"),
                  source="httpx Limits(keepalive_expiry=5.0): a connection idle 5 s is "
                         "closed before reuse; no SO_KEEPALIVE; no retries by default"),
    ClientProfile("hikaricp", "HikariCP pool with pgJDBC (keepaliveTime 2 min)", "off",
                  pooled=True, version="HikariCP 5.1 and later, pgJDBC 42", ping_every=120.0,
                  validate=5.0,
                  fix=("keepaliveTime={idle_ms} (below the appliance's timeout)"),
                  source="HikariConfig DEFAULT_KEEPALIVE_TIME = 2 minutes (the code since "
                         "5.1.0): idle connections are pinged (isValid, data); "
                         "validationTimeout 5 s on checkout; pgJDBC tcpKeepAlive=false"),
    ClientProfile("hikaricp-keepalive-0", "HikariCP pool with keepaliveTime 0 (the README's "
                  "default)", "off", pooled=True, version="HikariCP README, pgJDBC 42",
                  validate=5.0,
                  fix=("keepaliveTime={idle_ms}: HikariCP then pings idle connections"),
                  source="HikariCP README: keepaliveTime 'Default: 0 (disabled)'; a "
                         "connection idle over 500 ms is checked with isValid on checkout "
                         "(validationTimeout 5 s) and replaced when the check fails"),
    ClientProfile("kafka-java", "Apache Kafka Java client", "os", pooled=True,
                  version="kafka-clients 3.x", discard_after=540.0, retry=1,
                  fix=("connections.max.idle.ms={idle_ms}, and the sysctl "
                      "net.ipv4.tcp_keepalive_time={idle}"),
                  source="connections.max.idle.ms 540000 (9 min): idle connections closed; "
                         "the Selector sets SO_KEEPALIVE (OS timing); a failed request is "
                         "retried on a new connection (retries, delivery.timeout.ms)"),
    ClientProfile("rabbitmq-heartbeat", "RabbitMQ client with the default 60 s heartbeat",
                  "off", pooled=True, version="RabbitMQ Java client 5.x, server 3.x/4.x",
                  ping_every=30.0,
                  fix=("a heartbeat timeout below twice the appliance's timeout (frames every "
                      "timeout / 2): heartbeat={idle}"),
                  source="RabbitMQ heartbeats: timeout 60 s, heartbeat frames every "
                         "timeout / 2 = 30 s on an idle connection: data, so they keep even "
                         "Global Accelerator's flow"),
    ClientProfile("grpc-go", "gRPC-Go client (TCP keepalive with the OS timing)", "os",
                  pooled=True, version="grpc-go 1.66 and later",
                  fix=("grpc.WithKeepaliveParams(keepalive.ClientParameters{{Time: {idle} * "
                      "time.Second, PermitWithoutStream: true}}), or the sysctl "
                      "net.ipv4.tcp_keepalive_time={idle}"),
                  source="grpc-go dials with net.KeepAliveConfig{Enable: true, Idle: -1, "
                         "Interval: -1, Count: -1}: SO_KEEPALIVE with the OS's timing; gRPC "
                         "keepalive pings (and TCP_USER_TIMEOUT) only when the application "
                         "enables them"),
)}


def get_profile(name: str) -> ClientProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown client profile {name!r}; {did_you_mean(name, PROFILES)}known: "
                       f"{', '.join(sorted(PROFILES))}") from None
