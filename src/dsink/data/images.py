"""Image files as people have them: folders of class subfolders, or a CSV of paths and labels.

Nothing here decodes a whole data set up front. :class:`ImageFiles` is a lazy, indexable list of files
that decodes one image on demand (any PIL mode - L, RGB, RGBA, P, I;16, ... - to 3-channel uint8 RGB, or
1-channel grayscale for models trained on 1-channel data;
shorter side resized to ``image_size``, then centre-cropped square); :mod:`dsink.data.loader` decodes
them in ``DataLoader`` workers per batch (streaming) or once into memory.

Layouts read by :func:`scan_folder`:

* ``DIR/<class>/...``: every image is training data; the validation split is held out of it
  (``data.val_fraction``) and there is no clean test set;
* ``DIR/train/<class>/...`` with optional ``DIR/val/<class>/...`` (the noisy validation split, used
  as given) and ``DIR/test/<class>/...`` (a clean test set).

Class names are the subfolder names, sorted (torchvision's ``ImageFolder`` order).
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"})
SPLITS = ("train", "val", "test")


class UnreadableImage(InputError):
    """An image file that cannot be decoded (names the file and the cause). ``skip_hint`` says how the command
    at hand skips such files (training: the config key; ``dsink predict``: its switch), see :meth:`hinting`."""

    SKIP_HINT = "set data.skip_unreadable=true to list and skip unreadable files"

    def __init__(self, path: str, cause: str, more: str = "", skip_hint: str = SKIP_HINT):
        self.path, self.cause, self.more = path, cause, more
        super().__init__(f"image {path!r} cannot be read ({cause}){more}; fix or remove it, or {skip_hint}")

    def hinting(self, skip_hint: str) -> "UnreadableImage":
        """The same error with another way to skip unreadable files."""
        return UnreadableImage(self.path, self.cause, self.more, skip_hint)


def decode_image(path: str, size: int = 0, channels: int = 3) -> np.ndarray:
    """The image at ``path`` as a (C, S, S) uint8 array (``size`` > 0) or (C, H, W) in its own size (``size`` 0),
    with C = ``channels``: 3 (RGB) or 1 (grayscale, for models trained on 1-channel data such as Fashion-MNIST).

    Every mode is converted to RGB (transparency composited on white), then to grayscale when ``channels`` is 1;
    the shorter side is resized to ``size`` (bilinear, with JPEG draft decoding when the file is at least twice
    as large), then the centre square is cropped. An unreadable file raises :class:`UnreadableImage`.
    """
    from PIL import Image

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels}")
    try:
        with Image.open(path) as im:
            if size and im.format == "JPEG" and min(im.size) >= 2 * size:
                im.draft("RGB", (size, size))  # decode at a reduced scale (still >= size): much faster
            im = _to_rgb(im)
            if channels == 1:
                im = im.convert("L")
            if size:
                w, h = im.size
                s = size / min(w, h)
                nw, nh = max(size, round(w * s)), max(size, round(h * s))
                if (nw, nh) != (w, h):
                    im = im.resize((nw, nh), Image.BILINEAR)
                left, top = (nw - size) // 2, (nh - size) // 2
                im = im.crop((left, top, left + size, top + size))
            a = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UnreadableImage(str(path), str(e) or type(e).__name__) from None
    if a.ndim == 2:  # grayscale: (H, W) -> (H, W, 1)
        a = a[:, :, None]
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def _to_rgb(im):
    from PIL import Image

    if im.mode == "RGB":
        return im
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, im).convert("RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        hi = a.max() or 1.0
        return Image.fromarray((a * (255.0 / hi)).astype(np.uint8)).convert("RGB")
    return im.convert("RGB")


class ImageFiles:
    """A lazy list of image files: ``len``, ``shape`` (N, C, S, S), ``files[i]`` decodes image ``i``, and
    ``files[index_array]`` / ``files[slice]`` is the sub-list (nothing decoded). ``channels``: 3 (RGB, the
    default) or 1 (grayscale)."""

    def __init__(self, paths: Iterable[str] | np.ndarray, size: int = 0, channels: int = 3):
        paths = np.asarray(list(paths) if not isinstance(paths, np.ndarray) else paths)
        # UTF-8 bytes in one fixed-width array: a quarter of numpy's str width, and no Python object per path
        # (DataLoader workers share the array copy-on-write without touching reference counts)
        self._raw = paths if paths.dtype.kind == "S" else np.char.encode(paths.astype(str), "utf-8")
        self.size = int(size)
        self.channels = int(channels)

    @property
    def paths(self) -> np.ndarray:
        """The file paths (str array)."""
        return np.char.decode(self._raw, "utf-8") if len(self._raw) else np.asarray([], dtype=str)

    def path(self, i: int) -> str:
        """The path of file ``i``."""
        return self._raw[i].decode("utf-8")

    def __len__(self) -> int:
        return len(self._raw)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return decode_image(self.path(key), self.size, self.channels)
        return ImageFiles(self._raw[key], self.size, self.channels)

    @property
    def shape(self) -> tuple[int, ...]:
        """(N, C, S, S); for ``size`` 0, the size of the first image (all must share it)."""
        c = self.channels
        if self.size:
            return (len(self), c, self.size, self.size)
        if not len(self):
            return (0, c, 0, 0)
        h, w = image_header(self.path(0))[:2]
        return (len(self), c, h, w)

    def nbytes(self) -> int:
        """Bytes of the decoded uint8 array of all the images."""
        return int(np.prod(self.shape, dtype=np.int64))


def image_header(path: str) -> tuple[int, int, str, str]:
    """(height, width, mode, format) read from the file header; :class:`UnreadableImage` if it has none."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0], im.mode, im.format or "?"
    except (OSError, ValueError, SyntaxError) as e:
        raise UnreadableImage(str(path), str(e) or type(e).__name__) from None


def headers(paths: np.ndarray, threads: int = 8) -> list[tuple[int, int, str, str] | UnreadableImage]:
    """:func:`image_header` of every path (read by a thread pool), an :class:`UnreadableImage` for each failure."""

    def one(p):
        try:
            return image_header(p)
        except UnreadableImage as e:
            return e

    with ThreadPoolExecutor(max(1, threads)) as pool:
        return list(pool.map(one, paths, chunksize=64))


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _class_dirs(d: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(d) if e.is_dir() and not e.name.startswith("."))


def _inside(path: str, folder: str) -> bool:
    """``path`` is ``folder`` or lies below it (both real paths)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class FolderWalk:
    """Lists the image files under folders of one scan, visiting each real folder once.

    Symbolic links to folders are followed unless following them would count files twice or never end: a
    link into the scanned folder itself (those files are counted where they lie), to a folder already
    visited, or to one holding a visited folder (a loop such as ``ln -s .. DIR/a/loop``). Such links are
    collected in :attr:`skipped` and logged once by :meth:`warn_skipped`.
    """

    def __init__(self, root: str | Path):
        self.root = os.path.realpath(root)
        self.seen: set[str] = set()  # real paths of the folders visited
        self.skipped: list[tuple[str, str]] = []  # (link, its target) not followed

    def files(self, d: str | Path) -> list[str]:
        """The image files under ``d`` (recursively: a folder's files sorted, then its subfolders in order;
        hidden files and folders skipped)."""
        out: list[str] = []
        self._walk(str(d), os.path.realpath(d), out)
        return out

    def _walk(self, path: str, real: str, out: list[str]) -> None:
        self.seen.add(real)
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError as e:  # an unreadable folder is skipped, as os.walk does, but not silently
            log.warning("cannot list folder %s (%s); its images are skipped", path, e.strerror or e)
            return
        out.extend(e.path for e in entries if _is_image(e.name) and not e.is_dir())
        for e in entries:
            if e.name.startswith(".") or not e.is_dir():
                continue
            sub = os.path.realpath(e.path) if e.is_symlink() else os.path.join(real, e.name)
            if e.is_symlink() and self._revisits(sub):
                self.skipped.append((e.path, sub))
                continue
            self._walk(e.path, sub, out)

    def _revisits(self, target: str) -> bool:
        """Following a link to ``target`` would reach a folder this scan visits anyway (or loop)."""
        return _inside(target, self.root) or any(_inside(s, target) for s in self.seen)

    def warn_skipped(self) -> None:
        if self.skipped:
            shown = "; ".join(f"{link} -> {target}" for link, target in self.skipped[:10])
            more = f" (and {len(self.skipped) - 10} more)" if len(self.skipped) > 10 else ""
            log.warning("skipped %d symbolic link(s) to folders already scanned or holding the scanned folder "
                        "(a loop); each folder is read once: %s%s", len(self.skipped), shown, more)


def image_files_under(d: Path) -> list[str]:
    """The image files under folder ``d`` (recursively, sorted; hidden files and folders skipped; each real
    folder once, see :class:`FolderWalk`)."""
    walk = FolderWalk(d)
    out = walk.files(d)
    walk.warn_skipped()
    return out


@dataclass
class ImageTable:
    """Files of a folder or CSV with their given labels, split and (optional) true labels."""

    paths: np.ndarray  # (N,) str
    labels: np.ndarray  # (N,) int64 given labels
    split: np.ndarray  # (N,) str: train | val | test
    class_names: list[str]
    true: np.ndarray | None = None  # (N,) int64 or None
    index_labels: bool = False  # labels were given as class indices (CSV of integers)
    where: str = ""  # names the folder or CSV in messages


def scan_folder(root: str | Path) -> ImageTable:
    """The images of a class-subfolder folder (``DIR/<class>/`` or ``DIR/{train,val,test}/<class>/``)."""
    root = Path(root).expanduser()
    where = f"image folder {str(root)!r}"
    if not root.is_dir():
        raise InputError(f"{where} not found; set data.root to a folder of class subfolders (DIR/<class>/image.jpg) "
                         "or to DIR holding train/, val/, test/ in that layout")
    subs = _class_dirs(root)
    split_dirs = [s for s in SPLITS if s in subs]
    if "train" in split_dirs:
        parts = {s: root / s for s in split_dirs}
    elif split_dirs and set(subs) <= set(SPLITS):
        raise InputError(f"{where} has {', '.join(split_dirs)}/ but no train/; add DIR/train/<class>/ with the "
                         "training images")
    else:
        parts = {"train": root}
    names = sorted({c for d in parts.values() for c in _class_dirs(d)})
    if not names:
        raise InputError(f"{where} holds no class subfolders; put each class's images in DIR/<class>/ "
                         "(or DIR/train/<class>/), or give a CSV with data.csv_path")
    index = {c: i for i, c in enumerate(names)}
    paths, labels, split = [], [], []
    walk = FolderWalk(root)
    for s, d in parts.items():
        for c in _class_dirs(d):
            files = walk.files(d / c)
            paths += files
            labels += [index[c]] * len(files)
            split += [s] * len(files)
    walk.warn_skipped()
    if not paths:
        exts = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise InputError(f"{where} holds no image files in its class subfolders (extensions {exts})")
    return ImageTable(np.asarray(paths), np.asarray(labels, np.int64), np.asarray(split), names, where=where)


def read_csv_table(root: str | Path, csv_path: str | Path, *, need_label: bool = True) -> ImageTable:
    """Images listed in a CSV with columns ``path,label`` and optional ``split`` (train/val/test) and
    ``true_label``; paths relative to ``root``; labels integers (class indices) or class names (sorted).
    ``need_label=False`` (images to label): only ``path`` is needed, and labels are read as all 0."""
    root = Path(root).expanduser()
    where = f"label CSV {str(csv_path)!r}"
    try:
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise InputError(f"{where} not found; set data.csv_path") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{where} cannot be read ({e})") from None
    if not need_label and rows and "path" in rows[0]:
        rows = [{**r, "label": "0", "split": "train", "true_label": ""} for r in rows]
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise InputError(f"{where} needs a header with columns path,label (optional: split,true_label)")
    names = sorted({r["label"] for r in rows} | {r["true_label"] for r in rows if r.get("true_label")})
    index_labels = all(n.lstrip("-").isdigit() for n in names)
    if index_labels:
        to_idx = {n: int(n) for n in names}
        if min(to_idx.values()) < 0:
            raise InputError(f"{where} has negative labels; labels must be class indices >= 0 or names")
        class_names = [str(i) for i in range(max(to_idx.values()) + 1)]
    else:
        to_idx = {n: i for i, n in enumerate(names)}
        class_names = names
    split = np.array([(r.get("split") or "train").strip().lower() for r in rows])
    if not set(split) <= set(SPLITS):
        raise InputError(f"{where}: the split column must be train, val or test, found {sorted(set(split))}")
    true = None
    if all(r.get("true_label") for r in rows):
        true = np.array([to_idx[r["true_label"]] for r in rows], dtype=np.int64)
    paths = np.array([str(root / r["path"]) for r in rows])
    missing = [(i, r["path"]) for i, r in enumerate(rows) if not os.path.isfile(paths[i])]
    if missing:
        i, p = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(f"image {p!r} (CSV row {i + 2}) cannot be read (no such file under {str(root)!r}){more}; "
                         "fix the paths (relative to data.root) or remove those rows")
    labels = np.array([to_idx[r["label"]] for r in rows], dtype=np.int64)
    return ImageTable(paths, labels, split, class_names, true=true, index_labels=index_labels, where=where)


def unreadable(paths, size: int, workers: int, channels: int = 3) -> list[UnreadableImage | None]:
    """For each path, the :class:`UnreadableImage` it raises when decoded, or None (``workers`` threads)."""

    def bad(p):
        try:
            decode_image(p, size, channels)
            return None
        except UnreadableImage as e:
            return e

    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(pool.map(bad, paths, chunksize=32))


def warn_unreadable(dropped: list[UnreadableImage], how: str) -> None:
    """Log the files skipped because they cannot be decoded (``how``: the setting that asked for it)."""
    if dropped:
        log.warning("skipping %d unreadable image(s) (%s): %s", len(dropped), how,
                    "; ".join(f"{e.path} ({e.cause})" for e in dropped[:20]) + (" ..." if len(dropped) > 20 else ""))


def drop_unreadable(table: ImageTable, size: int, workers: int) -> tuple[ImageTable, list[UnreadableImage]]:
    """``table`` without the files that cannot be decoded (each is decoded once, in ``workers`` threads)."""
    errors = unreadable(table.paths, size, workers)
    keep = np.array([e is None for e in errors], dtype=bool)
    dropped = [e for e in errors if e is not None]
    warn_unreadable(dropped, "data.skip_unreadable=true")
    t = table
    return ImageTable(t.paths[keep], t.labels[keep], t.split[keep], t.class_names,
                      None if t.true is None else t.true[keep], t.index_labels, t.where), dropped


def check_sizes(table: ImageTable, threads: int) -> None:
    """With ``data.image_size`` 0 every image must have one size; raise naming two that differ otherwise."""
    seen: dict[tuple[int, int], str] = {}
    for p, h in zip(table.paths, headers(table.paths, threads)):
        if isinstance(h, UnreadableImage):
            raise h
        seen.setdefault(h[:2], p)
        if len(seen) > 1:
            (a, pa), (b, pb) = list(seen.items())[:2]
            raise InputError(f"images have different sizes: {pa!r} is {a[1]}x{a[0]}, {pb!r} is {b[1]}x{b[0]}; set "
                             "data.image_size=N to resize them (shorter side to N, then a centre crop), or resize "
                             "all images to one size")


def folder_summary(paths: np.ndarray, threads: int = 8, limit: int = 20_000) -> dict:
    """Size and mode mix of the image files (headers of at most ``limit`` evenly spaced files)."""
    step = max(1, len(paths) // limit)
    sample = paths[::step]
    hs = headers(sample, threads)
    good = [h for h in hs if not isinstance(h, UnreadableImage)]
    bad = [h for h in hs if isinstance(h, UnreadableImage)]
    out = {"files_checked": len(sample), "unreadable": [f"{e.path} ({e.cause})" for e in bad[:50]],
           "num_unreadable": len(bad), "modes": dict(Counter(h[2] for h in good).most_common()),
           "formats": dict(Counter(h[3] for h in good).most_common())}
    if good:
        sides = np.array([min(h[0], h[1]) for h in good])
        out["shorter_side"] = {"min": int(sides.min()), "median": int(np.median(sides)), "max": int(sides.max())}
        out["distinct_sizes"] = len({h[:2] for h in good})
    return out


def default_workers(workers: int) -> int:
    """``data.workers``: -1 means min(8, CPUs)."""
    return min(8, os.cpu_count() or 1) if workers < 0 else workers


def load_image_folder(root: str | Path, csv_path: str | Path | None = None, *, image_size: int = 0,
                      skip_unreadable: bool = False, workers: int = -1):
    """A :class:`~dsink.data.sources.Source` of image files (nothing decoded yet; see :func:`scan_folder` for
    the layouts, :func:`read_csv_table` for the CSV). ``DIR/val`` or CSV rows with ``split=val`` are the noisy
    validation split; without test images the source has no test split (evaluation then uses validation)."""
    from .sources import Source, check_source

    table = read_csv_table(root, csv_path) if csv_path is not None else scan_folder(root)
    threads = max(1, default_workers(workers)) * 2
    if skip_unreadable:
        table, _ = drop_unreadable(table, image_size, threads)
    if image_size == 0:
        check_sizes(table, threads)
    tr, te = table.split != "test", table.split == "test"
    val = table.split[tr] == "val"
    src = Source(
        Path(root).expanduser().resolve().name, "image", ImageFiles(table.paths[tr], image_size), table.labels[tr],
        ImageFiles(table.paths[te], image_size), table.labels[te], len(table.class_names), table.class_names,
        train_true=None if table.true is None else table.true[tr], val_mask=val if val.any() else None,
    )
    return check_source(src, table.where, index_labels=table.index_labels, require_test=False)
