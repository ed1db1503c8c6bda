"""What people hand natsim, malformed: only natsim's own errors come out (exit 2 naming the
file), never a traceback. A slice of ``make fuzz``'s input pass (``bench/fuzz_inputs.py``)
under hypothesis, and each case once found by hand."""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fuzz_inputs import (
    capture_seeds,
    check_capture,
    check_yaml,
    conversation,
    mutate_capture,
    mutate_yaml,
    pcap_bytes,
    pcapng_bytes,
    yaml_seeds,
)
from simulator.cli import main as cli
from simulator.spec.scenario import ScenarioError, load_scenario
from tests.unit.test_scenario import GOOD

SEEDS = yaml_seeds()
CAPTURES = capture_seeds()
FIELDS = ["appliance", "name", "speed", "client", "server", "expect", "timeout", "keepalive",
          "idle", "interval", "count", "delay", "clients", "appliances", "description",
          "events", "tcp_idle_timeout", "profile", "load", "chain"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                    st.text(max_size=20), st.sampled_from(FIELDS))
documents = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                     st.dictionaries(st.sampled_from(FIELDS), inner, max_size=5)),
    max_leaves=25)
slow = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _exits_cleanly(code: int) -> bool:
    return code // 10 in (0, 1, 2) and code % 10 in (0, 1, 2)


@slow
@given(doc=documents)
def test_random_yaml_documents_give_natsims_error_or_a_scenario(tmp_path: Path,
                                                                doc: object) -> None:
    path = tmp_path / "doc.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    assert _exits_cleanly(check_yaml(path))


@slow
@given(rng=st.randoms(use_true_random=False), which=st.integers(0, len(SEEDS) - 1))
def test_mutated_shipped_files_give_natsims_error_or_a_scenario(tmp_path: Path,
                                                               rng: random.Random,
                                                               which: int) -> None:
    path = tmp_path / "doc.yaml"
    path.write_bytes(mutate_yaml(rng, SEEDS[which]))
    assert _exits_cleanly(check_yaml(path))


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rng=st.randoms(use_true_random=False), which=st.integers(0, len(CAPTURES) - 1))
def test_mutated_captures_give_exit_2_or_a_counted_skip(tmp_path: Path, rng: random.Random,
                                                        which: int) -> None:
    path = tmp_path / "c.pcap"
    path.write_bytes(mutate_capture(rng, CAPTURES[which]))
    assert check_capture(path) in (0, 2)


# -- the cases found by hand -----------------------------------------------------------------


@pytest.mark.parametrize("text,words", [
    (GOOD.replace("speed: 35", "speed: " + "9" * 400), "400 digits"),  # OverflowError
    (GOOD.replace("speed: 35", "speed: " + "9" * 5000), "not a natsim file"),  # ValueError
    (GOOD + "x: " + "[" * 50_000 + "]" * 50_000 + "\n", "nested more than"),  # RecursionError
    (GOOD + "x: " + "{a: " * 50_000 + "1" + "}" * 50_000 + "\n", "nested more than"),
    (GOOD + "? [1, 2]\n: 3\n", "a key must be a word"),  # TypeError: unhashable
    (GOOD + "? {a: 1}\n: 3\n", "a key must be a word"),
    (GOOD.replace("appliance: nat-gw", "description: \"evil \\e[2J\\a\"\nappliance: nat-gw"),
     "control character U+001B"),
])
def test_malformed_yaml_is_exit_2_naming_the_file(tmp_path: Path, text: str, words: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    assert cli.main(["check", str(path)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert str(path) in err and words in err


def test_special_files_are_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.yaml"
    zero.symlink_to("/dev/zero")
    folder = tmp_path / "dir.yaml"
    folder.mkdir()
    for path, what in ((fifo, "a FIFO"), (zero, "a device"), (folder, "a directory")):
        with pytest.raises(ScenarioError, match=f"is {what}"):
            load_scenario(str(path))
        assert cli.main(["replay", str(path), "--appliance", "nat-gw"]) == cli.EXIT_USAGE
        assert cli.main(["matrix", str(path), "--list"]) == cli.EXIT_USAGE


def test_a_header_whose_lengths_lie_is_skipped_without_host(tmp_path: Path) -> None:
    """The first-SYN search read past a packet whose IHL claims 60 bytes (IndexError)."""
    packets = conversation()
    liar = bytearray(packets[0][1][:30])
    liar[0] = 0x4F  # IHL 15: 60 bytes of header in a 30-byte packet
    liar[9] = 6
    path = tmp_path / "c.pcap"
    path.write_bytes(pcap_bytes([(0.0, bytes(liar)), *packets]))
    assert check_capture(path) == 0


def _pcapng_with(extra: bytes) -> bytes:
    good = pcapng_bytes(conversation())
    shb = struct.unpack_from("<I", good, 4)[0]
    idb = struct.unpack_from("<I", good, shb + 4)[0]
    return good[:shb + idb] + extra


@pytest.mark.parametrize("block,words", [
    (struct.pack("<II", 6, 12) + struct.pack("<I", 12), "malformed packet block"),
    (struct.pack("<II", 6, 0xFFFFFFFC), "claims 4,294,967,292 bytes"),
    (struct.pack("<II", 6, 4), "claims 4 bytes"),
])
def test_short_and_huge_pcapng_blocks(tmp_path: Path, block: bytes, words: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.pcapng"
    path.write_bytes(_pcapng_with(block))
    code = cli.main(["replay", str(path), "--appliance", "nat-gw"])
    out = capsys.readouterr()
    assert words in out.out + out.err
    assert code == (0 if "malformed" in words else cli.EXIT_USAGE)


def test_the_connection_cap_bounds_memory_and_says_what_it_left(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c, s = bytes([198, 18, 1, 10]), bytes([198, 19, 1, 10])
    from bench.fuzz_inputs import _ipv4_tcp  # noqa: PLC0415

    packets = [(i * 0.001, _ipv4_tcp(c, 10_000 + i, s, 80, 0x02, 1)) for i in range(300)]
    packets += [(400 + i * 0.001, _ipv4_tcp(s, 80, c, 10_000 + i, 0x10, 1)) for i in range(300)]
    path = tmp_path / "many.pcap"
    path.write_bytes(pcap_bytes(packets))
    assert cli.main(["replay", str(path), "--appliance", "nat-gw", "--max-connections",
                     "100"]) == 0
    out = capsys.readouterr().out
    assert "100 connection(s)" in out and "400 of connections past --max-connections 100" in out
    assert cli.main(["replay", str(path), "--appliance", "nat-gw", "--all"]) == 0
    listed = capsys.readouterr().out
    assert listed.count("  TCP ") == 300
    assert cli.main(["replay", str(path), "--appliance", "nat-gw"]) == 0
    short = capsys.readouterr().out
    assert short.count("  TCP ") == 50 and "250 more connection(s)" in short
