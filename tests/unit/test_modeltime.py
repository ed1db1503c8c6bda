"""Model time for real programs, without namespaces: the timer shim's scaling and its
rounding, the world's clock segment as libfaketime reads it, and the programs that cannot
run in model time."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator.world import modeltime

SHIM = modeltime.shim_library()

PROBE = """
import ctypes, json, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)

def kernel(fd, level, name, size=4):
    # the raw system call: what the kernel holds, past the shim's getsockopt
    buf = ctypes.create_string_buffer(size)
    length = ctypes.c_uint32(size)
    assert libc.syscall(55, fd, level, name, buf, ctypes.byref(length)) == 0  # getsockopt
    return buf.raw[:length.value]

s = socket.socket()
out = {}
for name, level, opt, value in (("idle", socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30),
                                ("intvl", socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 52),
                                ("user", socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 60000),
                                ("zero", socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 0)):
    if name == "zero":
        s2 = socket.socket(); s2.setsockopt(level, opt, value); sock = s2
    else:
        s.setsockopt(level, opt, value); sock = s
    held = struct.unpack("i", kernel(sock.fileno(), level, opt))[0]
    out[name] = [sock.getsockopt(level, opt), held]
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 70, 0))
seen = struct.unpack("ll", s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16))
raw = struct.unpack("ll", kernel(s.fileno(), socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16))
out["rcvtimeo"] = [list(seen), list(raw)]
print(json.dumps(out))
"""


def _probe(speed: str, tmp_path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    log = tmp_path / "timers.jsonl"
    env = {**os.environ, "LD_PRELOAD": str(SHIM), "NATSIM_SPEED": speed,
           "NATSIM_TIMER_LOG": str(log)}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    return json.loads(done.stdout), modeltime.scaled_settings(log)


def test_the_shim_scales_kernel_timers_and_gives_the_program_its_own_values(
        tmp_path: Path) -> None:
    out, log = _probe("35", tmp_path)
    assert out["idle"] == [30, 1]  # 30/35 rounds to 1 wall s (at least 1)
    assert out["intvl"] == [52, 1]  # 52/35 = 1.49: 1
    assert out["user"] == [60000, 1714]  # milliseconds: 60000/35 = 1714.3
    assert out["zero"] == [0, 0]  # 0 means "off" (the system's default): untouched
    assert out["rcvtimeo"] == [[70, 0], [2, 0]]  # a timeval: 70 s -> 2 s
    by_option = {(r["option"], r["model"]): r for r in log}
    assert by_option[("TCP_KEEPIDLE", 30)]["wall"] == 1
    assert by_option[("TCP_KEEPIDLE", 30)]["effective_model"] == 35
    assert modeltime.describe(by_option[("TCP_KEEPIDLE", 30)]) == \
        "TCP_KEEPIDLE 30 model s -> 1 wall s, really 35 model s"
    assert ("TCP_USER_TIMEOUT", 0) not in by_option  # nothing scaled, nothing said


def test_at_speed_1_the_shim_changes_nothing(tmp_path: Path) -> None:
    out, log = _probe("1", tmp_path)
    assert out["idle"] == [30, 30] and out["user"] == [60000, 60000]
    assert out["rcvtimeo"] == [[70, 0], [70, 0]] and log == []


@pytest.fixture
def world_clock() -> Iterator[modeltime.WorldClock]:
    clock = modeltime.WorldClock.starting_now(35, "u" + os.urandom(4).hex())
    clock.create_segment()
    try:
        yield clock
    finally:
        assert len(modeltime.remove_segment(clock.run_id)) == 2
    assert clock.run_id not in modeltime.segment_run_ids()


def test_programs_started_apart_read_one_clock(world_clock: modeltime.WorldClock) -> None:
    """libfaketime reads the world's start instant from natsim's segment: a program started
    a second later, and one started by it, agree with the world's clock. A libfaketime
    whose segment layout differs fails here."""
    env = world_clock.environment(os.environ)
    assert env["FAKETIME"] == "+0 x35" and env["LD_PRELOAD"].endswith(str(SHIM))
    code = "import time; print(repr(time.time()))"
    time.sleep(1.0)
    first = float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                 text=True, check=True).stdout)
    expected = world_clock.model_now()
    assert abs(first - expected) < 1.0, (first, expected)  # 35 s ahead, within a model s
    time.sleep(1.0)
    nested = subprocess.run(["sh", "-c", f"sleep 1; {sys.executable} -c '{code}'"], env=env,
                            capture_output=True, text=True, check=True, timeout=30).stdout
    expected = world_clock.model_now()
    assert abs(float(nested) - expected) < 1.0, (nested, expected)
    assert not any(p.name.startswith(("faketime_shm", "sem.faketime"))
                   and p.stat().st_uid == os.geteuid() and _recent(p)
                   for p in modeltime.SHM_DIR.iterdir())  # none of libfaketime's own


def _recent(path: Path) -> bool:
    return time.time() - path.stat().st_mtime < 30


def test_the_segment_holds_the_start_instant(world_clock: modeltime.WorldClock) -> None:
    _, shm = world_clock.names
    raw = (modeltime.SHM_DIR / shm[1:]).read_bytes()
    assert len(raw) == 4096 and (modeltime.SHM_DIR / shm[1:]).stat().st_mode & 0o777 == 0o600
    ticks, idx, *stamps = struct.unpack_from("=QQ" + "qq" * 4, raw)
    assert (ticks, idx) == (0, 0)
    assert [s * 10**9 + ns for s, ns in zip(stamps[::2], stamps[1::2], strict=True)] == \
        list(world_clock.start_ns)


def _compile(tmp_path: Path, *flags: str) -> Path:
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed (make setup installs it)")
    src = tmp_path / "p.c"
    src.write_text("int main(void) { return 0; }\n")
    out = tmp_path / f"p{len(flags)}"
    subprocess.run(["gcc", *flags, "-o", str(out), str(src)], check=True, capture_output=True)
    return out


def test_programs_that_cannot_run_in_model_time_are_named(tmp_path: Path) -> None:
    dynamic = _compile(tmp_path)
    assert modeltime.cannot_compress(str(dynamic)) is None
    static = _compile(tmp_path, "-static")
    assert "statically linked" in (modeltime.cannot_compress(str(static)) or "")
    go = tmp_path / "go-like"
    go.write_bytes(dynamic.read_bytes() + b"\0" * 100 + modeltime.GO_MAGIC + b"\0" * 32)
    assert "Go program" in (modeltime.cannot_compress(str(go)) or "")
    embedded = tmp_path / "jemalloc-inside"
    embedded.write_bytes(dynamic.read_bytes() + modeltime.JEMALLOC_MARK)
    assert "jemalloc" in (modeltime.cannot_compress(str(embedded)) or "")
    script = tmp_path / "script"
    script.write_text(f"#!/usr/bin/env {sys.executable}\nprint(1)\n")
    assert modeltime.cannot_compress(str(script)) is None  # judged by its interpreter
    wrapped = tmp_path / "wrapped"
    wrapped.write_text(f"#!{static}\n")
    assert "statically linked" in (modeltime.cannot_compress(str(wrapped)) or "")
    assert modeltime.cannot_compress("no-such-program-here") is None  # the host says so
    if shutil.which("redis-server"):  # Debian's, linked with libjemalloc
        assert "jemalloc" in (modeltime.cannot_compress("redis-server") or "")


def test_the_environment_keeps_what_the_user_preloads() -> None:
    clock = modeltime.WorldClock(35.0, (1, 2, 3, 4), "abc123")
    env = clock.environment({"LD_PRELOAD": "/mine.so", "FAKETIME": "stale", "PATH": "/bin"},
                            Path("/tmp/t.jsonl"), verbose=True, libraries=("/f.so", "/s.so"))
    assert env["LD_PRELOAD"] == "/f.so:/s.so:/mine.so" and env["PATH"] == "/bin"
    assert env["FAKETIME_SHARED"] == "/natsim_ft_sem_abc123 /natsim_ft_shm_abc123"
    assert env["NATSIM_TIMER_LOG"] == "/tmp/t.jsonl" and env["NATSIM_TIMER_VERBOSE"] == "1"
    assert modeltime.WorldClock.from_record(clock.to_record()) == clock


def test_no_segment_is_made_twice() -> None:
    clock = modeltime.WorldClock.starting_now(10, "d" + os.urandom(4).hex())
    clock.create_segment()
    try:
        with pytest.raises((OSError, modeltime.ModelTimeError)):
            clock.create_segment()  # O_EXCL: never another's segment taken over
    finally:
        modeltime.remove_segment(clock.run_id)

