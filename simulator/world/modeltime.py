"""Programs in model time: what natsim starts in a world runs on the world's clock.

A world compressed 35 times forgets an idle flow after 10 wall seconds; a real program in
it, left alone, would still wait 350 wall seconds for its keepalive and its timeouts. So a
program natsim starts (``natsim exec``, the pytest plugin's ``start``, ``run`` and ``call``)
runs under two preload libraries:

* **libfaketime** (Debian's ``libfaketime``; no clock code of our own) at the world's speed:
  the program's clocks, sleeps, polls, selects and the timeouts built on them run ``speed``
  times faster. Every program of a world shares one clock: natsim makes a libfaketime
  shared segment per world (``FAKETIME_SHARED``) holding the world's start instant, so
  ``time.time()`` in any of its programs is ``start + (now - start) * speed``, whenever each
  program was started and whatever it starts in turn. The segment lives and dies with the
  world (``natsim down``, ``natsim cleanup``), never with a program that might be killed.
* **natsim's timer shim** (``simulator/world/_timershim.c``, built by ``make setup``): the kernel
  timers a program sets on a socket (``TCP_KEEPIDLE``, ``TCP_KEEPINTVL``,
  ``TCP_USER_TIMEOUT``, ``SO_RCVTIMEO``, ``SO_SNDTIMEO``) divided by the speed, rounded as
  natsim rounds the keepalive sysctls (whole wall seconds, at least 1); ``getsockopt`` gives
  the program back its own value. Each setting it scaled is a line of the world's
  ``timers.jsonl``.

A program that loads neither library cannot be compressed: a statically linked binary has
no dynamic linker to load them, and a Go program reads the clock itself (through the vDSO,
not the C library) even when it is linked dynamically. A program that uses jemalloc (Redis's
own binaries) hangs as libfaketime starts: Debian's build lacks its jemalloc fix.
:func:`cannot_compress` says so before it starts, and natsim then names it instead of
judging it silently.

The shared segment's layout is libfaketime's own (``struct ft_shared_s`` of 0.9.10, as
Debian ships it): the suite checks, with two programs started a second apart, that they
agree on the time, so a release that changes it fails there rather than in a user's run.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import shutil
import stat
import struct
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from simulator.core.jsonvalue import Json, JsonObject, JsonShapeError, fields_json, from_json

FAKETIME_LIBRARY = "libfaketimeMT.so.1"
"""The multithreaded build: Java, Node and grpcio run threads."""
SHM_DIR = Path("/dev/shm")
_SEGMENT = struct.Struct("=QQ" + "qq" * 4)
"""libfaketime's ``struct ft_shared_s``: ticks, file_idx, then the start instant of
CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_MONOTONIC_RAW and CLOCK_BOOTTIME (timespecs)."""
_CLOCKS = (time.CLOCK_REALTIME, time.CLOCK_MONOTONIC, time.CLOCK_MONOTONIC_RAW,
           time.CLOCK_BOOTTIME)
GO_MAGIC = b"\xff Go buildinf:"
"""The start of a Go binary's ``.go.buildinfo`` section."""


class ModelTimeError(RuntimeError):
    """Model time cannot be had here (a library missing); the message says what to do."""


def faketime_library() -> Path:
    """Debian's libfaketime (multiarch folders first)."""
    for folder in [*sorted(Path("/usr/lib").glob("*/faketime")), Path("/usr/lib/faketime"),
                   Path("/usr/local/lib/faketime")]:
        path = folder / FAKETIME_LIBRARY
        if path.is_file():
            return path
    raise ModelTimeError("libfaketime is not installed (apt-get install libfaketime; `make "
                         "setup` installs it): without it programs run in wall time "
                         "(--wall-time says so explicitly)")


def shim_library() -> Path:
    """natsim's timer shim, built with the package (``simulator/world/_timershim.c``)."""
    spec = importlib.util.find_spec("simulator.world._timershim")
    if spec is None or spec.origin is None:
        raise ModelTimeError("natsim's timer shim (simulator/world/_timershim.c) is not built: run "
                             "`make setup`")
    return Path(spec.origin)


def cannot_compress(program: str, path: str | None = None) -> str | None:
    """Why ``program`` (a name looked up in ``path``, or a path) cannot run in model time,
    or None when it can. Scripts are judged by their interpreter."""
    found = shutil.which(program, path=path) if "/" not in program else program
    if found is None:
        return None  # the host will say it is not found, as it would in wall time
    for _ in range(4):  # a script's interpreter, and that one's, a few deep
        try:
            with open(found, "rb") as f:
                head = f.read(256)
        except OSError:
            return None
        if not head.startswith(b"#!"):
            break
        words = head[2:].split(b"\n", 1)[0].split()
        if not words:
            return None
        interpreter = words[0].decode(errors="replace")
        if interpreter.endswith("/env") and len(words) > 1:
            interpreter = shutil.which(words[1].decode(errors="replace"), path=path) or ""
        if not interpreter:
            return None
        found = interpreter
    return _elf_verdict(Path(found))


def _elf_verdict(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF":
                return None  # not a program natsim can judge: let it run
            wide = head[4] == 2
            order = "<" if head[5] == 1 else ">"
            if wide:
                phoff, = struct.unpack_from(order + "Q", head, 32)
                phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
            else:
                phoff, = struct.unpack_from(order + "I", head, 28)
                phentsize, phnum = struct.unpack_from(order + "HH", head, 42)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
            kinds = {struct.unpack_from(order + "I", table, i * phentsize)[0]
                     for i in range(phnum) if (i + 1) * phentsize <= len(table)}
            if 3 not in kinds:  # PT_INTERP: no dynamic linker, so no preload
                return (f"{path} is statically linked: the libraries that put a program in "
                        "model time are loaded by the dynamic linker, which it does not use")
            f.seek(0)
            while chunk := f.read(1 << 20):
                if GO_MAGIC in chunk:
                    return (f"{path} is a Go program: Go's runtime reads the clock itself "
                            "(vDSO), not through the C library, so libfaketime cannot "
                            "compress its timers")
                if JEMALLOC_MARK in chunk:
                    return f"{path} {JEMALLOC_WHY}"
                f.seek(f.tell() - len(GO_MAGIC))
                if len(chunk) < (1 << 20):
                    break
    except (OSError, struct.error):
        return None
    return _linked_jemalloc(path)


JEMALLOC_MARK = b"je_malloc_conf"
"""A symbol of jemalloc built into a program (redis builds embed it)."""
JEMALLOC_WHY = ("uses jemalloc, which reads the clock while libfaketime itself starts: "
                "Debian's libfaketime 0.9.10 (built without JEMALLOC_COMPAT) stops it there")


def _linked_jemalloc(path: Path) -> str | None:
    """Whether the dynamic linker would load jemalloc for ``path`` (Debian's redis)."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return None
    try:
        done = subprocess.run([ldd, str(path)], capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if "libjemalloc" in done.stdout:
        return f"{path} {JEMALLOC_WHY}"
    return None


ADVICE = ("run it at --speed 1 (wall time is model time), or give it its timeouts and "
          "keepalive divided by the speed yourself, with --wall-time")


@dataclass(frozen=True)
class WorldClock:
    """One world's model clock: its speed and the instant it started, on every clock."""

    speed: float
    start_ns: tuple[int, int, int, int]
    """CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_MONOTONIC_RAW, CLOCK_BOOTTIME at the start."""
    run_id: str

    @classmethod
    def starting_now(cls, speed: float, run_id: str) -> WorldClock:
        stamps = tuple(time.clock_gettime_ns(c) for c in _CLOCKS)
        return cls(float(speed), stamps, run_id)  # type: ignore[arg-type]

    def to_record(self) -> JsonObject:
        return fields_json(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Json]) -> WorldClock:
        clock = from_json(cls, dict(record))
        if len(clock.start_ns) != len(_CLOCKS):
            raise JsonShapeError(f"WorldClock.start_ns: {len(_CLOCKS)} clocks, got "
                                 f"{len(clock.start_ns)}")
        return clock

    def model_now(self) -> float:
        """The world's clock now, as ``time.time()`` reads it in its programs."""
        real = self.start_ns[0] / 1e9
        return real + (time.time() - real) * self.speed

    # -- the shared segment -------------------------------------------------------------------

    @property
    def names(self) -> tuple[str, str]:
        """(semaphore, shared memory), as ``FAKETIME_SHARED`` names them."""
        return (f"/natsim_ft_sem_{self.run_id}", f"/natsim_ft_shm_{self.run_id}")

    def create_segment(self) -> None:
        """The world's libfaketime segment, its start instant filled in: every program that
        attaches to it counts from the world's start."""
        sem, shm = self.names
        _sem_create(sem)
        body = _SEGMENT.pack(0, 0, *(v for ns in self.start_ns for v in divmod(ns, 10**9)))
        fd = os.open(SHM_DIR / shm[1:], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, body.ljust(4096, b"\0"))
        finally:
            os.close(fd)

    def environment(self, base: Mapping[str, str], timer_log: Path | None = None,
                    verbose: bool = False, libraries: tuple[str, str] | None = None
                    ) -> dict[str, str]:
        """``base`` with what puts a program on this world's clock (``libraries``: where
        libfaketime and the shim are for it, if not where they are for us)."""
        faketime, shim = libraries or (str(faketime_library()), str(shim_library()))
        preload = f"{faketime}:{shim}"
        if base.get("LD_PRELOAD"):
            preload += ":" + base["LD_PRELOAD"]
        env = {k: v for k, v in base.items() if not k.startswith(("FAKETIME", "NATSIM_TIMER"))}
        env.update({"LD_PRELOAD": preload, "FAKETIME": f"+0 x{self.speed:g}",
                    "FAKETIME_SHARED": " ".join(self.names), "FAKETIME_DONT_RESET": "1",
                    "NATSIM_SPEED": f"{self.speed:g}", "NATSIM_MODEL_TIME": "1"})
        if timer_log is not None:
            env["NATSIM_TIMER_LOG"] = str(timer_log)
        if verbose:
            env["NATSIM_TIMER_VERBOSE"] = "1"
        return env


def remove_segment(run_id: str) -> list[str]:
    """Remove a world's segment (what of it exists); the names removed."""
    removed = []
    for name in (f"sem.natsim_ft_sem_{run_id}", f"natsim_ft_shm_{run_id}"):
        path = SHM_DIR / name
        try:
            if stat.S_ISREG(path.lstat().st_mode):
                path.unlink()
                removed.append(str(path))
        except FileNotFoundError:
            continue
    return removed


def segment_run_ids() -> set[str]:
    """The runs whose segments are in /dev/shm (``natsim cleanup`` removes dead ones')."""
    ids = set()
    for path in SHM_DIR.glob("*natsim_ft_s*_*"):
        ids.add(path.name.rsplit("_", 1)[1])
    return ids


def _sem_create(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.sem_open.restype = ctypes.c_void_p
    libc.sem_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_uint]
    old = os.umask(0o077)
    try:
        sem = libc.sem_open(name.encode(), os.O_CREAT | os.O_EXCL, 0o600, 1)
    finally:
        os.umask(old)
    if not sem:
        err = ctypes.get_errno()
        raise ModelTimeError(f"cannot create the world's clock semaphore {name}: "
                             f"{os.strerror(err)}")
    libc.sem_close(ctypes.c_void_p(sem))


def scaled_settings(log: Path) -> list[JsonObject]:
    """What the timer shim scaled, from a world's ``timers.jsonl``."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def describe(record: Mapping[str, Json]) -> str:
    """``TCP_KEEPIDLE 30 model s -> 1 wall s, really 35 model s``."""
    unit = record.get("unit", "s")
    return (f"{record.get('option')} {record.get('model'):g} model {unit} -> "
            f"{record.get('wall'):g} wall {unit}, really {record.get('effective_model'):g} "
            f"model {unit}")
