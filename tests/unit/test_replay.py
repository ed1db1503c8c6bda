"""``natsim replay``: small captures built with scapy, each checked against the appliance's
rules; bad input gives a clear error or a counted skip, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Ether
from scapy.packet import Packet, Raw
from scapy.utils import PcapNgWriter, wrpcap

from simulator.cli import main as cli
from simulator.core.appliances import get_appliance
from simulator.core.replay import Fate, Replay
from simulator.dataplane.capture import CaptureError, CaptureStats, read

C, S = "198.18.1.10", "198.19.1.10"
T0 = 1_700_000_000.0
MAC = "02:00:00:00:00:01"


def seg(t: float, src: str, dst: str, sport: int, dport: int, flags: str, seq: int,
        ack: int = 0, payload: bytes = b"") -> Packet:
    ip = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    pkt = Ether(dst=MAC, src=MAC) / ip / TCP(sport=sport, dport=dport, flags=flags, seq=seq,
                                            ack=ack)
    if payload:
        pkt = pkt / Raw(payload)
    pkt.time = T0 + t
    return pkt


def conversation(late_answer_at: float | None = 400.0, probes_every: float | None = None,
                 until: float = 400.0, C: str = C, S: str = S) -> list[Packet]:  # noqa: N803
    """Handshake and request at 0; optional probes; the server's answer at ``late_answer_at``
    (a server-side capture sees it), and the RST a NAT Gateway sends back."""
    pkts = [seg(0.0, C, S, 40000, 8080, "S", 100),
            seg(0.01, S, C, 8080, 40000, "SA", 500, 101),
            seg(0.02, C, S, 40000, 8080, "A", 101, 501),
            seg(0.03, C, S, 40000, 8080, "PA", 101, 501, b"GET /\n"),
            seg(0.04, S, C, 8080, 40000, "A", 501, 107)]
    if probes_every:
        t = probes_every
        while t < until:
            pkts += [seg(t, C, S, 40000, 8080, "A", 106, 501),
                     seg(t + 0.01, S, C, 8080, 40000, "A", 501, 107)]
            t += probes_every
    if late_answer_at is not None:
        pkts.append(seg(late_answer_at, S, C, 8080, 40000, "PA", 501, 107, b"answer\n"))
    return pkts


def replayed(tmp_path: Path, pkts: list[Packet], appliance: str = "nat-gw") -> Replay:
    path = tmp_path / "c.pcap"
    wrpcap(str(path), pkts)
    replay = Replay(get_appliance(appliance))
    replay.feed_all(read(path))
    return replay


def test_a_flow_idle_400_s_without_keepalive_expires_and_its_late_answer_is_reset(
        tmp_path: Path) -> None:
    (conn,) = replayed(tmp_path, conversation()).connections.values()
    assert conn.fate is Fate.LATE_RST
    assert conn.expired_at == pytest.approx(350.04, abs=0.01)
    assert conn.late_at == pytest.approx(400) and conn.late_from == "server"
    assert conn.longest_gap == pytest.approx(399.96, abs=0.01)
    ((rst_at, rst_to),) = conn.appliance_rsts
    assert rst_at == pytest.approx(400) and rst_to == "server"


def test_keepalive_every_300_s_keeps_it(tmp_path: Path) -> None:
    (conn,) = replayed(tmp_path, conversation(probes_every=300)).connections.values()
    assert conn.fate is Fate.UNTOUCHED
    assert len(conn.probes) == 1 and conn.probes[0][1] < 350


def test_probes_too_rare_do_not_save_it(tmp_path: Path) -> None:
    pkts = conversation(late_answer_at=None, probes_every=360, until=700)
    (conn,) = replayed(tmp_path, pkts).connections.values()
    assert conn.fate is Fate.LATE_RST and conn.late_from == "client"
    assert conn.late_at == pytest.approx(360)


def test_a_replayed_connection_is_drawn_as_a_run_s_flow(tmp_path: Path) -> None:
    from simulator.cli.replay import replay_events  # noqa: PLC0415

    pkts = conversation(late_answer_at=None, probes_every=360, until=700)
    (conn,) = replayed(tmp_path, pkts).connections.values()
    events = [(round(e.t), e.kind, e.raw.get("refreshed"), e.raw.get("sender"))
              for e in replay_events(conn, 350.0)]
    # the flow's bar starts with the connection, not at its expiry (the request at 0.04 s
    # is its last activity); the probe at 360 s came too late to count and is the late
    # packet; the appliance resets the client, then the server that answered the probe
    assert events == [(0, "flow_created", None, None), (0, "data", None, None),
                      (350, "flow_expired", None, None), (360, "keepalive", False, None),
                      (360, "late_packet", None, "client"), (360, "rst_sent", None, None),
                      (360, "rst_sent", None, None)]
    rsts = [e.raw["side"] for e in replay_events(conn, 350.0) if e.kind == "rst_sent"]
    assert rsts == ["inside", "outside"]


def test_global_accelerator_does_not_count_the_probes(tmp_path: Path) -> None:
    pkts = conversation(probes_every=300)
    (conn,) = replayed(tmp_path, pkts, "global-accelerator").connections.values()
    # the last *data* was the request at 0.03 s: the server's bare ACK did not count either
    assert conn.fate is Fate.LATE_RST and conn.expired_at == pytest.approx(340.03, abs=0.001)


def test_a_udp_flow_idle_150_s_behind_an_nlb(tmp_path: Path) -> None:
    def dgram(t: float, src: str, dst: str, sport: int, dport: int) -> Packet:
        p = Ether(dst=MAC, src=MAC) / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport)
        p = p / Raw(b"x")
        p.time = T0 + t
        return p

    pkts = [dgram(0, C, S, 5000, 53), dgram(150, S, C, 53, 5000)]
    (conn,) = replayed(tmp_path, pkts, "nlb").connections.values()
    assert conn.expired_at == pytest.approx(120)
    assert conn.fate is Fate.LATE_DROP and conn.late_from == "server"


def test_the_captures_own_rst_is_explained(tmp_path: Path) -> None:
    """A client-side capture: the client's FIN at 900 s, and the RST the NAT GW sent back."""
    pkts = conversation(late_answer_at=None)
    pkts += [seg(900.0, C, S, 40000, 8080, "FA", 107, 501),
             seg(900.001, S, C, 8080, 40000, "R", 501)]
    (conn,) = replayed(tmp_path, pkts).connections.values()
    assert conn.fate is Fate.LATE_RST
    (line,) = conn.explanations()
    assert "explained by the appliance" in line and "NOT" not in line


def test_an_rst_the_appliance_would_not_send_is_not_explained(tmp_path: Path) -> None:
    pkts = [*conversation(late_answer_at=None)[:5], seg(10.0, S, C, 8080, 40000, "R", 501)]
    (conn,) = replayed(tmp_path, pkts).connections.values()
    assert conn.fate is Fate.UNTOUCHED and "NOT explained" in conn.explanations()[0]


def test_retransmissions_after_the_expiry_are_explained_by_a_silent_drop(
        tmp_path: Path) -> None:
    pkts = conversation(late_answer_at=400)
    pkts += [seg(t, S, C, 8080, 40000, "PA", 501, 107, b"answer\n") for t in (400.2, 400.6)]
    (conn,) = replayed(tmp_path, pkts, "gwlb").connections.values()
    assert conn.fate is Fate.LATE_DROP
    assert "explained (the appliance drops them)" in conn.explanations()[-1]


def test_cli_json_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.pcap"
    wrpcap(str(path), conversation())
    assert cli.main(["replay", str(path), "--appliance", "nat-gw", "--side", "outside",
                     "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["summary"]["late-rst"] == 1
    assert report["connections"][0]["verdict"] == "late-rst"
    assert cli.main(["replay", str(path), "--appliance", "nat-gw"]) == 0
    text = capsys.readouterr().out
    assert "summary: 1 late-rst" in text and "answered by an RST" in text
    # an override changes the verdict: with a 1000 s timeout nothing happens
    assert cli.main(["replay", str(path), "--appliance", "nlb", "--set",
                     "tcp_idle_timeout=1000", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["untouched"] == 1


def test_pcapng_and_linux_cooked_captures(tmp_path: Path) -> None:
    cooked = []
    for p in conversation():
        c = CookedLinux() / p[IP]
        c.time = p.time
        cooked.append(c)
    path = tmp_path / "c.pcap"
    wrpcap(str(path), cooked)
    replay = Replay(get_appliance("nat-gw"))
    replay.feed_all(read(path))
    assert [c.fate for c in replay.connections.values()] == [Fate.LATE_RST]
    ng = tmp_path / "c.pcapng"
    with PcapNgWriter(str(ng)) as writer:
        for p in conversation():
            writer.write(p)
    replay = Replay(get_appliance("nat-gw"))
    replay.feed_all(read(ng))
    assert [c.fate for c in replay.connections.values()] == [Fate.LATE_RST]


def test_bad_input_is_a_clear_error_or_a_counted_skip(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture")
    with pytest.raises(CaptureError, match="not a pcap or pcapng"):
        list(read(junk))
    assert cli.main(["replay", str(junk), "--appliance", "nat-gw"]) == 2
    assert "not a pcap or pcapng" in capsys.readouterr().err
    good = tmp_path / "good.pcap"
    wrpcap(str(good), conversation())
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(good.read_bytes()[:-20])
    stats = CaptureStats()
    assert len(list(read(cut, stats))) == len(conversation()) - 1
    assert stats.skipped["truncated at the end"] == 1
    ipv6 = tmp_path / "v6.pcap"
    wrpcap(str(ipv6), [Ether(dst=MAC, src=MAC, type=0x0806) / Raw(b"x" * 40),
                       Ether(dst=MAC, src=MAC, type=0x86DD) / Raw(b"\x60" + bytes(60))])
    stats = CaptureStats()
    assert len(list(read(ipv6, stats))) == 1  # IPv6 is handed on, ARP is not
    assert stats.skipped == {"not IP": 1}
    other = tmp_path / "other.pcap"
    other.write_bytes(good.read_bytes()[:20] + (147).to_bytes(4, "little"))
    with pytest.raises(CaptureError, match="link type 147"):
        list(read(other))
    assert cli.main(["replay", str(good), "--appliance", "nat-gateway"]) == 2
    assert cli.main(["replay", str(good), "--appliance", "nat-gw", "--set", "colour=1"]) == 2
    assert cli.main(["replay", str(tmp_path / "missing.pcap"), "--appliance", "nat-gw"]) == 2


def test_pictures_are_never_drawn_through_a_planted_link(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    from bench.fuzz_inputs import conversation, pcap_bytes  # noqa: PLC0415

    capture = tmp_path / "c.pcap"
    capture.write_bytes(pcap_bytes(conversation()))  # one connection the NAT would kill
    victim = tmp_path / "victim"
    victim.write_text("precious")
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    (pictures / "flow1.svg").symlink_to(victim)
    assert cli.main(["replay", str(capture), "--appliance", "nat-gw", "--pictures",
                     str(pictures)]) == cli.EXIT_USAGE
    assert "symbolic link" in capsys.readouterr().err
    assert victim.read_text() == "precious"
    (pictures / "flow1.svg").unlink()
    assert cli.main(["replay", str(capture), "--appliance", "nat-gw", "--pictures",
                     str(pictures)]) == 0
    assert {"flow1.png", "flow1.svg"} <= {p.name for p in pictures.iterdir()}
    assert f"{pictures / 'flow1.svg'}, {pictures / 'flow1.png'}" in capsys.readouterr().err
    # the picture is of a capture: its own time, no speed; the flow, its late packet, the RST
    svg = (pictures / "flow1.svg").read_text()
    assert "capture time (s)" in svg and "wall time" not in svg
    assert "flow in the table" in svg and "late packet from the" in svg and "RST" in svg


C6, NAT64_S = "2001:db8:1::10", "64:ff9b::c613:10a"


def test_an_ipv6_client_through_nat64_is_replayed_as_an_ipv4_one_would_be(
        tmp_path: Path) -> None:
    """The client's side of a NAT64 path, captured by ``tcpdump -i any`` (Linux cooked v2):
    the same expiry and the same RST as for IPv4, the RST in IPv6."""
    cooked = [CookedLinuxV2(proto=0x86DD) / p[IPv6] for p in conversation(C=C6, S=NAT64_S)]
    for packet, original in zip(cooked, conversation(C=C6, S=NAT64_S), strict=True):
        packet.time = original.time
    (conn,) = replayed(tmp_path, cooked).connections.values()
    assert conn.name == f"TCP [{C6}]:40000 -> [{NAT64_S}]:8080"
    assert conn.fate is Fate.LATE_RST and conn.expired_at == pytest.approx(350.04, abs=0.01)
    ((rst_at, rst_to),) = conn.appliance_rsts
    assert rst_at == pytest.approx(400) and rst_to == "server"

