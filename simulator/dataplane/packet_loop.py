"""The middlebox's I/O loop: AF_PACKET sockets on its two veths, driving the pure engine.

This is the only module with per-packet system calls. It reads Ethernet frames from the
``inside`` and ``outside`` interfaces, hands the IPv4 packet inside each to
:meth:`Middlebox.on_packet` with the compressed clock's model time, and writes back whatever
the engine returns, with the Ethernet header of the side it leaves by. Between packets it
sleeps in ``epoll`` until the engine's next idle deadline (converted to wall time), so that
an expiry is logged when it happens rather than when the next packet shows up.

Each socket sets ``PACKET_IGNORE_OUTGOING``: an AF_PACKET socket otherwise also receives the
frames its own interface sends, and would feed our RSTs back into the engine.

Each socket also sets ``PACKET_VNET_HDR``, so the veths keep their offloads on and a bulk
transfer crosses the middlebox as 64 KB GSO frames, one system call each way per frame
instead of per 1,500-byte segment (``make bench``: several times the throughput); every
frame then starts with a virtio-net header (``frames.py``: partial checksums). Frames the
engine builds itself (RSTs, probes) have full checksums and an all-zero header.

The frames of hot established flows are forwarded by the compiled fast path
(``fastpath.py``) when it is on, under the engine's rules and with its accounting folded
back before the engine reads a flow again; every other frame comes here.

Output: one JSON line per engine event on stdout (the runner reads them live), an optional
pcap of every frame received and sent (timestamps in *model* time, so a capture shows the
real 350-second gaps), and the engine's counters when the process is told to stop.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import faulthandler
import gc
import itertools
import json
import os
import select
import signal
import socket
import struct
import sys
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import IO

from simulator.core.chain import Chain
from simulator.core.clock import ModelClock
from simulator.core.configs import ConfigError, MiddleboxConfig, Port, decode
from simulator.core.edge import EdgeMap, sender_address
from simulator.core.engine import Middlebox, Transmit
from simulator.core.events import Side
from simulator.core.jsonvalue import JsonObject
from simulator.core.messages import (
    HeldFlow,
    Kind,
    Message,
    MiddleboxReady,
    MiddleboxStopped,
    Role,
)
from simulator.core.packets import endpoint
from simulator.dataplane import fastpath
from simulator.dataplane.background_file import BackgroundFile
from simulator.dataplane.control import CONTROL_EVERY, ControlFile
from simulator.dataplane.frames import (
    ETH_HLEN,
    ETH_P_IPV6,
    F_NEEDS_CSUM,
    MAX_FRAME,
    NO_OFFLOAD,
    SOL_PACKET,
    VNET_LEN,
    PcapWriter,
    fix_partial_checksum,
    is_neighbour_solicitation,
    mac_bytes,
    neighbour_advertisement,
    open_port,
    partial_checksum_at,
    partial_checksum_fits,
)
from simulator.dataplane.tuning import steady_under_load
from simulator.dataplane.wallclock import CompressedClock
from simulator.support.results import create_new

ETH_P_IP = b"\x08\x00"
PACKET_STATISTICS = 6
TPACKET_STATS = struct.Struct("=II")
UNKNOWN_MAC = bytes(6)
BATCH = 64
GATHER_ABOVE = 4096
"""Frames longer than this (GSO frames of up to 64 KB) are handed to the kernel in their
three pieces with ``sendmsg`` instead of being joined first: joining copied each twice
(3.8 us for 65,000 bytes), where ``sendmsg`` costs about 0.7 us more than ``send`` (so
small frames are still joined)."""
STATUS_EVERY = 0.25
STATUS_FLOWS = 200
YOUNG_GC_EVERY = 1.0
MALFORMED_LOGGED = 5
HEARTBEAT_EVERY = 0.5
BUSY_FRAMES = 16
BUSY_PAUSE = 100e-6
"""With the fast path on, a pass of the loop that forwarded BUSY_FRAMES frames or more is
followed by a pause of BUSY_PAUSE seconds, as a network card moderates its interrupts: the
frames that arrive meanwhile are then taken in one pass instead of one wake-up each, and
the receiver behind the middlebox, on the same two cores, gets the CPU to read what was
sent to it. Measured (``make bench``'s 64-byte UDP, 5-s runs): received rates of 65-73 kpps
without the pause, 112-115 with 100 us, 97 with 200 us, 74 with 400 us (bursts then
overflow the receiver's socket buffer). Light traffic never pauses, so it adds no delay to
a handshake or a keepalive; under load it adds at most 0.1 ms, and none when a timer falls
due within the pause."""


class MalformedFrameError(ValueError):
    """A frame the dataplane refuses (counted under ``MalformedPackets``)."""


class Dataplane:
    def __init__(self, engine: Middlebox | Chain, clock: ModelClock,
                 ports: dict[Side, list[tuple[socket.socket, bytes]]], out: IO[str],
                 pcap: PcapWriter | None = None) -> None:
        self.engine = engine
        self.clock = clock
        self.ports = ports
        """side -> [(socket, Ethernet header for frames leaving by it)], one per interface:
        the inside has one, the outside one per backend."""
        self.out = out
        self.pcap = pcap
        self.status_path: Path | None = None
        self.control: ControlFile | None = None
        """A live world's path events now (``natsim restart``...): ``control.py``."""
        self._control_due = 0.0
        self.metrics_file: IO[str] | None = None
        self.sample_every = 1.0
        """Model seconds between two samples of the counters (``metrics.jsonl``)."""
        self._next_sample = 0.0
        self.tx_queue_full = 0
        """Frames the kernel refused because the interface's queue was full."""
        self.rx_dropped = 0
        """Frames the kernel dropped because the dataplane's receive buffer was full."""
        self._status_due = 0.0
        self._status_file: BackgroundFile | None = None
        self._young_gc_due = 0.0
        self.running = True
        self._by_fd = {sock.fileno(): (side, sock) for side, socks in ports.items()
                       for sock, _ in socks}
        self._unlearnt = {sock.fileno() for socks in ports.values() for sock, header in socks
                          if header[:6] == UNKNOWN_MAC}
        """Ports whose peer MAC is not known yet (see ``_learn``)."""
        self._buf = bytearray(MAX_FRAME)
        self.edge: EdgeMap | None = None
        """Address aliases per side, when each side's network may only see its own subnet
        (Docker's internal networks: ``core/edge.py``)."""
        self.heartbeat = False
        """Print a heartbeat line every HEARTBEAT_EVERY wall seconds (scenario runs)."""
        self._heartbeat_due = 0.0
        self.malformed: Counter[str] = Counter()
        """Frames dropped because they could not be handled, by reason."""
        self.expiry_lateness: list[float] = []
        """Wall seconds from each idle deadline to the moment its RST was handed to the
        kernel (appliances that reset at expiry); reported when the dataplane stops."""
        self.fast: fastpath.FastForwarder | None = None
        """The compiled fast path for hot established flows, when on (``use_fast_path``)."""

    def use_fast_path(self) -> str | None:
        """Turn the fast path on (``simulator/dataplane/fastpath.py``); why not, when it stays off.

        Only for a single appliance without path events, on the compressed wall clock,
        without a pcap (every frame is written from Python) and without Docker's edge
        (addresses translated per side, ARP answered).
        """
        why = None
        if not fastpath.wanted():
            why = "NATSIM_FASTPATH=0"
        elif not fastpath.available():
            why = "simulator.dataplane._fastpath is not built (make setup builds it)"
        elif not isinstance(self.engine, Middlebox) or self.engine.path_events_waiting:
            why = "a chain of appliances or path events"
        elif self.pcap is not None or self.edge is not None or self._unlearnt:
            why = "a pcap, or Docker's edge and its peer MACs learnt later"
        elif not isinstance(self.clock, CompressedClock):
            why = "not the compressed wall clock"
        if why is None:
            assert isinstance(self.engine, Middlebox) and isinstance(self.clock, CompressedClock)
            self.fast = fastpath.FastForwarder(self.engine, self.clock.origin, self.clock.speed,
                                               self.ports)
        return why

    def stop(self, *_: object) -> None:
        self.running = False

    def _beat(self) -> None:
        """A sign of life for the runner, from the loop itself: a dataplane that hangs (in
        the engine, say) stops beating, and the run ends as an ERROR instead of a verdict."""
        self.out.write(Message(Role.MIDDLEBOX, Kind.HEARTBEAT, t=round(self.clock.now(), 3),
                               data={"malformed": sum(self.malformed.values())}).to_line()
                       + "\n")
        self.out.flush()
        self._heartbeat_due = time.monotonic() + HEARTBEAT_EVERY

    def run(self) -> None:
        poller = select.epoll()
        for fd in self._by_fd:
            poller.register(fd, select.EPOLLIN)
        try:
            while self.running:
                deadline = self.engine.next_deadline()
                if self.metrics_file is not None:
                    deadline = self._next_sample if deadline is None \
                        else min(deadline, self._next_sample)
                cap = STATUS_EVERY
                timeout = cap if deadline is None else min(cap, self.clock.wall_until(deadline))
                drain = self._drain if self.fast is None else self._drain_fast
                before = self.fast.forwarded() if self.fast is not None else 0
                for fd, _ in poller.poll(timeout):
                    drain(*self._by_fd[fd])
                busy = self.fast is not None and self.fast.forwarded() - before >= BUSY_FRAMES
                self._requests()
                self.expire_due()
                self._flush_events()
                if self.status_path is not None and time.monotonic() >= self._status_due:
                    self._write_status()
                if self.metrics_file is not None and self.clock.now() >= self._next_sample:
                    self.sample()
                if time.monotonic() >= self._young_gc_due:
                    gc.collect(1)
                    self._young_gc_due = time.monotonic() + YOUNG_GC_EVERY
                if self.heartbeat and time.monotonic() >= self._heartbeat_due:
                    self._beat()
                if busy:
                    self._pause()
        finally:
            poller.close()
            if self.fast is not None:
                self.fast.sync()
            self._flush_events()
            if self._status_file is not None:
                self._status_file.close()

    def _requests(self) -> None:
        """A live world's path events asked for now (every CONTROL_EVERY wall seconds)."""
        if self.control is not None and time.monotonic() >= self._control_due:
            self.control.apply(self.engine, self.clock.now())
            self._control_due = time.monotonic() + CONTROL_EVERY

    def _timer_due(self) -> bool:
        due = self.engine.next_deadline()
        return due is not None and due <= self.clock.now()

    def _pause(self) -> None:
        """BUSY_PAUSE after a busy pass, unless a timer falls due within it (an RST at
        expiry is sent on time, not after the pause)."""
        due = self.engine.next_deadline()
        if due is None or self.clock.wall_until(due) > BUSY_PAUSE:
            time.sleep(BUSY_PAUSE)

    def drain(self, side: Side, sock: socket.socket) -> None:
        """Handle the frames waiting on ``sock`` (a batch at most)."""
        if self.fast is None:
            self._drain(side, sock)
        else:
            self._drain_fast(side, sock)

    def expire_due(self) -> None:
        """The timers due by now, between two passes over the sockets (with the fast path's
        accounting folded in first: an expiry judges a flow by its last packet)."""
        fast = self.fast
        if fast is not None:
            fast.sync()
        self._send(self.engine.expire(self.clock.now()))
        if fast is not None:
            fast.forget_removed()

    def _drain(self, side: Side, sock: socket.socket) -> None:
        buf = self._buf
        view = memoryview(buf)
        frame = self._frame
        for _ in range(BATCH):
            try:
                n = sock.recv_into(buf)
            except BlockingIOError:
                return
            try:  # handle_frame's boundary, inlined: this loop is the per-packet path
                frame(side, sock, view, n)
            except Exception as exc:
                self._malformed_frame(exc, view, n)

    def _drain_fast(self, side: Side, sock: socket.socket) -> None:
        """``_drain`` with the fast path: the C side forwards the frames of the flows it
        holds and stops at the first frame it leaves to the engine, which is handled here
        with the C side's accounting folded in first."""
        fast = self.fast
        assert fast is not None
        buf = self._buf
        view = memoryview(buf)
        frame = self._frame
        fd = sock.fileno()
        for _ in range(BATCH):
            n = fast.drain(fd, buf, BATCH)
            if n >= 0 and self._timer_due():
                # the fast path leaves every frame to the engine while a timer is due (with
                # 100,000 flows expiring, most of the time): the timers first, as the
                # engine would have them, then the frame may be the fast path's again
                self.expire_due()
                offered = fast.offer(buf, n)
                if offered == 1:
                    continue
                n = offered or n
            if n == fastpath.SEND_FAILED:
                err = fast.last_errno()
                self._malformed_frame(OSError(err, os.strerror(err)), view, 0)
                continue
            if n < 0:
                return
            fast.sync()
            try:  # handle_frame's boundary, inlined
                frame(side, sock, view, n)
            except Exception as exc:
                self._malformed_frame(exc, view, n)
            fast.after_engine()

    def handle_frame(self, side: Side, sock: socket.socket, view: memoryview, n: int) -> None:
        """One frame (virtio-net header first) received on ``sock``: never raises.

        A frame that the dataplane or the engine cannot handle is dropped and counted under
        ``MalformedPackets`` and its reason; the first few are logged with their traceback.
        One crafted frame must never end the middlebox (and with it every verdict).
        """
        try:
            self._frame(side, sock, view, n)
        except Exception as exc:  # the per-frame boundary: nothing escapes it
            self._malformed_frame(exc, view, n)

    def _malformed_frame(self, exc: Exception, view: memoryview, n: int) -> None:
        reason = type(exc).__name__
        self.malformed[reason] += 1
        if sum(self.malformed.values()) <= MALFORMED_LOGGED:
            print(f"natsim middlebox: dropped a frame it could not handle ({reason}): "
                  f"{bytes(view[:min(n, 80)]).hex()}", file=sys.stderr)
            traceback.print_exception(exc, file=sys.stderr)

    def _frame(self, side: Side, sock: socket.socket, view: memoryview, n: int) -> None:
        # ``buf``: the receive buffer itself when the frame is in it (slicing a bytearray
        # makes one object, a memoryview's slice copied into a bytearray two)
        buf: bytearray | memoryview = self._buf if view.obj is self._buf else view
        now = self.clock.now()
        if n < VNET_LEN:
            raise MalformedFrameError("shorter than its virtio-net header")
        vnet = bytes(buf[:VNET_LEN])
        if self.pcap is not None:
            self.pcap.write(now, view[VNET_LEN:n], vnet)
        start = VNET_LEN + ETH_HLEN
        if self._unlearnt and sock.fileno() in self._unlearnt and (
                self.edge is None or self.edge.is_peer(side, sender_address(
                    bytes(view[VNET_LEN:min(n, VNET_LEN + 42)])))):
            self._learn(side, sock, bytes(view[VNET_LEN + 6:VNET_LEN + 12]))
        if n < start + 20 or buf[start - 2] != 0x08 or buf[start - 1] != 0x00:
            ipv6 = n >= start + 40 and buf[start - 2] == 0x86 and buf[start - 1] == 0xDD
            if not ipv6 and self.edge is not None:  # ARP for the addresses we answer for
                self._answer_arp(side, bytes(view[VNET_LEN:n]))
            if not ipv6 or not self._ipv6_on_path(side, sock, view, n):
                return  # not IP (the world has no ARP), or the link's own IPv6 multicast
        packet = buf[start:n] if isinstance(buf, bytearray) else bytearray(buf[start:n])
        partial = None
        if buf[0] & F_NEEDS_CSUM:
            at = partial_checksum_at(vnet)
            if not partial_checksum_fits(packet, at):
                raise MalformedFrameError(f"partial checksum at {at} outside the transport header")
            partial = (bytes(packet[:at + 2]), at)
        if self.edge is not None:
            # On a shared Docker bridge, frames flooded to us for another host and the
            # bridge's own packets are not on the simulated path.
            if bytes(view[VNET_LEN:VNET_LEN + 6]) != self.ports[side][0][1][6:12] \
                    or not self.edge.from_peer(side, packet):
                return
            self.edge.to_model(side, packet)
        self._send(self.engine.on_packet(packet, side, now), packet, vnet, partial)

    def _ipv6_on_path(self, side: Side, sock: socket.socket, view: memoryview, n: int) -> bool:
        """Whether an IPv6 frame goes to the engine. A neighbour solicitation is answered
        here (the gateway's link-layer address is the port's own); other multicast (MLD
        reports, router solicitations) is the link's, not the simulated path's. An IPv6
        world's hosts have offloads off: NAT64 cannot carry a partial checksum over."""
        frame = view[VNET_LEN:n]
        if (view[0] & F_NEEDS_CSUM or view[1]) and not frame[0] & 1:  # or a GSO type
            raise MalformedFrameError("an IPv6 frame with checksum or segmentation offload")
        if is_neighbour_solicitation(frame):
            ours = next(header[6:12] for s, header in self.ports[side] if s is sock)
            advert = neighbour_advertisement(bytes(frame), ours)
            if advert is not None:
                sock.send(NO_OFFLOAD + advert)
            return False
        return not frame[0] & 1

    def _learn(self, side: Side, sock: socket.socket, mac: bytes) -> None:
        """Take the peer's MAC from the first frame it sends (its ARP request, usually)."""
        self._unlearnt.discard(sock.fileno())
        self.ports[side] = [(s, mac + header[6:] if s is sock else header)
                            for s, header in self.ports[side]]

    def _answer_arp(self, side: Side, frame: bytes) -> None:
        assert self.edge is not None
        sock, header = self.ports[side][0]
        reply = self.edge.arp_reply(side, frame, header[6:12])
        if reply is not None:
            sock.send(NO_OFFLOAD + reply)

    def _send(self, actions: list[Transmit], forwarded: bytearray | None = None,
              vnet: bytes = NO_OFFLOAD, partial: tuple[bytes, int] | None = None) -> None:
        """Send what the engine returned. ``forwarded`` is the frame that came in (it keeps
        its offload header); ``partial`` its first bytes and checksum offset as they arrived,
        when its checksum is partial (to redo it after every address change)."""
        for action in actions:
            sock, header = self.ports[action.side][action.port]
            if action.packet[0] >> 4 == 6:
                header = header[:12] + ETH_P_IPV6
            if self.edge is not None:
                self.edge.to_wire(action.side, action.packet)
            offload = NO_OFFLOAD
            if action.packet is forwarded:
                offload = vnet
                if partial is not None:
                    fix_partial_checksum(action.packet, *partial)
            packet = action.packet
            if self.pcap is not None:
                self.pcap.write(self.clock.now(), header + packet, offload)
            try:
                if len(packet) > GATHER_ABOVE:
                    sock.sendmsg((offload, header, packet))
                else:
                    sock.send(offload + header + packet)
            except OSError as exc:
                # a full transmit queue (EAGAIN) or no buffer for it (ENOBUFS, a burst of
                # 55,000 handshakes) loses this frame, as a congested link would; it must
                # not cost the frames decided with it (an RST to the other end)
                if not isinstance(exc, BlockingIOError) and exc.errno != errno.ENOBUFS:
                    raise
                self.tx_queue_full += 1
            if action.deadline is not None:
                self.expiry_lateness.append((self.clock.now() - action.deadline)
                                            / self.clock.speed)

    def lateness_summary(self) -> dict[str, float | int]:
        """p50/p99/max of :attr:`expiry_lateness`, in wall milliseconds."""
        values = sorted(self.expiry_lateness)
        if not values:
            return {"count": 0}

        def pct(p: float) -> float:
            return round(values[min(len(values) - 1, int(p * len(values)))] * 1000, 3)

        return {"count": len(values), "p50_ms": pct(0.5), "p99_ms": pct(0.99),
                "max_ms": round(values[-1] * 1000, 3)}

    def sample(self) -> None:
        """One line of counters at this model time; the series is plotted after the run."""
        assert self.metrics_file is not None
        now = self.clock.now()
        self.metrics_file.write(json.dumps({"t": round(now, 3), "counters": self.counters()})
                                + "\n")
        self.metrics_file.flush()
        while self._next_sample <= now:
            self._next_sample += self.sample_every

    def snapshot(self) -> JsonObject:
        """The live flow table and counters, for ``natsim status``.

        At most :data:`STATUS_FLOWS` flows are listed (with the total): the file is rewritten
        four times a second, and listing 100,000 flows (or even 1,000) each time would take
        the dataplane's CPU away from the packets.
        """
        counters = self.counters()  # the fast path's accounting folded in first
        now = self.clock.now()
        flows = []
        for f in itertools.islice(self.engine.flows, STATUS_FLOWS):
            flows.append({
                "flow": f.id, "proto": "TCP" if f.proto == 6 else "UDP", "state": str(f.state),
                "client": endpoint(f.inside[1], f.inside[2]),
                "server": endpoint(f.inside[3], f.inside[4]),
                "public": endpoint(f.public_ip, f.public_port),
                "idle": round(now - f.last_seen, 3), "timeout": f.timeout,
                "packets": list(f.packets)})
        return {"t": round(now, 3), "speed": self.clock.speed, "written": time.time(),
                "pid": os.getpid(),
                "appliance": self.engine.appliance.name, "flows": flows,
                "flow_count": self.engine.counters.get("ActiveConnectionCount", 0),
                "counters": counters,
                "fast_path": self.fast.forwarded() if self.fast is not None else None}

    def counters(self) -> dict[str, int]:
        """The engine's counters, plus the frames the dataplane itself lost, if any: a
        middlebox that cannot keep up must say so rather than pass for the appliance."""
        lost = self.tx_queue_full
        if self.fast is not None:
            self.fast.sync()
            lost += self.fast.tx_queue_full
        counters = dict(self.engine.counters)
        if lost:
            counters["TxQueueFullDrops"] = lost
        if self.malformed:
            counters["MalformedPackets"] = sum(self.malformed.values())
            counters.update({f"MalformedPackets:{k}": v for k, v in self.malformed.items()})
        for _, sock in self._by_fd.values():
            # struct tpacket_stats {tp_packets, tp_drops}; reading it resets it
            with contextlib.suppress(OSError):  # not a packet socket (the fuzzer's)
                _, drops = TPACKET_STATS.unpack(sock.getsockopt(
                    SOL_PACKET, PACKET_STATISTICS, TPACKET_STATS.size))
                self.rx_dropped += drops
        if self.rx_dropped:
            counters["RxQueueFullDrops"] = self.rx_dropped
        return counters

    def _write_status(self) -> None:
        """The snapshot is taken here, between packets; the file is written by a thread of
        its own (a rename on ext4 can take most of a second: ``background_file.py``)."""
        assert self.status_path is not None
        if self._status_file is None or self._status_file.path != self.status_path:
            self._status_file = BackgroundFile(self.status_path)
        self._status_file.write(json.dumps(self.snapshot()))
        self._status_due = time.monotonic() + STATUS_EVERY

    def _flush_events(self) -> None:
        events = self.engine.take_events()
        for event in events:
            self.out.write(json.dumps(event.to_dict()) + "\n")
        if events:
            self.out.flush()
        if self.pcap is not None:
            self.pcap.flush()


def _held_flows(engine: Middlebox | Chain, now: float) -> tuple[HeldFlow, ...]:
    """The flows the middlebox still holds at the end, for its final report."""
    return tuple(HeldFlow(f.id, str(f.state), round(now - f.last_seen, 3))
                 for f in engine.flows)


def main(argv: list[str] | None = None) -> int:
    """``natsim middlebox --config FILE``: run inside the middlebox namespace."""
    parser = argparse.ArgumentParser(prog="natsim middlebox",
                                     description="Run the userspace dataplane (inside its "
                                                 "namespace; the runner starts this).")
    parser.add_argument("--config", required=True, type=Path,
                        help="JSON: appliance, overrides, speed, interfaces and MACs")
    args = parser.parse_args(argv)
    faulthandler.enable()  # a crash in C leaves a traceback, not an empty stderr
    try:
        cfg = decode(MiddleboxConfig, args.config.read_text())
    except (OSError, ConfigError) as exc:
        parser.error(f"{args.config}: {exc}")
    appliances = list(cfg.chain)
    engine: Middlebox | Chain = Middlebox(appliances[0]) if len(appliances) == 1 \
        else Chain(appliances)
    if isinstance(engine, Middlebox):  # scenarios refuse path events on chains
        engine.path_events(cfg.path_events)
    clock = CompressedClock(cfg.speed)

    def port(spec: Port) -> tuple[socket.socket, bytes]:
        # no peer MAC: learnt from the first frame that arrives (Docker, where the client
        # may start after the middlebox)
        peer = mac_bytes(spec.peer_mac) if spec.peer_mac else UNKNOWN_MAC
        header = peer + mac_bytes(spec.mac) + ETH_P_IP
        return open_port(spec.ifname), header

    ports = {Side.INSIDE: [port(cfg.inside)],
             Side.OUTSIDE: [port(spec) for spec in cfg.outside]}
    pcap = PcapWriter(Path(cfg.pcap)) if cfg.pcap else None
    plane = Dataplane(engine, clock, ports, sys.stdout, pcap)
    if cfg.status:  # a live world: its status, and path events on demand beside it
        plane.status_path = Path(cfg.status)
        plane.control = ControlFile(plane.status_path.with_name("control.jsonl"))
    plane.heartbeat = cfg.heartbeat
    if cfg.edge is not None:
        plane.edge = EdgeMap.from_config(cfg.edge)
    if cfg.metrics:
        plane.metrics_file = create_new(Path(cfg.metrics))
        plane.sample_every = cfg.sample_every
    fast_off = plane.use_fast_path()
    steady_under_load()
    signal.signal(signal.SIGTERM, plane.stop)
    signal.signal(signal.SIGINT, plane.stop)
    print(Message.carrying(Role.MIDDLEBOX, Kind.READY, MiddleboxReady(
        clock.origin, fast_off or "on")).to_line(), flush=True)
    try:
        plane.run()
    finally:
        if pcap is not None:
            pcap.close()
        if plane.metrics_file is not None:
            plane.sample()
            plane.metrics_file.close()
        print(Message.carrying(Role.MIDDLEBOX, Kind.STOPPED, MiddleboxStopped(
            plane.counters(), _held_flows(engine, clock.now()),
            fast_path={"state": fast_off or "on",
                       "forwarded": plane.fast.forwarded() if plane.fast else 0},
            expiry_lateness=plane.lateness_summary()), t=clock.now()).to_line(), flush=True)
    return 0
