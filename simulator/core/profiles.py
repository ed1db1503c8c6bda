"""Client keepalive profiles: what real stacks do by default, and the usual fixes.

A scenario can say ``client: {profile: boto3-tcp-keepalive}`` instead of spelling out the
socket options; ``natsim check --client-profile`` uses the same table. Each entry says where
its figures come from (``shared/research-aws.md`` section 6 has the quotes). ``os`` means
``SO_KEEPALIVE`` is set but the timing is the operating system's (Linux:
``net.ipv4.tcp_keepalive_time`` 7200 s, ``intvl`` 75 s, ``probes`` 9, per network namespace).
"""

from __future__ import annotations

from dataclasses import dataclass


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


PROFILES: dict[str, ClientProfile] = {p.name: p for p in (
    ClientProfile("linux-so-keepalive", "any program that sets SO_KEEPALIVE on Linux", "os",
                  source="Linux tcp(7): tcp_keepalive_time 7200, intvl 75, probes 9"),
    ClientProfile("dotnet-socketshttphandler", ".NET HttpClient / SocketsHttpHandler default",
                  "off", source="seed 000: SocketsHttpHandler has TCP keep-alive turned off"),
    ClientProfile("dotnet-connectcallback-300", ".NET with seed 000's ConnectCallback fix",
                  "socket", 300, 15, 5,
                  source="seed 000: TcpKeepAliveTime 300, Interval 15, RetryCount 5"),
    ClientProfile("aws-sdk-dotnet-lambda-netcore", "AWS SDK for .NET Lambda client on .NET "
                  "Core / .NET 6+", "off",
                  source="seed 000: the SDK's 300 s/15 s keepalive works only on .NET "
                         "Framework"),
    ClientProfile("boto3-default", "boto3 / botocore default", "off",
                  source="botocore config: tcp_keepalive defaults to false"),
    ClientProfile("boto3-tcp-keepalive", "boto3 with tcp_keepalive=true", "os",
                  source="botocore sets SO_KEEPALIVE only; the OS's 7200 s still applies "
                         "(seed 003)"),
    ClientProfile("java-sdk-apache", "AWS SDK for Java v2, Apache client default", "off",
                  source="ApacheHttpClient.Builder.tcpKeepAlive defaults to false (seed 003)"),
    ClientProfile("java-sdk-apache-tcpkeepalive", "AWS SDK for Java v2, Apache client with "
                  "tcpKeepAlive(true)", "os",
                  source="SO_KEEPALIVE with OS timing; seed 001: 'these values are not "
                         "honored by the SDK'"),
    ClientProfile("go-net-dialer", "Go net.Dialer default", "socket", 15, 15, 9,
                  source="Go net/dial.go: defaultTCPKeepAliveIdle and Interval 15 s, Count 9"),
    ClientProfile("libpq-default", "PostgreSQL libpq default", "os",
                  source="libpq: keepalives=1, keepalives_idle=0 (the OS default)"),
    ClientProfile("pgjdbc-default", "PostgreSQL JDBC default", "off",
                  source="pgjdbc: tcpKeepAlive=false by default"),
    ClientProfile("node-http-agent", "Node.js http.Agent({keepAlive: true})", "off",
                  source="keepAlive is HTTP keep-alive; TCP keepalive needs "
                         "socket.setKeepAlive"),
    ClientProfile("curl-default", "curl default", "socket", 60, 60, 9,
                  source="curl --keepalive-time defaults to 60 s (idle and interval)"),
)}


def get_profile(name: str) -> ClientProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown client profile {name!r}; known: "
                       f"{', '.join(sorted(PROFILES))}") from None
