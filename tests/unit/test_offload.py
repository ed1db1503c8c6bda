"""GSO frames with partial checksums (PACKET_VNET_HDR): NAT must move only the address part.

The kernel hands the dataplane a frame whose TCP/UDP checksum field holds the pseudo-header
sum alone (``CHECKSUM_PARTIAL``); whoever finally sends it adds the segment. These tests
build such frames the way the kernel does, send them through the real engine and the
dataplane's fix-up, then complete the checksum as the receiving kernel would and check it.
"""

from __future__ import annotations

import pytest

from simulator.core.appliances import get_appliance
from simulator.core.engine import Middlebox
from simulator.core.events import Side
from simulator.core.packets import ones_complement_sum
from simulator.dataplane.frames import (
    ETH_HLEN,
    F_NEEDS_CSUM,
    VNET_HDR,
    complete_checksum,
    fix_partial_checksum,
    partial_checksum_at,
)
from tests.unit.helpers import CLIENT, PUBLIC, SERVER, checksums_valid, tcp, udp

ETH = bytes(6) + bytes(6) + b"\x08\x00"


def as_partial(packet: bytearray, csum_offset: int) -> tuple[bytearray, bytes]:
    """The packet as the sending kernel leaves it with checksum offload on, and its header."""
    ihl = (packet[0] & 0x0F) * 4
    length = len(packet) - ihl
    pseudo = bytes(packet[12:20]) + bytes([0, packet[9]]) + length.to_bytes(2, "big")
    packet[ihl + csum_offset:ihl + csum_offset + 2] = ones_complement_sum(pseudo).to_bytes(2, "big")
    vnet = VNET_HDR.pack(F_NEEDS_CSUM, 0, 0, 0, ETH_HLEN + ihl, csum_offset)
    return packet, vnet


def through_engine(packet: bytearray, vnet: bytes, side: Side, mbox: Middlebox) -> bytearray:
    at = partial_checksum_at(vnet)
    original = bytes(packet[:at + 2])
    (action,) = mbox.on_packet(packet, side, 0.0)
    assert action.packet is packet
    fix_partial_checksum(packet, original, at)
    return packet


@pytest.mark.parametrize("payload", [b"", b"x" * 1448, b"y" * 9001])
def test_partial_tcp_checksum_survives_source_nat(payload: bytes) -> None:
    mbox = Middlebox(get_appliance("nat-gw"))
    packet, vnet = as_partial(tcp(CLIENT, 40000, SERVER, 8080, "S", seq=1, payload=payload), 16)
    out = through_engine(packet, vnet, Side.INSIDE, mbox)
    assert bytes(out[12:16]) == bytes(map(int, PUBLIC.split(".")))
    # the receiving kernel completes the checksum over the rewritten segment: it must verify
    frame = complete_checksum(ETH + bytes(out), vnet)
    assert checksums_valid(frame[ETH_HLEN:])
    # and the engine's full-checksum update alone (port change folded in) would not
    wrong = tcp(CLIENT, 40000, SERVER, 8080, "S", seq=1, payload=payload)
    wrong, _ = as_partial(wrong, 16)
    Middlebox(get_appliance("nat-gw")).on_packet(wrong, Side.INSIDE, 0.0)
    assert bytes(wrong[20:22]) != (40000).to_bytes(2, "big")  # the NAT moved the port
    assert not checksums_valid(complete_checksum(ETH + bytes(wrong), vnet)[ETH_HLEN:])


def test_partial_checksums_both_ways_with_a_port_change() -> None:
    mbox = Middlebox(get_appliance("nat-gw"))
    # a NAT that must move the port: a second client address on the same source port
    first, vnet = as_partial(tcp(CLIENT, 5000, SERVER, 8080, "S", seq=1), 16)
    through_engine(first, vnet, Side.INSIDE, mbox)
    second, vnet = as_partial(tcp("198.18.1.11", 5000, SERVER, 8080, "S", seq=1), 16)
    out = through_engine(second, vnet, Side.INSIDE, mbox)
    public_port = int.from_bytes(out[20:22], "big")
    assert public_port != 5000
    assert checksums_valid(complete_checksum(ETH + bytes(out), vnet)[ETH_HLEN:])
    reply, vnet = as_partial(tcp(SERVER, 8080, PUBLIC, public_port, "SA", seq=9, ack=2,
                                 payload=b"z" * 3000), 16)
    back = through_engine(reply, vnet, Side.OUTSIDE, mbox)
    assert bytes(back[16:20]) == bytes([198, 18, 1, 11])
    assert int.from_bytes(back[22:24], "big") == 5000
    assert checksums_valid(complete_checksum(ETH + bytes(back), vnet)[ETH_HLEN:])


def test_partial_udp_checksum_survives_nat() -> None:
    mbox = Middlebox(get_appliance("nat-gw"))
    packet, vnet = as_partial(udp(CLIENT, 5353, SERVER, 53, b"q" * 700), 6)
    out = through_engine(packet, vnet, Side.INSIDE, mbox)
    assert checksums_valid(complete_checksum(ETH + bytes(out), vnet)[ETH_HLEN:])


def test_a_full_checksum_frame_is_left_alone_for_the_capture() -> None:
    frame = ETH + bytes(tcp(CLIENT, 1, SERVER, 2, "S"))
    assert complete_checksum(frame, bytes(VNET_HDR.size)) == frame
