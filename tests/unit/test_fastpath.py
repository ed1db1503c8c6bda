"""The compiled fast path against the engine: the same frames in, the same frames out.

Two dataplanes on datagram socket pairs take the same conversation at the same model times,
one with the fast path (``simulator/dataplane/fastpath.py``, ``_fastpath.c``) and one without. After
every step the frames each sent must be byte for byte the same, and at the end so must the
events, the counters and every flow's state. Conversations are drawn by hypothesis: TCP and
UDP flows that get hot, keepalive probes, FINs, RSTs, partial checksums, UDP without a
checksum, waits past the idle timeout (the late packet and its RST), on appliances with and
without NAT, with a backend pool, with RSTs at expiry and with probes that refresh nothing.
"""

from __future__ import annotations

import dataclasses
import io
import socket
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.core.appliances import Appliance, ExpiryAction, get_appliance
from simulator.core.chain import Chain
from simulator.core.clock import ManualClock
from simulator.core.engine import Middlebox
from simulator.core.events import Side
from simulator.core.flows import PACKETS
from simulator.core.packets import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    build_tcp,
    checksum_replace,
    internet_checksum,
)
from simulator.core.path_events import PathEvent, PathKind
from simulator.dataplane import fastpath
from simulator.dataplane.frames import PcapWriter
from simulator.dataplane.packet_loop import ETH_P_IP, Dataplane
from simulator.dataplane.wallclock import CompressedClock

MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
HEADER = MAC_B + MAC_A + ETH_P_IP
VNET = struct.Struct("=BBHHHH")
CLIENT = bytes([198, 18, 1, 10])
SERVER = bytes([198, 19, 1, 10])
BACKENDS = ("198.19.1.10", "198.19.1.11")


class Twin:
    """One dataplane whose ports are datagram socket pairs, with or without the fast path."""

    def __init__(self, appliance: Appliance, fast: bool) -> None:
        self.clock = ManualClock()
        outside = max(1, appliance.backends)
        self.pairs = {Side.INSIDE: [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)],
                      Side.OUTSIDE: [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
                                     for _ in range(outside)]}
        for pairs in self.pairs.values():
            for a, b in pairs:
                a.setblocking(False)
                b.setblocking(False)
        ports = {side: [(a, HEADER) for a, _ in pairs] for side, pairs in self.pairs.items()}
        engine = Middlebox(appliance)
        self.plane = Dataplane(engine, self.clock, ports, io.StringIO())
        self.fast = fastpath.FastForwarder(engine, 0.0, 1.0, ports) if fast else None
        self.plane.fast = self.fast

    def step(self, t: float, side: Side, port: int, frame: bytes) -> list[tuple[Side, int, bytes]]:
        """Advance to ``t``, let due timers fire, take ``frame`` in: what was sent."""
        self.clock.set(t)
        if self.fast is not None:
            self.fast.pin(t)
        # the frame is there before the loop's own expiry pass, as when a packet arrives
        # after a deadline: the engine must expire first, and the fast path leave it to it
        self.pairs[side][port][1].send(frame)
        self.plane.drain(side, self.pairs[side][port][0])
        self.plane.expire_due()
        out = []
        for s, pairs in self.pairs.items():
            for i, (_, peer) in enumerate(pairs):
                while True:
                    try:
                        out.append((s, i, peer.recv(70_000)))
                    except BlockingIOError:
                        break
        return out

    def state(self) -> dict[str, Any]:
        self.plane._flush_events()
        assert isinstance(self.plane.out, io.StringIO)
        engine = self.plane.engine
        assert isinstance(engine, Middlebox)
        flows = sorted((f.id, str(f.state), f.last_seen, f.timeout, list(f.dirs))
                       for f in engine.flows)
        return {"counters": self.plane.counters(), "events": self.plane.out.getvalue(),
                "flows": flows, "malformed": dict(self.plane.malformed)}

    def close(self) -> None:
        for pairs in self.pairs.values():
            for a, b in pairs:
                a.close()
                b.close()


def _udp(src: bytes, sport: int, dst: bytes, dport: int, payload: bytes,
         checksum: bool) -> bytearray:
    total = 28 + len(payload)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0, 64, 17, 0, src, dst))
    struct.pack_into("!H", ip, 10, internet_checksum(ip))
    udp = bytearray(struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)
    if checksum:
        pseudo = src + dst + struct.pack("!BBH", 0, 17, len(udp))
        struct.pack_into("!H", udp, 6, internet_checksum(pseudo + udp) or 0xFFFF)
    return ip + udp


@dataclasses.dataclass
class Conversation:
    """One client socket's conversation, kept valid as TCP goes (sequence numbers move)."""

    proto: int
    cport: int
    server: bytes
    c_seq: int = 1000
    s_seq: int = 9000
    outside: tuple[int, bytes, int, bytes, int] | None = None
    """Where the server side sees it: (port index, server address, port, public address,
    port), read from the first frame that crossed."""

    def frame(self, action: str, n: int, partial: bool,
              checksum: bool) -> tuple[Side, int, bytes] | None:
        """``action``: c_ or s_ (who sends) and data, ack, probe, fin, rst, syn or synack."""
        from_client = action.startswith("c")
        if from_client:
            src, sport, dst, dport, port = CLIENT, self.cport, self.server, 80, 0
        elif self.outside is None:
            return None  # the server cannot answer what never reached it
        else:
            port, src, sport, dst, dport = self.outside
        side = Side.INSIDE if from_client else Side.OUTSIDE
        payload = bytes(i % 251 for i in range(n))
        if self.proto == 17:
            packet = _udp(src, sport, dst, dport, payload, checksum)
            csum_offset = 6
        else:
            seq = self.c_seq if from_client else self.s_seq
            ack = self.s_seq if from_client else self.c_seq
            kind = action[2:]
            flags = {"data": ACK | PSH, "ack": ACK, "probe": ACK, "fin": FIN | ACK,
                     "rst": RST | ACK, "syn": SYN, "synack": SYN | ACK}[kind]
            if kind == "probe":
                seq, payload = seq - 1, payload[:1]
            elif kind != "data":
                payload = b""
            packet = build_tcp(src, sport, dst, dport, seq & 0xFFFFFFFF, ack, flags, 64240,
                               payload=payload)
            advance = (len(payload) if kind != "probe" else 0) + bool(flags & (SYN | FIN))
            if from_client:
                self.c_seq = (self.c_seq + advance) & 0xFFFFFFFF
            else:
                self.s_seq = (self.s_seq + advance) & 0xFFFFFFFF
            csum_offset = 16
        vnet = VNET.pack(1, 0, 0, 0, 34, csum_offset) if partial else bytes(VNET.size)
        return side, port, vnet + HEADER + bytes(packet)

    def learn(self, out: list[tuple[Side, int, bytes]]) -> None:
        """Where the server sees this conversation: the first frame it sent outside."""
        for side, port, frame in out:
            packet = frame[24:]
            if self.outside is None and side is Side.OUTSIDE and packet[9] == self.proto:
                sport, dport = struct.unpack_from("!HH", packet, (packet[0] & 0x0F) * 4)
                self.outside = (port, bytes(packet[16:20]), dport, bytes(packet[12:16]), sport)


ACTIONS = st.sampled_from(["c_data"] * 6 + ["s_data"] * 6 + [
    "c_ack", "s_ack", "c_probe", "s_probe", "c_fin", "s_fin", "c_rst", "s_rst", "c_syn"])
WAITS = st.sampled_from([0.0, 0.0, 0.001, 0.01, 0.2, 0.6, 1.5, 30.0, 400.0])
STEP = st.tuples(st.integers(0, 1), ACTIONS, st.sampled_from([0, 1, 2, 64, 1400]), WAITS,
                 st.booleans(), st.booleans())


def appliances() -> dict[str, Appliance]:
    nlb = get_appliance("nlb")
    return {
        "nat-gw": get_appliance("nat-gw"),
        "nlb": nlb,
        "nlb-tls": get_appliance("nlb-tls"),
        "global-accelerator": get_appliance("global-accelerator"),
        "azure-nat-gw": get_appliance("azure-nat-gw"),
        "nlb-two-backends": dataclasses.replace(nlb, backends=2, backend_ips=BACKENDS),
        "nat-gw-rst-both": dataclasses.replace(get_appliance("nat-gw"),
                                               on_expiry=ExpiryAction.RST_BOTH),
    }


def converse(appliance: Appliance, protos: tuple[int, int],
             steps: list[tuple[int, str, int, float, bool, bool]]) -> Twin:
    """Run the conversation through both twins, comparing after every step; the fast one."""
    fast, pure = Twin(appliance, True), Twin(appliance, False)
    server = bytes([198, 19, 0, 100]) if appliance.backends > 1 else SERVER
    convs = [Conversation(protos[0], 40000, server), Conversation(protos[1], 40001, server)]
    t = 0.0

    def step(conv: Conversation, action: str, n: int, partial: bool, checksum: bool) -> None:
        made = conv.frame(action, n, partial, checksum)
        if made is None:
            return
        got, expected = fast.step(t, *made), pure.step(t, *made)
        assert got == expected, f"{action} at t={t}"
        if action.startswith("c"):
            conv.learn(expected)

    try:
        for conv in convs:  # every conversation opens (a TCP one with its handshake)
            step(conv, "c_syn" if conv.proto == 6 else "c_data", 10, False, True)
            if conv.proto == 6:
                step(conv, "s_synack", 0, False, True)
                step(conv, "c_ack", 0, False, True)
        for which, action, n, wait, partial, checksum in steps:
            t += wait
            step(convs[which], action, n, partial and action.endswith("data"), checksum)
        assert fast.state() == pure.state()
        return fast
    finally:
        pure.close()
        fast.close()


def test_the_compiled_module_is_built() -> None:
    # `make setup` builds it; the tests below would all fail without it, this one says why
    assert fastpath.available(), "simulator.dataplane._fastpath is not built: run make setup"
    from simulator.dataplane import _fastpath  # noqa: PLC0415 (after the check that says why)

    assert (fastpath.DRAINED, fastpath.BUDGET_SPENT, fastpath.SEND_FAILED) \
        == (_fastpath.DRAINED, _fastpath.BUDGET_SPENT, _fastpath.SEND_FAILED)


@pytest.mark.parametrize("name", list(appliances()))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(protos=st.tuples(st.sampled_from([6, 17]), st.sampled_from([6, 17])),
       steps=st.lists(STEP, min_size=5, max_size=60), warm=st.booleans(),
       partial=st.booleans())
def test_the_fast_path_sends_what_the_engine_sends(name: str, protos: tuple[int, int],
                                                   steps: list[Any], warm: bool,
                                                   partial: bool) -> None:
    converse(appliances()[name], protos, hot_then(steps, partial) if warm else steps)


def hot_then(tail: list[tuple[int, str, int, float, bool, bool]],
             partial: bool = False) -> list[Any]:
    """Twelve exchanges of data on conversation 0 (it is handed to the fast path), then
    ``tail``."""
    data = [(0, "c_data", 64, 0.01, partial, True), (0, "s_data", 64, 0.01, partial, True)]
    return data * 12 + tail


def test_a_hot_flow_is_forwarded_by_the_fast_path() -> None:
    twin = converse(get_appliance("nat-gw"), (6, 6), hot_then([]))
    assert twin.fast is not None
    assert len(twin.fast) == 1
    assert twin.fast.forwarded() > 10  # the comparison above did cover the fast path


def test_a_hot_flow_that_expired_is_answered_with_an_rst() -> None:
    # the flow is held by the fast path, then idle past 350 s: the next client segment (a
    # bare ACK: no data event due to send it to the engine anyway) must reach the engine,
    # which has expired the flow (a late packet: an RST back)
    twin = converse(get_appliance("nat-gw"), (6, 6),
                    hot_then([(0, "c_ack", 0, 400.0, False, True)]))
    state = twin.state()
    assert state["counters"]["IdleTimeoutCount"] == 2  # both conversations were idle
    assert state["counters"]["RstSent"] == 1
    assert twin.fast is not None and len(twin.fast) == 0


def test_probes_and_data_refresh_a_held_flow_as_the_engine_does() -> None:
    # keepalive probes every 300 s keep the hot flow alive past 350 s; each is reported
    tail = [(0, "c_probe", 0, 300.0, False, True), (1, "s_data", 64, 0.0, False, True)] * 3
    twin = converse(get_appliance("nat-gw"), (6, 6), hot_then(tail))
    state = twin.state()
    assert state["counters"]["KeepaliveProbes"] == 3
    assert "IdleTimeoutCount" not in state["counters"]
    engine = twin.plane.engine
    assert isinstance(engine, Middlebox)
    flow = next(iter(engine.flows))
    assert flow.dirs[PACKETS] >= 12 and flow.seq(0) is not None


@pytest.mark.parametrize("name", ["nat-gw", "nlb-two-backends"])
def test_partial_checksums_are_finished_as_the_dataplane_does(name: str) -> None:
    twin = converse(appliances()[name], (6, 17), hot_then([], partial=True))
    assert twin.fast is not None and twin.fast.forwarded() > 10


def test_a_udp_checksum_that_becomes_zero_is_sent_as_all_ones() -> None:
    # RFC 768: zero means "no checksum", so a computed zero is sent as 0xFFFF. On a hot UDP
    # flow, a datagram whose checksum the NAT update takes to zero, through both paths.
    fast, pure = Twin(get_appliance("nat-gw"), True), Twin(get_appliance("nat-gw"), False)
    try:
        warm = bytes(VNET.size) + HEADER + bytes(_udp(CLIENT, 40000, SERVER, 80, b"y" * 64,
                                                      True))
        for i in range(12):
            assert fast.step(i * 0.01, Side.INSIDE, 0, warm) \
                == pure.step(i * 0.01, Side.INSIDE, 0, warm)
        assert fast.fast is not None and len(fast.fast) == 1
        engine = pure.plane.engine
        assert isinstance(engine, Middlebox)
        outside = next(iter(engine.flows)).outside
        old = CLIENT + (40000).to_bytes(2, "big")
        new = outside[3] + outside[4].to_bytes(2, "big")
        checksum = next(c for c in range(1, 0x10000) if checksum_replace(c, old, new) == 0)
        packet = _udp(CLIENT, 40000, SERVER, 80, b"x" * 64, False)
        struct.pack_into("!H", packet, 26, checksum)
        frame = bytes(VNET.size) + HEADER + bytes(packet)
        before = fast.fast.forwarded()
        got, expected = fast.step(0.5, Side.INSIDE, 0, frame), pure.step(0.5, Side.INSIDE, 0,
                                                                           frame)
        assert fast.fast.forwarded() == before + 1
        assert got == expected
        assert expected[0][2][24 + 26:24 + 28] == b"\xff\xff"
    finally:
        fast.close()
        pure.close()


def test_an_rst_ends_a_held_flow_for_good() -> None:
    # the RST goes to the engine, which removes the flow; the flow it tracked must not be
    # handed back to the fast path, or the next segment would cross instead of meeting an RST
    twin = converse(get_appliance("nat-gw"), (6, 17),
                    hot_then([(0, "c_rst", 0, 0.1, False, True), (0, "c_ack", 0, 0.1, False,
                                                                  True)]))
    assert twin.fast is not None and len(twin.fast) == 0
    assert twin.state()["counters"]["RstSent"] == 1


def test_a_fin_takes_the_flow_out_of_the_fast_path() -> None:
    twin = converse(get_appliance("nat-gw"), (6, 6), hot_then([(0, "c_fin", 0, 0.1, False,
                                                                 True)]))
    assert twin.fast is not None and len(twin.fast) == 0
    assert twin.state()["counters"]["FinSeen"] == 1


def test_forgetting_removed_flows_is_what_keeps_the_verdict() -> None:
    # conversation 1's segment at 400 s makes the engine expire both flows; conversation 0's
    # bare ACK comes next, when no timer is due any more. Without the engine's removals
    # reaching the fast path, the expired flow's entries would forward it (no RST): the
    # comparison must catch that.
    late = hot_then([(1, "c_ack", 0, 400.0, False, True), (0, "c_ack", 0, 0.0, False, True)])
    twin = converse(get_appliance("nat-gw"), (6, 6), late)
    assert twin.state()["counters"]["RstSent"] == 2
    original = fastpath.FastForwarder.forget_removed
    fastpath.FastForwarder.forget_removed = lambda self: None  # type: ignore[method-assign]
    try:
        with pytest.raises(AssertionError):
            converse(get_appliance("nat-gw"), (6, 6), late)
    finally:
        fastpath.FastForwarder.forget_removed = original  # type: ignore[method-assign]



def test_a_bare_ack_refreshes_nothing_where_only_data_does() -> None:
    # Global Accelerator: a segment without data does not refresh the idle timer, on the
    # fast path as in the engine (the comparison covers last_seen)
    twin = converse(get_appliance("global-accelerator"), (6, 6),
                    hot_then([(0, "c_ack", 0, 5.0, False, True),
                              (0, "s_ack", 0, 5.0, False, True)]))
    assert twin.fast is not None and twin.fast.forwarded() > 10
    engine = twin.plane.engine
    assert isinstance(engine, Middlebox)
    assert max(f.last_seen for f in engine.flows) < 1.0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(proto=st.sampled_from([6, 17]), partial=st.booleans(),
       flips=st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), min_size=1,
                      max_size=4),
       cut=st.integers(0, 120), side=st.sampled_from([Side.INSIDE, Side.OUTSIDE]))
def test_mangled_frames_of_a_hot_flow_meet_the_same_fate(proto: int, partial: bool,
                                                         flips: list[tuple[int, int]],
                                                         cut: int, side: Side) -> None:
    # a frame of a flow the fast path holds, with bytes changed anywhere in its headers and
    # perhaps cut short: the C side must refuse whatever the engine's parse refuses and
    # forward the rest as the engine does (and never read past the frame)
    fast, pure = Twin(get_appliance("nat-gw"), True), Twin(get_appliance("nat-gw"), False)
    conv = Conversation(proto, 40000, SERVER)
    try:
        def step(t: float, made: tuple[Side, int, bytes] | None) -> None:
            assert made is not None
            out = fast.step(t, *made)
            assert out == pure.step(t, *made)
            conv.learn(out)

        if proto == 6:
            for action in ("c_syn", "s_synack", "c_ack"):
                step(0.0, conv.frame(action, 0, False, True))
        for i in range(10):
            step(0.01 * i, conv.frame("c_data", 64, partial, True))
            step(0.01 * i, conv.frame("s_data", 64, partial, True))
        assert fast.fast is not None and len(fast.fast) == 1
        made = conv.frame("c_data" if side is Side.INSIDE else "s_data", 64, partial, True)
        assert made is not None
        frame = bytearray(made[2])
        for at, value in flips:
            frame[10 + at] = value  # past the virtio-net header: Ethernet, IP, TCP/UDP
        if cut:
            frame = frame[:len(frame) - cut]
        step(0.5, (made[0], made[1], bytes(frame)))
        assert fast.state() == pure.state()
    finally:
        fast.close()
        pure.close()


def test_the_fast_path_stays_off_where_the_engine_must_see_every_frame(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[socket.socket] = []
    pcaps: list[PcapWriter] = []

    def why_off(engine: Middlebox | Chain, pcap: bool = False) -> str | None:
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(2)]
        opened.extend(s for pair in pairs for s in pair)
        ports = {Side.INSIDE: [(pairs[0][0], HEADER)], Side.OUTSIDE: [(pairs[1][0], HEADER)]}
        writer = PcapWriter(tmp_path / f"{len(pcaps)}.pcap") if pcap else None
        pcaps.extend([writer] if writer else [])
        plane = Dataplane(engine, CompressedClock(10.0), ports, io.StringIO(), writer)
        why = plane.use_fast_path()
        assert (plane.fast is None) == (why is not None)
        return why

    try:
        assert why_off(Middlebox(get_appliance("nat-gw"))) is None
        assert "pcap" in str(why_off(Middlebox(get_appliance("nat-gw")), pcap=True))
        chain = Chain([get_appliance("nat-gw"), get_appliance("nlb")])
        assert "chain" in str(why_off(chain))
        with_events = Middlebox(get_appliance("nat-gw"))
        with_events.path_events([PathEvent(PathKind.BLACKHOLE, at=10, duration=5)])
        assert "path events" in str(why_off(with_events))
        monkeypatch.setenv("NATSIM_FASTPATH", "0")
        assert why_off(Middlebox(get_appliance("nat-gw"))) == "NATSIM_FASTPATH=0"
    finally:
        for sock in opened:
            sock.close()
        for writer in pcaps:
            writer.close()
