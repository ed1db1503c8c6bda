"""Print the Debian mirror apt uses for a suite: from /etc/apt/sources.list.d/*.sources
(deb822) or /etc/apt/sources.list, whichever names the suite first. `make image` builds its
offline base image from it, so that the build reaches only what apt already reaches."""

from __future__ import annotations

import sys
from pathlib import Path

APT = Path("/etc/apt")


def deb822(text: str, suite: str) -> str | None:
    for stanza in text.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if ":" in line and not line.startswith((" ", "#")):
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.split()
        if "deb" in fields.get("types", []) and suite in fields.get("suites", []):
            return fields.get("uris", [None])[0]
    return None


def one_line(text: str, suite: str) -> str | None:
    for line in text.splitlines():
        words = [w for w in line.split("#")[0].split() if not w.startswith("[")]
        if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
            return words[1]
    return None


def mirror(suite: str, apt: Path = APT) -> str:
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        if found := deb822(path.read_text(), suite):
            return found
    for path in [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]:
        if path.exists() and (found := one_line(path.read_text(), suite)):
            return found
    raise SystemExit(f"no apt source for suite {suite!r} in {apt}/sources.list(.d)")


if __name__ == "__main__":
    print(mirror(sys.argv[1]))
