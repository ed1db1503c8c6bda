"""The classic pcap file as natsim writes it: its header and record layout, and moving every
timestamp of a finished capture onto a run's timeline.

The dataplane stamps frames in its own model time, whose zero is its start; a run's
timeline counts from the client's request, a few model seconds later (more at high speed).
A capture whose times disagree with the timeline by that much sends a reader looking for the
RST at 404 s when the timeline says 400 s, so the runner moves the capture's times onto the
timeline when the run ends.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import IO

FILE_HEADER = struct.Struct("<IHHiIII")
"""magic, version 2.4, zone, sigfigs, snap length, link type (1: Ethernet)."""
RECORD = struct.Struct("<IIII")
"""seconds, microseconds, captured length, original length."""
MAGIC = 0xA1B2C3D4


def file_header(snap_length: int) -> bytes:
    return FILE_HEADER.pack(MAGIC, 2, 4, 0, 0, snap_length, 1)


def record_header(t: float, length: int, captured: int | None = None) -> bytes:
    """A record stamped ``t`` seconds (0 for anything earlier: the format has no sign)."""
    micros = round(max(0.0, t) * 1_000_000)
    return RECORD.pack(micros // 1_000_000, micros % 1_000_000,
                       length if captured is None else captured, length)


def records(src: IO[bytes]) -> Iterator[tuple[float, bytes]]:
    """(time, frame) of every whole record of a capture natsim wrote, in file order (a
    capture cut short by a crash ends at its last whole record)."""
    header = src.read(FILE_HEADER.size)
    if len(header) < FILE_HEADER.size or FILE_HEADER.unpack(header)[0] != MAGIC:
        raise ValueError("not a capture natsim wrote (its magic number differs)")
    while len(raw := src.read(RECORD.size)) == RECORD.size:
        sec, usec, caplen, _ = RECORD.unpack(raw)
        frame = src.read(caplen)
        if len(frame) < caplen:
            return
        yield sec + usec / 1_000_000, frame


def shift_times(src: IO[bytes], dst: IO[bytes], by: float) -> int:
    """Copy the capture ``src`` (as :func:`file_header` and :func:`record_header` write it:
    each frame whole) to ``dst`` with every timestamp moved by ``by`` seconds. Returns how
    many records would have fallen before 0 and are stamped 0 (the handshake, a few
    milliseconds before the request). A capture cut short by a crash is copied up to its
    last whole record."""
    header = src.read(FILE_HEADER.size)
    src.seek(0)
    before_zero = 0
    for n, (t, frame) in enumerate(records(src)):
        if n == 0:
            dst.write(header)
        before_zero += t + by < 0
        dst.write(record_header(t + by, len(frame)))
        dst.write(frame)
    if dst.tell() == 0:
        dst.write(header)
    return before_zero
