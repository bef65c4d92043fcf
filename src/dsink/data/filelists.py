"""Readers of the plain-text file lists that image data sets are published with (``<path> <label>`` lines, one key
a line, class-name files), and the light checks done at load: every line parsed (errors name the file and the
line), the existence of a bounded, evenly spaced sample of the listed files checked, nothing decoded.
Used by :mod:`dsink.data.realnoise`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import InputError
from .images import ImageFiles

STAT_LIMIT = 1000  # listed image files whose existence is checked at load, per split (evenly spaced)


def text_lines(path: Path, expected: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its line end) of every non-blank line of a text file."""
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield n, line
    except FileNotFoundError:
        raise InputError(f"{path} not found; it must hold {expected}") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not a UTF-8 text file ({e}); it must hold {expected}") from None
    except OSError as e:
        raise InputError(f"{path} cannot be read ({e}); it must hold {expected}") from None


def path_label_lines(path: Path, example: str, num_labels: int) -> Iterator[tuple[int, str, int]]:
    """(line number, path, label) of a file of lines ``<path> <label>``; labels must lie in 0..num_labels-1."""
    expected = f"lines '<path> <label>' (e.g. {example!r})"
    for n, line in text_lines(path, expected):
        parts = line.strip().rsplit(None, 1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise InputError(f"line {n} of {path} is {line!r}: expected '<path> <label>' (e.g. {example!r})")
        label = int(parts[1])
        if not 0 <= label < num_labels:
            raise InputError(f"line {n} of {path}: label {label} is out of range; expected a class index "
                             f"0..{num_labels - 1}")
        yield n, parts[0], label


def key_lines(path: Path, example: str) -> Iterator[tuple[int, str]]:
    """(line number, key) of a file of one key per line."""
    expected = f"one image key per line (e.g. {example!r})"
    for n, line in text_lines(path, expected):
        key = line.strip()
        if len(key.split()) != 1:
            raise InputError(f"line {n} of {path} is {line!r}: expected one image key per line (e.g. {example!r})")
        yield n, key


def names_file(path: Path, count: int, expected: str, parse: Callable[[str], str] = str.strip) -> list[str] | None:
    """The first ``count`` class names of ``path`` (one a line, read by ``parse``), or None when it is missing."""
    if not path.is_file():
        return None
    names = []
    for n, line in text_lines(path, expected):
        name = parse(line)
        if not name:
            raise InputError(f"line {n} of {path} is {line!r}: expected {expected}")
        names.append(name)
        if len(names) == count:
            return names
    raise InputError(f"{path} lists {len(names)} class names; expected {count} ({expected})")


def check_files(paths: list[str], origin: Callable[[int], str], hint: str) -> int:
    """Raise when listed image files are missing: the existence of at most STAT_LIMIT evenly spaced files
    (the first and the last among them) is checked; nothing is decoded. Returns how many were checked."""
    if not paths:
        return 0
    idx = np.unique(np.linspace(0, len(paths) - 1, min(len(paths), STAT_LIMIT)).astype(int))
    missing = [int(i) for i in idx if not os.path.isfile(paths[i])]
    if missing:
        i = missing[0]
        raise InputError(f"{len(missing)} of {len(idx)} listed images checked do not exist, e.g. {paths[i]!r} "
                         f"({origin(i)}); {hint}")
    return len(idx)


def joiner(root: Path) -> Callable[[str], str]:
    """``rel -> root/rel`` (plain string concatenation: a million keys in a tenth of a second)."""
    prefix = os.path.join(str(root), "")
    return lambda rel: prefix + rel


def image_files(paths: list[str], size: int) -> ImageFiles:
    """:class:`ImageFiles` of ``paths``, given as the UTF-8 byte array it keeps (fast for a million paths)."""
    return ImageFiles(np.asarray([p.encode("utf-8") for p in paths], dtype=bytes) if paths else [], size)
