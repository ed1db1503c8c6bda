"""The appliance catalogue: what each middlebox does to idle flows, as data.

An appliance is a frozen record of numbers and switches; the engine reads it and never
branches on an appliance's name. A scenario picks a catalogue entry by name and may override
any field (``appliance: {name: nlb, tcp_idle_timeout: 1000}``), which yields a new record;
overrides outside a documented range are refused, as the provider's API would.

Sources (quotes and more links in ``shared/research-aws.md``). A figure marked
*assumed* is not documented by the provider; the docstring of the entry says what was used.

Every entry records its sources and the date they were last checked (``checked``).

AWS NAT Gateway (``nat-gw``)
    * "If a connection that's using a NAT gateway is idle for 350 seconds or more, the
      connection times out." -- AWS VPC User Guide, *Troubleshoot NAT gateways*
      (https://docs.aws.amazon.com/vpc/latest/userguide/nat-gateway-troubleshooting.html).
    * "When a connection times out, a NAT gateway returns an RST packet to any resources
      behind the NAT gateway that attempt to continue the connection (it does not send a FIN
      packet)." -- *Compare NAT gateways and NAT instances*
      (https://docs.aws.amazon.com/vpc/latest/userguide/vpc-nat-comparison.html).
    * What the server (outside) sees when it sends after expiry is not documented: the AWS
      networking blog (seed 003) says "the transmitting end of the connection receives a TCP
      RST packet back from the appliance which timed out", so that is the default here, and
      ``late_from_outside: drop`` models the reading "packets aren't delivered".
    * UDP: no separate figure is documented; 350 s is *assumed*.
    * 55,000 concurrent connections to one destination (IP, port, protocol) per public IP,
      source ports 1024-65535; at most 8 public IPv4 addresses (1 primary, 7 secondary), 2 by
      default ("You can increase this limit by requesting a quota adjustment") (*NAT gateway
      basics*).

AWS Network Load Balancer, TCP listener (``nlb``)
    * Idle timeout 350 s by default, configurable 60-6000 s ("Enter a value for TCP idle
      timeout from 60-6000 seconds", *Update the TCP idle timeout*, checked); "If a client
      or target sends data after the idle timeout period elapses, the client receives a TCP
      RST packet" (ELB User Guide, *Network Load Balancers*, connection idle timeout).
      Modelled as an RST to whichever side sends (the older wording "it receives").
    * UDP flows: 120 s, fixed. Modelled with client IP preservation (``nat: false``), as for
      instance targets and UDP/QUIC IP targets. For IP-type TCP/TLS target groups client IP
      preservation is *disabled by default* and the NLB source-NATs to its own address: set
      ``nat: true`` for that (target group attribute ``preserve_client_ip.enabled``).

AWS Network Load Balancer, TLS listener (``nlb-tls``)
    * 350 s, fixed: "The connection idle timeout for TLS listeners is 350 seconds and can't
      be modified" (ELB User Guide, *Update the TCP idle timeout*, checked). The keepalives
      every 20 s on both legs once one is seen are confirmed in the ELB guide's source: "When
      a TLS listener receives a TCP keepalive packet from either a client or a target, the
      load balancer generates TCP keepalive packets and sends them to both the front-end and
      back-end connections every 20 seconds. You can't modify this behavior." A TLS
      listener terminates TCP, so in reality the two legs are separate connections; here
      they are one flow, and the appliance's own probes (sequence number one below what each
      end expects) go to both ends.

AWS interface VPC endpoint (``vpc-endpoint``, variant ``vpc-endpoint-silent``)
    * 350 s: only in the AWS networking blog (seed 003), not in the PrivateLink guide; RST to
      the sender per the same blog (*unconfirmed* elsewhere). A 2026 field report
      (boto/botocore#2916) describes a silent hang (no RST) of the full ``read_timeout``
      behind an NLB/endpoint path: ``vpc-endpoint-silent`` drops late packets instead.

AWS Gateway Load Balancer (``gwlb``, variant ``gwlb-2023-blog``)
    * 350 s default, 60-6000 s, configurable only with 5-tuple stickiness (ELB User Guide,
      *Gateway Load Balancers*, flow stickiness and idle timeout). The current guide: "After
      the idle timeout period elapses, the load balancer considers the next TCP SYN as a new
      flow and routes it to a new target. However, data packets sent after the idle timeout
      period elapses are dropped." So late data is dropped by the GWLB itself, whatever the
      stickiness, and only a new SYN is a new flow (hashed anew). The flows pass through
      ``targets`` inspection hosts inside the engine, each holding its own state for
      ``target_idle_timeout``. ``send_tcp_reset_on_idle_timeout: true`` makes late packets get
      an RST instead (listener attribute ``send_tcp_reset.on_idle_timeout.enabled``, *Listeners
      for your Gateway Load Balancers*).
    * ``gwlb-2023-blog``: the 2023 networking blog (seed 003) described late packets as
      "treated as a new flow" and re-hashed, delivered if the chosen firewall still holds the
      connection (with 2-tuple stickiness, "independent of the timeout"). Kept as a named
      variant with that source; natsim follows the current guide by default.

AWS Global Accelerator (``global-accelerator``)
    * "The timeout is 340 seconds for TCP connections. The timeout is 30 seconds for UDP
      connections." Not customizable. "To prevent connection timeout, Global Accelerator
      requires that you send a packet with a minimum of one byte of data ... You cannot use
      TCP keep-alive packets to maintain an open connection." (GA guide, *Idle timeout*); "If
      a client or endpoint sends data after the idle timeout period elapses, it receives a
      TCP reset packet" (*Troubleshooting*). ``keepalive_refreshes: false``: segments without
      data do not refresh the idle timer. The one documented AWS middlebox where TCP
      keepalive does not help; an application heartbeat (data) does.

AWS Network Firewall (``aws-network-firewall``)
    * ``TcpIdleTimeoutSeconds`` 60-6000, default 350: "After the idle timeout passes, data
      packets are dropped, however, the next TCP SYN packet is considered a new flow."
      (Network Firewall API, ``FlowTimeouts``).

EC2 security-group connection tracking, Nitro v6 (``ec2-sg-conntrack``)
    * ``TcpEstablishedTimeout`` "Default: 350 seconds for Nitro v6 instance types ...;
      432000 seconds for all other instance types", 60-432000; ``UdpTimeout`` 30 s (EC2 API,
      ``ConnectionTrackingConfiguration``). After the entry is purged the rules are evaluated
      again: the client's outbound packet is allowed (and tracked anew), the server's reply is
      not (no inbound rule for it) and is dropped.

Azure NAT Gateway (``azure-nat-gw``)
    * "TCP idle timeout timer defaults to 4 minutes but can be increased up to 120 minutes";
      UDP 4 minutes, fixed; "sends a TCP Reset (RST) packet for any connection flow that it
      doesn't recognize" (Microsoft Learn, *Azure NAT Gateway resource*). "TCP half open ...
      a 30-second timer" (``transitory_timeout``); up to 16 public IPv4 addresses; "ICMP
      isn't supported"; 50,000 concurrent connections per public IP to one destination.

Azure Load Balancer (``azure-lb``)
    * Idle timeout 4-100 minutes, default 4; "Load Balancer's default behavior is to silently
      drop flows when the idle timeout of a flow is reached. Enabling TCP reset causes Load
      Balancer to send bidirectional TCP Resets ... to both client and server endpoints at the
      time of idle timeout." (Microsoft Learn, *Load Balancer TCP Reset and Idle Timeout*).
      ``on_expiry: rst_both`` models ``EnableTcpReset``, and then late packets get an RST too:
      "If TCP resets are enabled, and it's missed for any reason, resets for any subsequent
      packets." UDP: "Idle timeout isn't supported for UDP load-balancing rules" (the 240 s
      here is *assumed*). (Both quotes checked against the
      Microsoft Learn pages; the Azure NAT Gateway and Google Cloud NAT defaults come from
      ``shared/research-aws.md`` and were not re-checked here.)

Google Cloud NAT (``gcp-nat``)
    * ``tcpEstablishedIdleTimeoutSec`` default 1200 s, ``tcpTransitoryIdleTimeoutSec`` 30 s,
      ``udpIdleTimeoutSec`` 30 s (Compute API, ``RouterNat``). Silent drop after expiry is
      reported by third parties, *unconfirmed* in Google's documentation. Ports are
      reserved per VM (``minPortsPerVm``, 64 by default); a port is needed for each
      concurrent connection from a VM to one destination: ``ports_per_destination`` 64.

AWS Lambda Hyperplane ENI (``hyperplane-eni``)
    * "Each Hyperplane ENI supports up to 65,000 connections/ports"; one ENI per subnet and
      security-group combination (Lambda Developer Guide, *Giving Lambda functions access to
      resources in an Amazon VPC*). The current guide adds that "Lambda scales the number of
      ENIs automatically" past that: the hard wall is the *burst before scale-out* (seed 004,
      Momento), which is what this entry models (a dropped SYN, the connect times out); the
      scale-out delay itself is not modelled. Idle timeout and late rules are taken from the
      NAT Gateway (*assumed*; Hyperplane is the same technology).

Linux conntrack firewall (``linux-conntrack``)
    * ``nf_conntrack_tcp_timeout_established`` 432000 s, ``nf_conntrack_udp_timeout`` 30 s
      (kernel ``Documentation/networking/nf_conntrack-sysctl.rst``). With the kernel default
      ``nf_conntrack_tcp_loose=1`` a mid-stream packet from the inside after the entry is gone
      is picked up as a new entry (``late_from_inside: pass``), while a new inbound one is
      refused by policy (``late_from_outside: drop``). ``drop``/``drop`` holds only with
      ``tcp_loose=0`` plus a ``ct state invalid drop`` rule.

AWS NAT Gateway, regional availability mode (``nat-gw-regional``)
    * "A regional NAT gateway automatically expands across Availability Zones based on your
      workload presence" (VPC User Guide, launched 19 Nov 2025); ``AvailabilityMode``
      "Defaults to ``zonal``" (EC2 ``CreateNatGateway``). No separate idle timeout is
      documented: the 350 s and the late-packet rules are the zonal gateway's, *assumed*.
      "Up to 32 IPs per AZ (vs 8 for zonal)" is a third party's figure
      (cluster-api-provider-aws #5790), *unconfirmed* by AWS: ``public_ip_limit`` 32.

Azure Private Link Service (``azure-private-link``)
    * "Private Link Service has an idle timeout of ~5 minutes (300 seconds) ... must use TCP
      Keepalives lower than that time" (Microsoft Learn, *What is Azure Private Link
      service?*). What happens at expiry is *disputed* (MicrosoftDocs/azure-docs #94724: a
      reporter saw resets on both sides; the product manager: "This is not the PLS behavior.
      It is behavior of LB in my opinion"): silent here, ``on_expiry: rst_both`` for the
      reporter's reading. It translates the consumer's address (``nat``).

Kubernetes kube-proxy's connection tracking (``kube-proxy-conntrack``)
    * ``--conntrack-tcp-timeout-established`` "Default: 24h0m0s"; ``--conntrack-tcp-be-liberal``
      sets ``nf_conntrack_tcp_be_liberal`` (kube-proxy reference). "Linux kernels prior to 6.1
      have a bug that can result in long-lived TCP connections to service IPs being closed
      with ... 'Connection reset by peer'" (*Virtual IPs and Service Proxies*). With the
      kernel's ``tcp_loose`` a client's mid-stream packet after the entry is gone is tracked
      and translated anew (``pass``); the pod's reply without an entry is not translated back,
      and the client's kernel answers that stranger with an RST (``rst`` for the server).
      Linux's own 7200 s keepalive is well inside the 24 h.

EKS network policy agent (``eks-network-policy``)
    * The VPC CNI's network-policy agent keeps its own eBPF connection table and purges it
      every ``conntrack-cache-cleanup-period``, "Default - 300" (aws-network-policy-agent PR
      #151); "Long session connections get dropped" (#144, fixed in agent 1.0.8 / VPC CNI
      1.16.3) and return traffic of long-lived connections denied (#318, open): an idle
      connection's entry is gone after 300 s (*from the source and issues*, not documented),
      the pod's egress is allowed again (``pass``), the return traffic is denied (``drop``).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from simulator.core.appliance_fields import (
    MAX_MODEL_SECONDS,
    ApplianceError,
    ExpiryAction,
    LateAction,
    check_field,
    json_list,
    timeout_range,
)
from simulator.core.jsonvalue import Json, JsonObject, fields_json, from_json, to_json

__all__ = ["CATALOGUE", "CAVEATS", "MAX_MODEL_SECONDS", "Appliance", "ApplianceError",
           "ExpiryAction", "LateAction", "caveats", "check_field", "did_you_mean",
           "get_appliance"]


@dataclass(frozen=True, slots=True)
class Appliance:
    """One middlebox model. Times are model seconds."""

    name: str
    title: str
    tcp_idle_timeout: float
    udp_idle_timeout: float
    late_from_inside: LateAction
    late_from_outside: LateAction
    on_expiry: ExpiryAction = ExpiryAction.SILENT
    nat: bool = True
    """Source NAT to ``public_ips`` (False: the appliance is transparent)."""
    transitory_timeout: float | None = None
    """Idle timeout of TCP flows not (or no longer) established, if it differs."""
    tcp_timeout_range: tuple[float, float] | None = None
    """The range the provider allows for ``tcp_idle_timeout``; None: not checked."""
    public_ips: tuple[str, ...] = ("203.0.113.1",)
    ports_per_destination: int = 55_000
    port_min: int = 1024
    port_max: int = 65535
    targets: int = 0
    """Inspection hosts behind a Gateway Load Balancer (0: none)."""
    stickiness: int = 5
    """Gateway Load Balancer flow stickiness: 5-, 3- or 2-tuple."""
    target_idle_timeout: float = 3600.0
    """How long an inspection host remembers a flow."""
    hash_seed: int = 0
    """Mixed into every flow hash (targets, backends): another seed, another spread; the
    same seed, the same run."""
    send_tcp_reset_on_idle_timeout: bool = False
    backends: int = 1
    """Targets behind a virtual address (NLB target group); more than one means the
    appliance forwards each new flow to one of them by flow hash."""
    vip: str = "198.19.0.100"
    """The virtual address clients connect to when there are several backends."""
    backend_ips: tuple[str, ...] = ()
    """The backends' addresses; the world builder fills them in."""
    connections_per_eni: int = 0
    """Concurrent connections one ENI carries (Lambda Hyperplane: 65,000); 0: no limit."""
    enis: int = 1
    """How many ENIs share the load (one per subnet and security-group combination)."""
    capacity_scale: float = 1.0
    """Multiplies every capacity limit, for fast tests (0.01: 550 instead of 55,000)."""
    keepalive_echo: float | None = None
    """Once it sees a TCP keepalive on a flow, the appliance sends its own keepalive probes
    to both ends this often (NLB TLS listener: 20 s)."""
    vip6: str = ""
    """A dual-stack LB's IPv6 address: an IPv6 flow to it goes to an IPv4 target from the
    LB's own address (``public_ips``: "the target sees the load balancer address")."""
    nat64: bool = False
    """IPv6 to 64:ff9b::/96 leaves as IPv4 from the public address (RFC 6146/7915), under
    the NAT's ports and timers (the NAT Gateway documents no NAT64 timer); no NAT66."""
    icmp: bool = True
    """Carries ICMP: echo by identifier, errors translated back (Azure NAT Gateway: no)."""
    keepalive_refreshes: bool = True
    """Whether a segment without data (a TCP keepalive probe, a bare ACK) refreshes the idle
    timer. Global Accelerator: no, "at least one byte of data" is needed."""
    checked: str = ""
    """When the sources were last compared with the entry (YYYY-MM-DD)."""
    public_ip_limit: int = 16
    """Public addresses the provider allows on one gateway (AWS NAT Gateway: 8)."""
    max_flows: int = 1_000_000
    """Live flows the model holds at most; a new flow past it is refused and counted as
    ``RejectedFlowCount`` (bounded memory whatever a client sends)."""
    sources: tuple[str, ...] = ()

    def with_overrides(self, overrides: Mapping[str, object]) -> Appliance:
        """A copy with ``overrides`` applied; unknown fields raise ``KeyError`` naming them,
        a value of the wrong type or out of range ``ApplianceError`` naming the field."""
        known = set(self.overridable_fields())
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise KeyError(", ".join(unknown))
        for key, value in overrides.items():
            check_field(key, value)
        # each value is checked: the record's conversions (enumerations, tuples) cannot fail
        result = from_json(Appliance, {**self.to_record(), **{
            key: to_json(value) for key, value in overrides.items()}})
        if result.send_tcp_reset_on_idle_timeout or (
                "on_expiry" in overrides and result.on_expiry is ExpiryAction.RST_BOTH):
            # GWLB's reset option; Azure LB with TCP reset "resets for any subsequent
            # packets" too
            result = dataclasses.replace(result, late_from_inside=LateAction.RST,
                                         late_from_outside=LateAction.RST)
        result._validate("tcp_idle_timeout" in overrides)
        return result

    def _validate(self, timeout_set: bool) -> None:
        if len(self.public_ips) > self.public_ip_limit:
            raise ApplianceError(f"public_ips: {self.title} allows at most "
                                 f"{self.public_ip_limit} addresses, got "
                                 f"{len(self.public_ips)}")
        if self.port_min > self.port_max:
            raise ApplianceError(f"port_min: {self.port_min} is above port_max "
                                 f"{self.port_max}")
        low_high = self.tcp_timeout_range
        if low_high is not None and not low_high[0] <= self.tcp_idle_timeout <= low_high[1]:
            raise ApplianceError(
                f"tcp_idle_timeout: {self.title} allows {low_high[0]:g}-{low_high[1]:g} s, "
                f"got {self.tcp_idle_timeout:g}")
        if self.capacity_scale <= 0:
            raise ApplianceError(f"capacity_scale: must be above 0, got {self.capacity_scale}")
        if self.backends < 1:
            raise ApplianceError(f"backends: at least 1, got {self.backends}")
        if self.stickiness not in (2, 3, 5):
            raise ApplianceError(f"stickiness: must be 5, 3 or 2 (tuple), got {self.stickiness}")
        if timeout_set and self.targets and self.stickiness != 5 and \
                self.tcp_idle_timeout != 350:
            raise ApplianceError(
                f"tcp_idle_timeout: {self.title} lets you change the idle timeout only with "
                f"5-tuple stickiness (this one has {self.stickiness}-tuple), as the AWS API does")

    def scaled(self, limit: int) -> int:
        """A capacity limit after ``capacity_scale`` (at least 1)."""
        return max(1, round(limit * self.capacity_scale))

    @property
    def connection_limit(self) -> int | None:
        """Concurrent connections the appliance carries in all, if it has such a limit."""
        if not self.connections_per_eni:
            return None
        return self.scaled(self.connections_per_eni) * self.enis

    def to_record(self) -> JsonObject:
        """The whole appliance as JSON data: how it crosses a process boundary (the
        dataplane rebuilds exactly this, not the catalogue entry with overrides re-applied)."""
        return fields_json(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Json]) -> Appliance:
        """The appliance :meth:`to_record` wrote; every field checked as an override is."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(record) - names)
        missing = sorted(f.name for f in dataclasses.fields(cls)
                         if f.name not in record and f.default is dataclasses.MISSING)
        if unknown or missing:
            raise ApplianceError(f"appliance record: unknown fields {unknown}, missing "
                                 f"{missing}")
        base = cls(name=str(record["name"]), title=str(record["title"]),
                   tcp_idle_timeout=1.0, udp_idle_timeout=1.0,
                   late_from_inside=LateAction.DROP, late_from_outside=LateAction.DROP,
                   tcp_timeout_range=timeout_range(record.get("tcp_timeout_range")),
                   sources=tuple(str(x) for x in json_list(record.get("sources", ()))),
                   checked=str(record.get("checked", "")))
        return base.with_overrides({k: v for k, v in record.items()
                                    if k not in ("name", "title", "tcp_timeout_range",
                                                 "sources", "checked")})

    @staticmethod
    def overridable_fields() -> list[str]:
        """Fields a scenario may set. The provider's own range (``tcp_timeout_range``) is a
        fact of the catalogue, not a setting: overriding it would let a 5 s NLB pass."""
        return [f.name for f in dataclasses.fields(Appliance)
                if f.name not in ("name", "title", "sources", "tcp_timeout_range", "checked")]


CHECKED = "2026-12-01"
"""When the entries marked with it were last compared with their sources
(``shared/research-aws.md``, "Corrections, checked again")."""

_AWS_BLOG = ("https://aws.amazon.com/blogs/networking-and-content-delivery/"
             "implementing-long-running-tcp-connections-within-vpc-networking/")

NAT_GATEWAY = Appliance(
    name="nat-gw",
    title="AWS NAT Gateway",
    tcp_idle_timeout=350.0,
    udp_idle_timeout=350.0,
    late_from_inside=LateAction.RST,
    late_from_outside=LateAction.RST,
    public_ip_limit=8,
    nat64=True,
    checked=CHECKED,
    sources=(
        "https://docs.aws.amazon.com/vpc/latest/userguide/nat-gateway-troubleshooting.html",
        "https://docs.aws.amazon.com/vpc/latest/userguide/nat-gateway-basics.html",
        "https://docs.aws.amazon.com/vpc/latest/userguide/vpc-nat-comparison.html",
        _AWS_BLOG,
    ),
)

NLB = Appliance(
    name="nlb", title="AWS Network Load Balancer (TCP listener)",
    tcp_idle_timeout=350.0, udp_idle_timeout=120.0,
    late_from_inside=LateAction.RST, late_from_outside=LateAction.RST,
    nat=False, tcp_timeout_range=(60.0, 6000.0), checked=CHECKED,
    sources=("https://docs.aws.amazon.com/elasticloadbalancing/latest/network/"
             "network-load-balancers.html#connection-idle-timeout",
             "https://docs.aws.amazon.com/elasticloadbalancing/latest/network/"
             "edit-target-group-attributes.html#client-ip-preservation"),
)

NLB_DUALSTACK = dataclasses.replace(
    NLB, name="nlb-dualstack",
    title="AWS Network Load Balancer (dual-stack, IPv4 target group)", vip6="2001:db8:2::100",
    sources=(*NLB.sources, "https://aws.amazon.com/blogs/networking-and-content-delivery/"
             "dual-stack-ipv6-architectures-for-aws-and-hybrid-networks/"))

NLB_TLS = Appliance(
    name="nlb-tls", title="AWS Network Load Balancer (TLS listener)",
    tcp_idle_timeout=350.0, udp_idle_timeout=350.0,
    late_from_inside=LateAction.RST, late_from_outside=LateAction.RST,
    nat=False, tcp_timeout_range=(350.0, 350.0), keepalive_echo=20.0, checked=CHECKED,
    sources=("https://docs.aws.amazon.com/elasticloadbalancing/latest/network/"
             "update-idle-timeout.html",),
)

VPC_ENDPOINT = Appliance(
    name="vpc-endpoint", title="AWS interface VPC endpoint",
    tcp_idle_timeout=350.0, udp_idle_timeout=350.0,
    late_from_inside=LateAction.RST, late_from_outside=LateAction.RST, nat=False,
    checked=CHECKED, sources=(_AWS_BLOG,),
)

VPC_ENDPOINT_SILENT = dataclasses.replace(
    VPC_ENDPOINT, name="vpc-endpoint-silent",
    title="AWS interface VPC endpoint (silent drop, botocore#2916)",
    late_from_inside=LateAction.DROP, late_from_outside=LateAction.DROP,
    sources=("https://github.com/boto/botocore/issues/2916",),
)

GWLB = Appliance(
    name="gwlb", title="AWS Gateway Load Balancer",
    tcp_idle_timeout=350.0, udp_idle_timeout=120.0,
    late_from_inside=LateAction.DROP, late_from_outside=LateAction.DROP,
    nat=False, tcp_timeout_range=(60.0, 6000.0), targets=3, stickiness=5, checked=CHECKED,
    sources=("https://docs.aws.amazon.com/elasticloadbalancing/latest/gateway/"
             "gateway-load-balancers.html",
             "https://docs.aws.amazon.com/elasticloadbalancing/latest/gateway/"
             "gateway-listeners.html"),
)

GWLB_2023_BLOG = dataclasses.replace(
    GWLB, name="gwlb-2023-blog", title="AWS Gateway Load Balancer (2023 blog: late packets "
    "re-hashed)", late_from_inside=LateAction.REHASH, late_from_outside=LateAction.REHASH,
    sources=(_AWS_BLOG,),
)

GLOBAL_ACCELERATOR = Appliance(
    name="global-accelerator", title="AWS Global Accelerator",
    tcp_idle_timeout=340.0, udp_idle_timeout=30.0,
    late_from_inside=LateAction.RST, late_from_outside=LateAction.RST,
    nat=False, tcp_timeout_range=(340.0, 340.0), keepalive_refreshes=False, checked=CHECKED,
    sources=("https://docs.aws.amazon.com/global-accelerator/latest/dg/"
             "introduction-how-it-works.html#about-idle-timeout",
             "https://docs.aws.amazon.com/global-accelerator/latest/dg/troubleshooting.html"),
)

NETWORK_FIREWALL = Appliance(
    name="aws-network-firewall", title="AWS Network Firewall",
    tcp_idle_timeout=350.0, udp_idle_timeout=350.0,
    late_from_inside=LateAction.DROP, late_from_outside=LateAction.DROP,
    nat=False, tcp_timeout_range=(60.0, 6000.0), checked=CHECKED,
    sources=("https://docs.aws.amazon.com/network-firewall/latest/APIReference/"
             "API_FlowTimeouts.html",),
)

EC2_SG_CONNTRACK = Appliance(
    name="ec2-sg-conntrack", title="EC2 security-group connection tracking (Nitro v6)",
    tcp_idle_timeout=350.0, udp_idle_timeout=30.0,
    late_from_inside=LateAction.PASS, late_from_outside=LateAction.DROP,
    nat=False, tcp_timeout_range=(60.0, 432000.0), checked=CHECKED,
    sources=("https://docs.aws.amazon.com/AWSEC2/latest/APIReference/"
             "API_ConnectionTrackingConfiguration.html",),
)

AZURE_NAT_GW = Appliance(
    name="azure-nat-gw", title="Azure NAT Gateway",
    tcp_idle_timeout=240.0, udp_idle_timeout=240.0,
    late_from_inside=LateAction.RST, late_from_outside=LateAction.RST,
    tcp_timeout_range=(240.0, 7200.0), ports_per_destination=50_000,
    transitory_timeout=30.0, icmp=False, checked=CHECKED,
    sources=("https://learn.microsoft.com/azure/nat-gateway/nat-gateway-resource",
             "https://learn.microsoft.com/azure/nat-gateway/nat-gateway-design"),
)

AZURE_LB = Appliance(
    name="azure-lb", title="Azure Load Balancer (Standard)",
    tcp_idle_timeout=240.0, udp_idle_timeout=240.0,
    late_from_inside=LateAction.DROP, late_from_outside=LateAction.DROP,
    nat=False, tcp_timeout_range=(240.0, 6000.0), checked=CHECKED,
    sources=("https://learn.microsoft.com/azure/load-balancer/load-balancer-tcp-reset",),
)

GCP_NAT = Appliance(
    name="gcp-nat", title="Google Cloud NAT",
    tcp_idle_timeout=1200.0, udp_idle_timeout=30.0, transitory_timeout=30.0,
    late_from_inside=LateAction.DROP, late_from_outside=LateAction.DROP,
    ports_per_destination=64, checked=CHECKED,
    sources=("https://cloud.google.com/compute/docs/reference/rest/v1/routers",
             "https://cloud.google.com/nat/docs/ports-and-addresses"),
)

LINUX_CONNTRACK = Appliance(
    name="linux-conntrack", title="Linux conntrack firewall (defaults)",
    tcp_idle_timeout=432000.0, udp_idle_timeout=30.0,
    late_from_inside=LateAction.PASS, late_from_outside=LateAction.DROP, nat=False,
    checked=CHECKED,
    sources=("https://docs.kernel.org/networking/nf_conntrack-sysctl.html",),
)

HYPERPLANE_ENI = Appliance(
    name="hyperplane-eni", title="AWS Lambda Hyperplane ENI",
    tcp_idle_timeout=350.0, udp_idle_timeout=350.0,
    late_from_inside=LateAction.RST, late_from_outside=LateAction.RST,
    nat=False, connections_per_eni=65_000, checked=CHECKED,
    sources=("https://docs.aws.amazon.com/lambda/latest/dg/configuration-vpc.html",),
)

NAT_GATEWAY_REGIONAL = dataclasses.replace(
    NAT_GATEWAY, name="nat-gw-regional",
    title="AWS NAT Gateway (regional availability mode)", public_ip_limit=32,
    checked="2026-12-04",
    sources=("https://docs.aws.amazon.com/vpc/latest/userguide/nat-gateways-regional.html",
             "https://docs.aws.amazon.com/AWSEC2/latest/APIReference/"
             "API_CreateNatGateway.html",
             "https://github.com/kubernetes-sigs/cluster-api-provider-aws/issues/5790"))

AZURE_PRIVATE_LINK = Appliance(
    name="azure-private-link", title="Azure Private Link Service",
    tcp_idle_timeout=300.0, udp_idle_timeout=300.0,
    late_from_inside=LateAction.DROP, late_from_outside=LateAction.DROP,
    tcp_timeout_range=(300.0, 300.0), checked="2026-12-04",
    sources=("https://learn.microsoft.com/azure/private-link/private-link-service-overview",
             "https://github.com/MicrosoftDocs/azure-docs/issues/94724"))

KUBE_PROXY_CONNTRACK = Appliance(
    name="kube-proxy-conntrack", title="Kubernetes kube-proxy connection tracking",
    tcp_idle_timeout=86400.0, udp_idle_timeout=30.0,
    late_from_inside=LateAction.PASS, late_from_outside=LateAction.RST, nat=False,
    tcp_timeout_range=(1.0, MAX_MODEL_SECONDS), checked="2026-12-04",
    sources=("https://kubernetes.io/docs/reference/command-line-tools-reference/kube-proxy/",
             "https://kubernetes.io/docs/reference/networking/virtual-ips/"))

EKS_NETWORK_POLICY = Appliance(
    name="eks-network-policy", title="EKS VPC CNI network policy agent (eBPF conntrack)",
    tcp_idle_timeout=300.0, udp_idle_timeout=300.0,
    late_from_inside=LateAction.PASS, late_from_outside=LateAction.DROP, nat=False,
    checked="2026-12-04",
    sources=("https://github.com/aws/aws-network-policy-agent/pull/151",
             "https://github.com/aws/aws-network-policy-agent/issues/144",
             "https://github.com/aws/aws-network-policy-agent/issues/318"))

CATALOGUE: dict[str, Appliance] = {a.name: a for a in (
    NAT_GATEWAY, NLB, NLB_DUALSTACK, NLB_TLS, VPC_ENDPOINT, VPC_ENDPOINT_SILENT, GWLB,
    GWLB_2023_BLOG,
    GLOBAL_ACCELERATOR, NETWORK_FIREWALL, EC2_SG_CONNTRACK, AZURE_NAT_GW, AZURE_LB, GCP_NAT,
    LINUX_CONNTRACK, HYPERPLANE_ENI, NAT_GATEWAY_REGIONAL, AZURE_PRIVATE_LINK,
    KUBE_PROXY_CONNTRACK, EKS_NETWORK_POLICY)}


_ONE_BLOG = "rests on one source (the AWS blog, 2023)"
CAVEATS: dict[str, dict[str, str]] = {
    # appliance -> field -> how firm its catalogue value is, where it is not documented
    "nat-gw": {"late_from_outside": f"rst {_ONE_BLOG}; the documentation says only that "
                                    "the packet is not delivered (late_from_outside: drop)",
               "udp_idle_timeout": "350 s assumed (not documented)"},
    "nat-gw-regional": {"tcp_idle_timeout": "350 s assumed: no idle timeout is documented "
                                            "for the regional mode",
                        "public_ip_limit": "32 per zone rests on one third party "
                                           "(cluster-api-provider-aws #5790)",
                        "late_from_outside": f"rst {_ONE_BLOG} (the zonal gateway's)"},
    "vpc-endpoint": {"tcp_idle_timeout": f"350 s {_ONE_BLOG}"},
    "gcp-nat": {"late_from_inside": "drop rests on third parties, not Google's documentation",
                "late_from_outside": "drop rests on third parties, not Google's "
                                     "documentation"},
    "azure-lb": {"udp_idle_timeout": "240 s assumed (no UDP idle timeout is documented)"},
    "azure-private-link": {"on_expiry": "silent is disputed (azure-docs #94724: a reporter "
                                        "saw RSTs to both ends; on_expiry: rst_both)",
                           "udp_idle_timeout": "300 s assumed"},
    "hyperplane-eni": {"tcp_idle_timeout": "350 s assumed (the NAT Gateway's)"},
    "eks-network-policy": {"tcp_idle_timeout": "300 s is the agent's cleanup period (its "
                                               "source, PR #151), not documented; an entry "
                                               "may outlive it by up to one more period"},
}
"""Values in the catalogue that rest on one source, a third party or an assumption: ``natsim
list`` and ``natsim check`` say so next to them."""


def caveats(appliance: Appliance, tcp: bool = False) -> list[str]:
    """The caveats of ``appliance``'s values that are still the catalogue's (an override
    replaces the value, and its caveat with it); ``tcp``: none about UDP."""
    entry = CATALOGUE.get(appliance.name)
    notes = CAVEATS.get(appliance.name, {})
    return [f"{field}: {text}" for field, text in notes.items()
            if entry is not None and getattr(appliance, field) == getattr(entry, field)
            and not (tcp and field.startswith("udp_"))]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """ "did you mean X? " for a typo close to one of ``known`` (else nothing)."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"did you mean {close[0]}? " if close else ""


def get_appliance(name: str) -> Appliance:
    try:
        return CATALOGUE[name]
    except KeyError:
        raise KeyError(f"unknown appliance {name!r}; {did_you_mean(name, CATALOGUE)}known: "
                       f"{', '.join(sorted(CATALOGUE))}")\
            from None
