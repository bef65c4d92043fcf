"""The gallery of flagged training samples: the label audit (:mod:`dsink.eval.audit`) with a thumbnail per sample.

Thumbnails come from the image files of a photo folder (the paths the run stores), or, for benchmark arrays
(Fashion-MNIST, CIFAR), from the dataset's source arrays loaded with the run's data config and indexed by each
sample's stored ``dataset_index`` (nothing is trained). Feature data (``npz``) has no images: its items are rows.
"""

from __future__ import annotations

import base64
import csv
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..eval.audit import audit_run
from ..runs import RunDir

log = logging.getLogger(__name__)

MAX_ITEMS = 200  # items shown; the full ranked list is the audit CSV
THUMB_PX = 96  # longest side of a photo thumbnail


def _data_uri(img, fmt: str) -> str:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 80} if fmt == "JPEG" else {"optimize": True}))
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def array_thumbnail(x: np.ndarray) -> str:
    """A PNG data URI of one uint8 image array, (C, H, W) with C 1 or 3 (or (H, W))."""
    from PIL import Image

    a = np.asarray(x)
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else np.moveaxis(a[:3], 0, -1)
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    return _data_uri(Image.fromarray(np.ascontiguousarray(a)), "PNG")


def file_thumbnail(path: str | Path, size: int = THUMB_PX) -> str | None:
    """A JPEG data URI of an image file shrunk to ``size`` pixels on its longest side (None when unreadable)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            im.thumbnail((size, size))
            return _data_uri(im, "JPEG")
    except (OSError, ValueError) as e:
        log.warning("no thumbnail for %s: %s", path, e)
        return None


def _source_arrays(run: RunDir) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """The source training images of a run's dataset and their labels (None when it is not image arrays), and why
    there are none."""
    from ..data.datasets import load_dataset

    cfg_run = run
    if not run.has_config():  # an average: the data of its noise run
        cfg_run = RunDir(run.average_sources()[1])
    try:
        src = load_dataset(cfg_run.load_config().data)
    except (InputError, OSError) as e:
        return None, None, f"the dataset could not be loaded ({e})"
    if src.kind != "image" or not isinstance(src.train_x, np.ndarray):
        return None, None, "feature data: no images"
    return src.train_x, src.train_labels, ""


def read_flags(csv_path: Path, limit: int) -> list[dict[str, str]]:
    """The first ``limit`` rows of an audit CSV."""
    with open(csv_path, newline="") as f:
        rows = []
        for row in csv.DictReader(f):
            if len(rows) >= limit:
                break
            rows.append(row)
    return rows


def _item(row: dict[str, str]) -> dict[str, Any]:
    item = {"rank": int(row["rank"]), "position": int(row["train_position"]), "given": int(row["given_label"]),
            "suggested": int(row["suggested_label"]), "given_name": row["given_name"],
            "suggested_name": row["suggested_name"], "margin": float(row["margin"]),
            "confidence": float(row["confidence"]), "path": row.get("path"), "image": None}
    if row.get("truly_mislabelled", "") != "":
        item["truly_mislabelled"] = bool(int(row["truly_mislabelled"]))
    return item


def gallery(run_dir: str | Path, audit_csv: str | Path, limit: int = MAX_ITEMS) -> dict[str, Any]:
    """Audit ``run_dir`` into ``audit_csv`` (the full ranked list; the run directory is not written) and return
    the first ``limit`` flags with thumbnails: ``items``, ``summary`` (:func:`dsink.eval.audit.audit_run`),
    ``images`` (where the thumbnails come from) and ``note`` (why there are none, when so)."""
    run = RunDir(run_dir)
    summary = audit_run(run, audit_csv)
    items = [_item(r) for r in read_flags(Path(audit_csv), limit)]
    out = {"items": items, "summary": summary, "csv": str(audit_csv), "images": "none", "note": ""}
    if not items:
        return out
    if items[0]["path"]:
        for it in items:
            it["image"] = file_thumbnail(it["path"])
        out["images"] = "files"
        return out
    x, labels, why = _source_arrays(run)
    if x is None:
        out["note"] = why
        return out
    preds = run.read_predictions()
    index = np.asarray(preds["train_index"])
    true = preds.get("train_true")
    pos = np.array([it["position"] for it in items])
    if index.max() >= len(x) or (true is not None and not np.array_equal(labels[index[pos]], true[pos])):
        out["note"] = "the dataset on disk no longer matches the run's training set: no thumbnails"
        return out
    for it, i in zip(items, index[pos]):
        it["image"] = array_thumbnail(x[i])
    out["images"] = "arrays"
    return out
