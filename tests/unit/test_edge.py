"""Address aliases at the dataplane's edge (Docker's internal networks) and ARP answers."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import ARP, Ether

from simulator.core.edge import EdgeMap, docker_edge
from simulator.core.events import Side
from simulator.core.packets import ip_from_str
from tests.unit.helpers import CLIENT, PUBLIC, SERVER, checksums_valid, tcp

VIP, NAT_ALIAS = "198.18.1.3", "198.19.1.3"
EDGE = EdgeMap(inside={ip_from_str(VIP): ip_from_str(SERVER)},
               outside={ip_from_str(NAT_ALIAS): ip_from_str(PUBLIC)})
MY_MAC = bytes.fromhex("02aabbccdd01")


def test_the_client_side_talks_to_the_virtual_address_only() -> None:
    syn = tcp(CLIENT, 40000, VIP, 8080, "S", payload=b"hello")
    EDGE.to_model(Side.INSIDE, syn)
    assert IP(bytes(syn)).dst == SERVER and checksums_valid(syn)
    reply = tcp(SERVER, 8080, CLIENT, 40000, "SA")
    EDGE.to_wire(Side.INSIDE, reply)
    assert IP(bytes(reply)).src == VIP and IP(bytes(reply))[TCP].sport == 8080
    assert checksums_valid(reply)


def test_the_server_side_sees_the_nat_alias() -> None:
    out = tcp(PUBLIC, 1024, SERVER, 8080, "S")
    EDGE.to_wire(Side.OUTSIDE, out)
    assert IP(bytes(out)).src == NAT_ALIAS and checksums_valid(out)
    back = tcp(SERVER, 8080, NAT_ALIAS, 1024, "SA")
    EDGE.to_model(Side.OUTSIDE, back)
    assert IP(bytes(back)).dst == PUBLIC and checksums_valid(back)
    other = tcp(SERVER, 8080, "198.19.1.99", 1024, "SA")  # not an alias: untouched
    before = bytes(other)
    EDGE.to_model(Side.OUTSIDE, other)
    assert bytes(other) == before


def test_arp_is_answered_for_the_aliases_of_that_side_only() -> None:
    asker = "02:00:00:00:00:0a"
    request = bytes(Ether(src=asker, dst="ff:ff:ff:ff:ff:ff") /
                    ARP(op=1, hwsrc=asker, psrc=CLIENT, pdst=VIP))
    reply = EDGE.arp_reply(Side.INSIDE, request, MY_MAC)
    assert reply is not None
    arp = Ether(reply)[ARP]
    assert (arp.op, arp.psrc, arp.hwsrc, arp.pdst, arp.hwdst) == (
        2, VIP, "02:aa:bb:cc:dd:01", CLIENT, asker)
    assert Ether(reply).dst == asker
    assert EDGE.arp_reply(Side.OUTSIDE, request, MY_MAC) is None  # VIP is not on that side
    not_ours = bytes(Ether(src=asker) / ARP(op=1, hwsrc=asker, psrc=CLIENT, pdst="198.18.1.77"))
    assert EDGE.arp_reply(Side.INSIDE, not_ours, MY_MAC) is None


def test_only_the_simulated_hosts_packets_are_the_appliances() -> None:
    edge = EdgeMap(EDGE.inside, EDGE.outside,
                   peers={Side.INSIDE: frozenset({ip_from_str(CLIENT)})})
    assert edge.from_peer(Side.INSIDE, tcp(CLIENT, 1, VIP, 2, "S"))
    # Docker's host bridge, 198.18.1.1, sends ICMP redirects about our frames
    assert not edge.from_peer(Side.INSIDE, tcp("198.18.1.1", 1, VIP, 2, "S"))
    assert edge.from_peer(Side.OUTSIDE, tcp("198.19.1.99", 1, NAT_ALIAS, 2, "S"))  # no filter


def test_docker_edge_aliases_follow_the_servers_subnet() -> None:
    cfg = docker_edge(["203.0.113.1", "203.0.113.2"], CLIENT, SERVER, VIP)
    assert cfg.inside == {VIP: SERVER}
    assert cfg.outside == {"198.19.1.3": "203.0.113.1", "198.19.1.4": "203.0.113.2",
                           "198.19.1.5": CLIENT}
    assert cfg.peers == {"inside": (CLIENT,), "outside": (SERVER,)}


def test_the_dataplane_reads_the_edge_docker_edge_writes() -> None:
    edge = EdgeMap.from_config(docker_edge(["203.0.113.1", "203.0.113.2"], CLIENT, SERVER, VIP))
    assert edge.inside == {ip_from_str(VIP): ip_from_str(SERVER)}
    assert edge.peers == {Side.INSIDE: frozenset({ip_from_str(CLIENT)}),
                          Side.OUTSIDE: frozenset({ip_from_str(SERVER)})}
    packet = tcp("203.0.113.2", 1024, SERVER, 8080, "S")  # from the second public address
    edge.to_wire(Side.OUTSIDE, packet)
    assert bytes(packet[12:16]) == ip_from_str("198.19.1.4")


def test_the_docker_middlebox_reads_the_runners_configuration() -> None:
    """The runner sends the typed dataplane configuration, appliances whole (not names): it
    crosses into the container through the codec, edge and all, and the container's entry
    point names the chain from there."""
    from simulator.core.appliances import get_appliance  # noqa: PLC0415
    from simulator.core.configs import MiddleboxConfig, Port, decode, encode  # noqa: PLC0415
    from simulator.core.plan import middlebox_config  # noqa: PLC0415
    from simulator.world.docker_host import chain_title  # noqa: PLC0415

    sent = middlebox_config([get_appliance("nat-gw"), get_appliance("nlb")], 35.0,
                            Port("eth0", "02:00:00:00:00:01"), [Port("eth1", "02:00:00:00:00:02")],
                            edge=docker_edge(["203.0.113.1"], CLIENT, SERVER, VIP))
    received = decode(MiddleboxConfig, encode(sent))
    assert received == sent
    assert chain_title(received) == "nat-gw+nlb (from the runner)"
