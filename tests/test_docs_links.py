"""Every relative link in README.md and docs/ names a file that exists, and every #anchor a heading of its target
(GitHub's anchors: lowercase, punctuation other than '-' and '_' dropped, spaces as '-', '-1', '-2' ... for repeats)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^ {0,3}(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _unfenced(path: Path) -> list[str]:
    """The lines outside fenced code blocks (blank in their place)."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            line = ""
        lines.append("" if fenced else line)
    return lines


def _prose(path: Path) -> str:
    """The text outside code blocks and code spans (a link there is not a link)."""
    return CODE_SPAN.sub("", "\n".join(_unfenced(path)))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading's text."""
    text = re.sub(r"<[^>]+>", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    for line in _unfenced(path):
        hit = re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if hit:
            base = slug(hit.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            seen.setdefault(f"{base}-{n}" if n else base, 1)
    return set(seen)


def test_slug_follows_github():
    assert slug("How the defaults were chosen") == "how-the-defaults-were-chosen"
    assert slug("Knobs (`method.params.*` of `method.name: dsink`)") == "knobs-methodparams-of-methodname-dsink"
    assert slug("Ninth round (2026-12-04): where `kd`'s edge comes from") == "ninth-round-2026-12-04-where-kds-edge-comes-from"
    assert slug("f_L = ELR — ρ ≤ 50") == "f_l--elr--ρ--50"


def test_every_relative_link_and_anchor_resolves():
    broken = []
    for doc in _documents():
        for target in LINK.findall(_prose(doc)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
                continue
            file_part, _, anchor = target.partition("#")
            dest = (doc.parent / file_part).resolve() if file_part else doc
            where = f"{doc.relative_to(ROOT)}: {target}"
            if not dest.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor.lower() not in anchors(dest):
                broken.append(f"{where} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)
