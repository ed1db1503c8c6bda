"""The complete lines a growing file has gained since the last look (``tail -f``'s part that
both a live world's dataplane, reading ``control.jsonl``, and ``natsim events --follow``,
reading ``events.jsonl``, need): a line still being written waits for its end."""

from __future__ import annotations

from pathlib import Path


class LineTail:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = ""

    def new_lines(self) -> list[str]:
        """The whole lines added since the last call (none while the file does not exist)."""
        try:
            if self.path.stat().st_size <= self.offset:
                return []
            with self.path.open() as f:
                f.seek(self.offset)
                chunk = f.read()
                self.offset = f.tell()
        except FileNotFoundError:
            return []
        *lines, self.partial = (self.partial + chunk).split("\n")
        return [line for line in lines if line.strip()]
