"""The README's tables are generated from the code; they must not drift from it."""

from __future__ import annotations

import pytest

from simulator.views import docs


def test_the_committed_readme_matches_the_code() -> None:
    text = docs.README.read_text()
    assert docs.render(text) == text, \
        "README.md is out of date: run `python -m simulator.views.docs`"


def test_a_drifted_figure_is_caught() -> None:
    text = docs.README.read_text()
    drifted = text.replace("| `nat-gw` | 350 s |", "| `nat-gw` | 305 s |", 1)
    assert drifted != text
    assert docs.render(drifted) == text
    assert docs.main(["--check"]) == 0


def test_a_missing_block_is_an_error() -> None:
    with pytest.raises(ValueError, match="generated: scenarios"):
        docs.render("no markers here")
