"""The README's tables, generated from the code: one fact lives in one place.

``python -m simulator.views.docs`` rewrites the parts of README.md between the markers
``<!-- generated: NAME -->`` and ``<!-- end: NAME -->``; ``--check`` exits 1 when the committed
README differs (the test suite runs it). The scenario table comes from the scenario files and
the compression model (expected outcomes, default and largest safe speeds); the catalogue
table from the appliance records (timeouts, ranges, rules, sources, the date checked), with a
one-line note per entry kept here.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from simulator.core.appliances import CATALOGUE, Appliance, ExpiryAction
from simulator.core.profiles import PROFILES
from simulator.spec.compression import max_safe_speed
from simulator.spec.scenario import Scenario, load_scenario, scenario_names

README = Path(__file__).resolve().parents[2] / "README.md"

NOTES = {
    "nat-gw": "source NAT, 55,000 ports per destination per address, at most 8 addresses; "
              "UDP 350 s (assumed); the server's RST is the blog's reading "
              "(`late_from_outside: drop` for \"not delivered\")",
    "nlb": "client IP preserved (`nat: true` for IP targets, whose default is source NAT); "
           "UDP 120 s; `backends: N` targets behind 198.19.0.100 by flow hash",
    "nlb-tls": "once it sees a keepalive, its own to both ends every 20 s",
    "vpc-endpoint": "350 s only in the AWS blog",
    "vpc-endpoint-silent": "late packets dropped silently: the hang a 2026 field report "
                           "describes (botocore#2916, no RST seen)",
    "gwlb": "late data dropped whatever the stickiness, only a new SYN is a new flow (current "
            "guide); 3 inspection targets, stickiness 5/3/2, `send_tcp_reset_on_idle_timeout`",
    "gwlb-2023-blog": "the 2023 blog's reading: a late packet is re-hashed, delivered if that "
                      "firewall still holds the flow (2-tuple stickiness: the same one)",
    "global-accelerator": "keepalive probes do NOT refresh the timer: at least one byte of "
                          "data is needed; UDP 30 s; not configurable",
    "aws-network-firewall": "data dropped after expiry; the next SYN is a new flow",
    "ec2-sg-conntrack": "outbound allowed again, the reply is not; UDP 30 s",
    "azure-nat-gw": "50,000 per destination per address, up to 16 addresses; half-open TCP "
                    "30 s; no ICMP",
    "azure-lb": "`on_expiry: rst_both` (EnableTcpReset): RST to both ends at expiry and to "
                "late packets; UDP figure assumed",
    "gcp-nat": "64 ports per VM per destination (minPortsPerVm, static allocation; with dynamic "
               "port allocation the minimum is 32 and endpoint-independent mapping cannot be "
               "on); UDP 30 s; silent drop per third parties",
    "linux-conntrack": "`nf_conntrack_tcp_loose=1`: an inside packet is picked up anew, an "
                       "inbound one refused; UDP 30 s",
    "hyperplane-eni": "65,000 connections per ENI, the burst before Lambda scales out; "
                      "`enis: N`",
    "nat-gw-regional": "availability mode `regional`: up to 32 addresses per zone (a third "
                       "party's figure); 350 s assumed, no idle timeout documented",
    "azure-private-link": "\"TCP Keepalives lower than\" 300 s; silent at expiry is "
                          "disputed (`on_expiry: rst_both`); UDP assumed",
    "kube-proxy-conntrack": "`--conntrack-tcp-timeout-established` 24 h: Linux's 7200 s "
                            "keepalive suffices; the pod's untranslated reply meets the "
                            "client's RST; `--conntrack-tcp-be-liberal` for kernels before 6.1",
    "eks-network-policy": "the agent's eBPF table purged every 300 s (its source): egress "
                          "tracked anew, return traffic denied",
}


def _seconds(value: float) -> str:
    return f"{value:,.0f} s"


def _timeout(a: Appliance) -> str:
    text = _seconds(a.tcp_idle_timeout)
    if a.tcp_timeout_range is None:
        return text
    low, high = a.tcp_timeout_range
    return f"{text}, fixed" if low == high else f"{text} ({low:g}-{high:g})"


def _sources(a: Appliance) -> str:
    def label(url: str) -> str:
        host, _, path = re.sub(r"^https?://", "", url).partition("/")
        if host == "aws.amazon.com":
            return "AWS blog"
        parts = [x for x in path.split("#")[0].split("/") if x]
        if host == "github.com" and len(parts) >= 4:
            return f"{parts[1]}#{parts[3]}"
        return re.sub(r"\.html?$", "", parts[-1]) if parts else host
    return ", ".join(f"[{label(u)}]({u})" for u in a.sources)


def catalogue_table() -> str:
    rows = ["| name | TCP idle timeout | late packet from client / server | at expiry | "
            "keepalive counts | notes | sources (checked) |",
            "|---|---|---|---|---|---|---|"]
    for a in CATALOGUE.values():
        expiry = "RST to both ends" if a.on_expiry is ExpiryAction.RST_BOTH else "silent"
        rows.append(
            f"| `{a.name}` | {_timeout(a)} | {a.late_from_inside} / {a.late_from_outside} | "
            f"{expiry} | {'yes' if a.keepalive_refreshes else '**no**'} | "
            f"{NOTES.get(a.name, '')} | {_sources(a)}"
            f"{f' ({a.checked})' if a.checked else ''} |")
    return "\n".join(rows)


def _expected(s: Scenario) -> str:
    if s.expect_load is not None:
        counts = s.expect_load
        text = f"{counts.established:,} established"
        if counts.timed_out:
            text += f", {counts.timed_out:,} timed out"
        return text
    if s.scripted:  # one outcome per request: the lists keep their commas apart
        return f"[{s.expect_client}], [{s.expect_server}]"
    return f"{s.expect_client}, {s.expect_server}"


def scenario_table() -> str:
    rows = ["| name | what it shows | expected (client, server) | speed (safe up to) |",
            "|---|---|---|---|"]
    for name in scenario_names():
        s = load_scenario(name)
        safe = "" if s.load is not None else f" ({max_safe_speed(s):g})"
        rows.append(f"| `{name}` | {s.description.splitlines()[0] if s.description else ''} "
                    f"| {_expected(s)} | {s.speed:g}{safe} |")
    return "\n".join(rows)


def profile_table() -> str:
    rows = ["| profile | client | keepalive | run for real in the suite | source |",
            "|---|---|---|---|---|"]
    for p in PROFILES.values():
        timing = ("off" if p.keepalive == "off" else "SO_KEEPALIVE, OS timing"
                  if p.keepalive == "os" else f"{p.idle:g}/{p.interval:g}/{p.count}")
        rows.append(f"| `{p.name}` | {p.title} | {timing} | {p.real_client or 'no'} | "
                    f"{p.source} |")
    return "\n".join(rows)


TABLES = {"scenarios": scenario_table, "catalogue": catalogue_table, "profiles": profile_table}


def render(text: str) -> str:
    for name, make in TABLES.items():
        pattern = re.compile(rf"(<!-- generated: {name} -->\n).*?(\n<!-- end: {name} -->)",
                             re.DOTALL)
        found = pattern.search(text)
        if found is None:
            raise ValueError(f"README.md has no <!-- generated: {name} --> block")
        text = text[:found.end(1)] + make() + text[found.start(2):]
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.views.docs", description=__doc__)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if README.md differs from what the code generates")
    args = parser.parse_args(argv)
    current = README.read_text()
    wanted = render(current)
    if args.check:
        if wanted != current:
            print("README.md is out of date: run `python -m simulator.views.docs`", file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
