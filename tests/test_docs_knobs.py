"""docs/dsink.md's knob table lists exactly D-SINK's knobs, and its paper table the preset's values."""

import dataclasses
import re
from pathlib import Path

from dsink.methods.dsink import PRESETS, DSinkParams

DOC = Path(__file__).resolve().parents[1] / "docs" / "dsink.md"


def _section(title: str) -> str:
    text = DOC.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def _first_column(section: str) -> set[str]:
    names = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names |= set(re.findall(r"`([a-z_]+)`", line.split("|")[1]))
    return names


def test_knob_table_is_exactly_the_params():
    assert _first_column(_section("Knobs")) == {f.name for f in dataclasses.fields(DSinkParams)}


def test_paper_table_lists_every_preset_value():
    section = _section("The paper's reading")
    assert _first_column(section) == set(PRESETS["paper"])
    for line in section.splitlines():
        if line.startswith("| `"):
            knobs = re.findall(r"`([a-z_]+)`", line.split("|")[1])
            cell = line.split("|")[2]
            for knob in knobs:
                value = PRESETS["paper"][knob]
                shown = f"{value:g}" if isinstance(value, float) else str(value)
                assert shown in cell, (knob, value, cell)
