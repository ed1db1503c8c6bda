"""Natsim's YAML files (scenarios, matrices): strict parsing and field checks that name the
file, the field and what is allowed.

A typo in a keepalive setting would otherwise show up as a wrong verdict ten minutes later;
a key given twice would silently keep the last value; an unquoted ``on`` would be a boolean;
a few lines of YAML aliases would expand to gigabytes. Every loader goes through here.
"""

from __future__ import annotations

import math
import unicodedata
from pathlib import Path

import yaml

from simulator.core.appliances import MAX_MODEL_SECONDS
from simulator.spec.inputs import UnreadableError, read_bounded


class ScenarioError(ValueError):
    """A scenario file that cannot be run; the message names the file and the field."""

    def __init__(self, source: str, field_path: str, message: str) -> None:
        self.source = source
        self.field = field_path
        super().__init__(f"{source}: {field_path}: {message}" if field_path
                         else f"{source}: {message}")


def number(src: str, path: str, value: object, *, positive: bool = True,
            high: float = MAX_MODEL_SECONDS) -> float:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10 ** 15:
        raise ScenarioError(src, path, f"must be at most {high:g}, got a number of "
                                       f"{len(str(abs(value)))} digits")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ScenarioError(src, path, f"must be a number of model seconds, got {value!r}")
    if positive and value <= 0:
        raise ScenarioError(src, path, f"must be greater than 0, got {value!r}")
    if value < 0:
        raise ScenarioError(src, path, f"must be 0 or more, got {value!r}")
    if value > high:
        raise ScenarioError(src, path, f"must be at most {high:g}, got {value!r}")
    return float(value)


def text(src: str, path: str, value: object) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ScenarioError(src, path, f"must be text, got {value!r}")
    text = str(value).strip()
    if len(text) > MAX_TEXT:
        raise ScenarioError(src, path, f"{len(text)} characters: at most {MAX_TEXT}")
    control = next((c for c in text if c not in "\n\t" and unicodedata.category(c) in
                    ("Cc", "Cf", "Zl", "Zp")), None)
    if control is not None:  # printed to terminals, logs and pages: no escape sequences
        raise ScenarioError(src, path, f"control character U+{ord(control):04X} at position "
                                       f"{text.index(control)}: write plain text")
    return text


def integer(src: str, path: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ScenarioError(src, path, f"must be a whole number from {low} to {high}, "
                                       f"got {value!r}")
    return value


def mapping(src: str, path: str, value: object, allowed: tuple[str, ...]) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ScenarioError(src, path, f"must be a mapping with keys {', '.join(allowed)}; "
                                       f"got {value!r}")
    unknown = [k for k in value if k not in allowed]
    if unknown:
        where = f"{path}.{unknown[0]}" if path else str(unknown[0])
        raise ScenarioError(src, where, f"unknown field; allowed here: {', '.join(allowed)}")
    return value


def choice(src: str, path: str, value: object, allowed: tuple[str, ...]) -> str:
    if isinstance(value, bool):
        raise ScenarioError(src, path, f"YAML read this as {str(value).lower()}; write one of "
                            f"{', '.join(allowed)} (in quotes if it is a YAML word)")
    if not isinstance(value, str) or value not in allowed:
        raise ScenarioError(src, path, f"must be one of {', '.join(allowed)}; got {value!r}")
    return str(value)



MAX_FILE_BYTES = 256 * 1024
MAX_DEPTH = 32
"""Nesting a natsim file may have (a scenario needs five)."""
MAX_TEXT = 4000
"""Characters in a free-text field (description, story, request)."""


class _StrictLoader(yaml.SafeLoader):
    """YAML as scenario files need it: a key given twice is an error (not last-wins), and
    anchors/aliases are refused (a few lines of aliases can expand to gigabytes)."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            raise yaml.constructor.ConstructorError(
                None, None, "anchors and aliases (*name) are not allowed in natsim files",
                self.peek_event().start_mark)  # type: ignore[no-untyped-call]
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_DEPTH} deep",
                    self.peek_event().start_mark)  # type: ignore[no-untyped-call]
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False
                          ) -> dict[object, object]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):  # a list or a map as a key
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a word", key_node.start_mark)
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> object:
    """A natsim YAML file, size-limited and strictly parsed; errors name the file.

    Whatever the bytes, only :class:`ScenarioError` comes out: a FIFO or a device is refused
    before reading, nesting deeper than :data:`MAX_DEPTH` is refused while composing (deep
    enough for any scenario, far from Python's recursion limit)."""
    try:
        text = read_bounded(path, MAX_FILE_BYTES).decode("utf-8")
    except UnreadableError as exc:
        raise ScenarioError(str(path), "", exc.why) from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(str(path), "", f"cannot be read: not UTF-8 text ({exc})") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise ScenarioError(str(path), "", f"not valid YAML: {exc}") from None
    except ValueError as exc:  # an integer of more than 4,300 digits, say
        raise ScenarioError(str(path), "", f"not a natsim file: {exc}") from None
