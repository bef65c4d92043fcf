"""Every code block of README.md runs in a test or says what it needs.

The line right before each fenced block is a marker (an HTML comment, invisible on the rendered page):

* ``<!-- tested: here -->``: this file runs the block (Python blocks, with ``exec``);
* ``<!-- tested: tests/FILE.py::NAME[, tests/FILE.py::NAME ...] -->``: the named tests cover it (each must exist);
* ``<!-- needs: WHAT -->``: it cannot run here, WHAT one of :data:`NEEDS` (a GPU, the user's data, an install
  into the checkout, or minutes of training).

Whatever the marker, every ``dsink ...`` command in every block is parsed with the real argument parser
(``dsink.cli.build_parser``), each ``--set KEY=VALUE`` key must be a config key, and each ``configs/*.yaml`` it
names must exist, so a flag, key or config that does not exist fails here.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NEEDS = {"gpu", "your data", "install", "minutes"}
MARKER = re.compile(r"^<!--\s*(tested|needs):\s*(.*?)\s*-->$")
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclasses.dataclass
class Block:
    lang: str
    code: str
    line: int  # 1-based line of the opening fence
    marker: tuple[str, str] | None  # (kind, value) of the marker on the line before, if any


def code_blocks(text: str) -> list[Block]:
    """The fenced blocks of a markdown text, each with the marker on the line right before its fence."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        hit = FENCE.match(lines[i])
        if not hit:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        m = MARKER.match(lines[start - 1].strip()) if start else None
        out.append(Block(hit.group(1), "\n".join(body) + "\n", start + 1, (m.group(1), m.group(2)) if m else None))
        i += 1
    return out


def named_test_exists(ref: str) -> bool:
    """``tests/FILE.py::NAME`` names a test function defined in that file (at top level or in a class)."""
    path, _, name = ref.partition("::")
    file = ROOT / path
    if not (path.startswith("tests/") and file.is_file() and name):
        return False
    tree = ast.parse(file.read_text())
    return any(isinstance(n, ast.FunctionDef) and n.name == name for n in ast.walk(tree))



def marker_problems(blocks: list[Block]) -> list[str]:
    """What is wrong with the blocks' markers (empty: every block is covered or marked)."""
    bad = []
    for b in blocks:
        where = f"README.md:{b.line} ({b.lang or 'no language'})"
        if b.marker is None:
            bad.append(f"{where}: no marker; add <!-- tested: ... --> or <!-- needs: ... --> on the line before")
            continue
        kind, value = b.marker
        if kind == "needs" and value not in NEEDS:
            bad.append(f"{where}: needs {value!r}; valid: {', '.join(sorted(NEEDS))}")
        elif kind == "tested" and value == "here" and b.lang != "python":
            bad.append(f"{where}: 'tested: here' runs Python blocks only")
        elif kind == "tested" and value != "here":
            bad += [f"{where}: no test {ref.strip()!r}" for ref in value.split(",") if not named_test_exists(ref.strip())]
    return bad


def dsink_commands(code: str) -> list[list[str]]:
    """The argument lists of the ``dsink`` commands in a shell block (``dsink``, ``.venv/bin/dsink``,
    ``python -m dsink``, ``torchrun ... -m dsink``), continuation lines joined, comments dropped."""
    out = []
    for segment in re.split(r"&&|\|\||;|\|", code.replace("\\\n", " ")):
        for line in segment.splitlines():
            words = shlex.split(line, comments=True)
            for i, w in enumerate(words):
                if w == "dsink" and i and words[i - 1] == "-m" or (w.endswith("dsink") and i == 0):
                    out.append(words[i + 1:])
                    break
    return out


def config_key_problem(key: str) -> str | None:
    """Why ``key`` (of ``--set key=value``) is not a config key of ``dsink run``/``train`` (None: it is)."""
    from dsink.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
    from dsink.methods.dsink import DSinkParams
    from dsink.pipeline import PipelineConfig

    fields = lambda cls: {f.name for f in dataclasses.fields(cls)}  # noqa: E731
    parts = key.split(".")
    sections = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "train": TrainConfig}
    if parts[0] in sections:
        return None if len(parts) == 2 and parts[1] in fields(sections[parts[0]]) else f"no config key {key}"
    if parts[0] == "method":
        return None if parts[1:2] in (["name"], ["params"]) else f"no config key {key}"
    if parts[0] == "pipeline" and len(parts) > 1 and parts[1] in fields(PipelineConfig):
        if parts[1] == "target" and len(parts) > 2 and parts[2] not in fields(DSinkParams):
            return f"D-SINK has no knob {parts[2]!r} ({key})"
        return None
    return f"no config key {key}"


def command_problems(args: list[str]) -> list[str]:
    """Why ``dsink ARGS`` would be refused by the parser, or names a missing config or an unknown key."""
    from dsink.cli import build_parser

    cmd = "dsink " + " ".join(args)
    try:
        ns = build_parser().parse_args(args)
    except SystemExit:
        return [f"{cmd}: the argument parser refuses it"]
    bad = [f"{cmd}: {p}" for kv in getattr(ns, "overrides", []) or []
           if (p := config_key_problem(kv.partition("=")[0]))]
    config = getattr(ns, "config", None)
    if config and config.startswith("configs/") and not (ROOT / config).is_file():
        bad.append(f"{cmd}: no file {config}")
    return bad


def test_every_block_is_tested_or_marked():
    blocks = code_blocks(README.read_text())
    assert blocks, "README has no code block"
    bad = marker_problems(blocks)
    assert not bad, "\n".join(bad)


def test_marker_check_catches_unmarked_blocks_and_missing_tests():
    text = ("```bash\ndsink run\n```\n<!-- tested: tests/test_readme.py::no_such_test -->\n```python\npass\n```\n"
            "<!-- needs: a miracle -->\n```bash\nx\n```\n<!-- tested: tests/test_readme.py::"
            "test_every_block_is_tested_or_marked -->\n```bash\ndsink list models\n```\n")
    bad = marker_problems(code_blocks(text))
    assert len(bad) == 3 and "no marker" in bad[0] and "no_such_test" in bad[1] and "a miracle" in bad[2]


def test_every_dsink_command_parses():
    commands = [c for b in code_blocks(README.read_text()) if b.lang in ("bash", "sh", "") for c in dsink_commands(b.code)]
    assert len(commands) >= 8, commands
    bad = [p for c in commands for p in command_problems(c)]
    assert not bad, "\n".join(bad)


def test_command_check_catches_a_flag_a_key_and_a_config_that_do_not_exist():
    assert dsink_commands("bash x.sh && .venv/bin/dsink run  # c\npython -m dsink list models \\\n") == [
        ["run"], ["list", "models"]]
    assert command_problems(["run", "--no-such-flag"])
    assert command_problems(["run", "--set", "optim.no_such_key=1"])
    assert command_problems(["run", "--set", "pipeline.target.avg_mix=0.5"])  # a removed knob
    assert command_problems(["run", "configs/no_such.yaml"])
    assert not command_problems(["run", "--set", "pipeline.target.preset=paper", "--paper"])


def test_python_blocks_run():
    blocks = [b for b in code_blocks(README.read_text()) if b.marker == ("tested", "here")]
    assert blocks, "README has no Python example run here"
    for b in blocks:
        exec(compile(b.code, f"README.md:{b.line}", "exec"), {"__name__": "readme"})


def test_readme_lists_every_cli_command():
    from dsink.cli import build_parser

    text = README.read_text()
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:
        assert f"dsink {name}" in text, name


def test_readme_is_a_user_document():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    for word in (r"\bround\b", r"pre-registered", r"random13"):
        assert not re.search(word, text, re.I), word

