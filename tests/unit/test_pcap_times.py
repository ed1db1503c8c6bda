"""capture.pcap's times moved onto the run's timeline (the request at 0 s)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from scapy.utils import rdpcap

from simulator.dataplane.frames import PcapWriter
from simulator.support import pcap


def test_times_move_by_the_offset_and_stay_in_order(tmp_path: Path) -> None:
    path = tmp_path / "c.pcap"
    writer = PcapWriter(path)
    frame = bytes(60)
    for t in (4.05, 4.07, 404.117139, 904.660975):  # the dataplane's times
        writer.write(t, frame)
    writer.write(4.08, frame[:30])  # a frame cut short by a crash is dropped below
    writer.close()
    data = path.read_bytes()
    src, dst = io.BytesIO(data[:-10]), io.BytesIO()
    assert pcap.shift_times(src, dst, -4.07) == 1  # the SYN, 20 ms before the request
    shifted = tmp_path / "s.pcap"
    shifted.write_bytes(dst.getvalue())
    times = [float(p.time) for p in rdpcap(str(shifted))]
    assert times == pytest.approx([0.0, 0.0, 400.047139, 900.590975], abs=1e-6)


def test_a_file_that_is_not_natsim_s_is_refused() -> None:
    with pytest.raises(ValueError, match="magic"):
        pcap.shift_times(io.BytesIO(b"\x0a\x0d\x0d\x0a" + bytes(30)), io.BytesIO(), 1.0)
