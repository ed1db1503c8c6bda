"""The engine's promises that a verdict rests on: a call returns everything it decided,
flows cannot collide, and no state outlives its flows (the trust issue, findings 4, 5, 8)."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP

from simulator.core.appliances import get_appliance
from simulator.core.chain import Chain
from simulator.core.engine import Middlebox, Transmit
from simulator.core.events import EventKind, Side
from simulator.core.packets import ip_from_str
from tests.unit.helpers import CLIENT, SERVER, parsed, tcp, udp

SPORT = 8080


def _establish(box: Middlebox | Chain, cport: int, t: float = 0.0,
               dst: str = SERVER) -> int:
    """Handshake plus one request byte; returns the port the server sees."""
    out = box.on_packet(tcp(CLIENT, cport, dst, SPORT, "S", 100), Side.INSIDE, t)
    seen = parsed(out[-1].packet)
    public = seen[TCP].sport
    box.on_packet(tcp(seen.dst, SPORT, seen.src, public, "SA", 500, 101), Side.OUTSIDE, t)
    box.on_packet(tcp(CLIENT, cport, dst, SPORT, "A", 101, 501), Side.INSIDE, t)
    box.on_packet(tcp(CLIENT, cport, dst, SPORT, "PA", 101, 501, b"x"), Side.INSIDE, t)
    box.on_packet(tcp(seen.dst, SPORT, seen.src, public, "A", 501, 102), Side.OUTSIDE, t)
    return int(public)


def _rsts(out: list[Transmit]) -> list[Transmit]:
    return [t for t in out if parsed(t.packet)[TCP].flags.R]


# -- finding 5: what expiry decides is never dropped ----------------------------------------


def test_rst_at_expiry_comes_back_from_on_packet_without_an_expire_call() -> None:
    """Azure LB with TCP reset: the flow's expiry sends an RST to both ends. The dataplane
    may learn of it from the next packet's call, so that call must return those RSTs."""
    box = Middlebox(get_appliance("azure-lb").with_overrides({"on_expiry": "rst_both"}))
    _establish(box, 40000)
    timeout = box.appliance.tcp_idle_timeout
    # no expire() in between: the next packet (another connection) arrives after the deadline
    out = box.on_packet(tcp(CLIENT, 40001, SERVER, SPORT, "S", 7), Side.INSIDE, timeout + 1)
    rsts = _rsts(out)
    assert {t.side for t in rsts} == {Side.INSIDE, Side.OUTSIDE}
    assert box.counters["RstSent"] == 2
    assert any(parsed(t.packet)[TCP].flags.S for t in out)  # and the new SYN goes on


def test_appliance_keepalives_come_back_from_on_packet() -> None:
    """NLB TLS: once it has seen a keepalive it probes both ends every 20 s itself."""
    box = Middlebox(get_appliance("nlb-tls"))
    _establish(box, 40000)
    box.on_packet(tcp(CLIENT, 40000, SERVER, SPORT, "A", 101, 501), Side.INSIDE, 10.0)  # probe
    out = box.on_packet(tcp(CLIENT, 40001, SERVER, SPORT, "S", 7), Side.INSIDE, 31.0)
    probes = [t for t in out if not parsed(t.packet)[TCP].flags.S]
    assert len(probes) == 2 and box.counters["ApplianceKeepalives"] == 2


def test_a_chain_returns_what_every_stage_decided() -> None:
    """Client -> NAT GW -> Azure LB (reset at expiry): the LB's RSTs come back from a packet
    that never reaches the LB, and its RST to the client crosses the NAT GW on the way."""
    lb = get_appliance("azure-lb").with_overrides({"on_expiry": "rst_both",
                                                   "tcp_idle_timeout": 240.0})
    chain = Chain([get_appliance("nat-gw"), lb])
    _establish(chain, 40000)
    # a UDP datagram the NAT GW forwards, at a time past the LB's deadline only
    out = chain.on_packet(udp(CLIENT, 5000, SERVER, 53), Side.INSIDE, 300.0)
    rsts = [t for t in out if parsed(t.packet).haslayer(TCP) and parsed(t.packet)[TCP].flags.R]
    assert {t.side for t in rsts} == {Side.INSIDE, Side.OUTSIDE}
    to_client = next(parsed(t.packet) for t in rsts if t.side is Side.INSIDE)
    assert (to_client.dst, to_client[TCP].dport) == (CLIENT, 40000)  # translated back


# -- finding 4: the backends' flow model ------------------------------------------------------


def _nlb_with_backends() -> Middlebox:
    return Middlebox(get_appliance("nlb").with_overrides(
        {"backends": 2, "backend_ips": ["198.19.1.10", "198.19.2.10"]}))


def test_same_socket_via_the_virtual_address_and_direct_cannot_collide() -> None:
    box = _nlb_with_backends()
    vip = box.appliance.vip
    out = box.on_packet(tcp(CLIENT, 40000, vip, SPORT, "S", 1), Side.INSIDE, 0.0)
    backend = parsed(out[0].packet).dst
    # the same client socket straight to the backend the first flow landed on
    out = box.on_packet(tcp(CLIENT, 40000, backend, SPORT, "S", 1), Side.INSIDE, 1.0)
    assert out == [] and box.counters["SocketReuseDrops"] == 1
    # every flow expires without a KeyError, and the tables end empty
    box.expire(10_000.0)
    assert box.state_sizes()["flows"] == 0 and not box.flows.by_outside


def test_direct_traffic_to_a_backend_leaves_by_that_backends_interface() -> None:
    box = _nlb_with_backends()
    out = box.on_packet(tcp(CLIENT, 40000, "198.19.2.10", SPORT, "S", 1), Side.INSIDE, 0.0)
    assert len(out) == 1 and out[0].port == 1
    reply = box.on_packet(tcp("198.19.2.10", SPORT, CLIENT, 40000, "SA", 9, 2), Side.OUTSIDE,
                          0.1)
    assert len(reply) == 1 and reply[0].side is Side.INSIDE


def test_nat_counts_ports_per_real_destination() -> None:
    """With NAT, a virtual-address flow and a direct flow to the same backend get different
    public ports (one allocator slot per address the server sees)."""
    box = Middlebox(get_appliance("nat-gw").with_overrides(
        {"backends": 2, "backend_ips": ["198.19.1.10", "198.19.2.10"]}))
    first = box.on_packet(tcp(CLIENT, 40000, box.appliance.vip, SPORT, "S", 1), Side.INSIDE, 0)
    backend = parsed(first[0].packet).dst
    second = box.on_packet(tcp(CLIENT, 40001, backend, SPORT, "S", 1), Side.INSIDE, 0)
    assert parsed(first[0].packet)[TCP].sport != parsed(second[0].packet)[TCP].sport
    box.expire(10_000.0)
    assert box.state_sizes()["port_slots"] == 0


# -- finding 8: bounded memory ---------------------------------------------------------------


def test_junk_flows_leave_no_state_once_they_expire() -> None:
    box = Middlebox(get_appliance("nat-gw"))
    for i in range(4_000):  # each to its own destination: one allocator slot each
        dst = f"198.19.{i // 250}.{i % 250 + 1}"
        box.on_packet(udp(CLIENT, 1024 + i, dst, 53), Side.INSIDE, i * 0.001)
    assert box.state_sizes()["port_slots"] == 4_000
    box.expire(10_000.0)
    sizes = box.state_sizes()
    assert sizes["flows"] == sizes["port_slots"] == sizes["timers"] == 0, sizes


def test_inspection_hosts_forget_and_rehash_memory_is_bounded() -> None:
    box = Middlebox(get_appliance("gwlb"))
    for i in range(500):
        _establish(box, 1024 + i, t=0.0)
    assert box.state_sizes()["target_state"] == 500
    box.expire(box.appliance.target_idle_timeout + 1)
    sizes = box.state_sizes()
    assert sizes["target_state"] == 0 and sizes["flows"] == 0 and sizes["timers"] == 0, sizes
    assert sizes["generations"] <= 65_536


def test_a_live_flow_cap_refuses_and_counts() -> None:
    box = Middlebox(get_appliance("nat-gw").with_overrides({"max_flows": 10}))
    for i in range(12):
        box.on_packet(udp(CLIENT, 2000 + i, SERVER, 53), Side.INSIDE, 0.0)
    assert len(box.flows) == 10 and box.counters["RejectedFlowCount"] == 2


def test_late_packets_do_not_flood_the_event_log() -> None:
    box = Middlebox(get_appliance("nat-gw"))
    junk = tcp(CLIENT, 3000, SERVER, SPORT, "A", 1, 1)
    for i in range(3_000):
        box.on_packet(bytearray(junk), Side.INSIDE, i * 0.001)
    events = [e for e in box.take_events() if e.kind in (EventKind.DROPPED, EventKind.RST_SENT)]
    assert box.counters["LatePackets"] == 3_000 and box.counters["RstSent"] == 3_000
    assert len(events) <= 2 * (20 + 3)  # the first twenty of each, then one per thousand


def test_the_heap_holds_one_entry_per_flow_whatever_the_packet_rate() -> None:
    """Packets move ``last_seen`` only; the flow's one deadline is re-armed when it comes up."""
    box = Middlebox(get_appliance("nat-gw"))
    _establish(box, 40000)
    ack = tcp(CLIENT, 40000, SERVER, SPORT, "A", 102, 501)
    for i in range(1, 2_000):
        box.on_packet(bytearray(ack), Side.INSIDE, i * 0.1)
    assert box.state_sizes()["timers"] == 1
    assert box.next_deadline() == 350.0  # early (it is re-armed when popped), never late
    box.expire(350.0)
    assert box.state_sizes()["timers"] == 1 and len(box.flows) == 1
    assert box.next_deadline() == 199.9 + 350.0


def test_public_addresses_never_outside_the_documentation_ranges() -> None:
    box = Middlebox(get_appliance("nat-gw"))
    assert all(ip_from_str(a)[:3] in (bytes([203, 0, 113]), bytes([198, 51, 100]))
               for a in box.appliance.public_ips)
    out = box.on_packet(tcp(CLIENT, 40000, SERVER, SPORT, "S", 1), Side.INSIDE, 0.0)
    assert IP(bytes(out[0].packet)).src in box.appliance.public_ips
