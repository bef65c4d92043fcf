"""The field's three real-noise benchmarks, read from their published file layouts.

* ``clothing1m``: Clothing1M (Xiao et al., CVPR 2015), 14 clothing classes; 1M web images with labels from
  their surrounding text, and small sets with clean labels (the validation and test splits);
* ``webvision``: mini-WebVision (WebVision 1.0, Li et al. 2017; the first 50 classes of its Google images, as in
  MentorNet and DivideMix), tested on WebVision's validation images; ``webvision_imagenet``: the same training
  data tested on ImageNet's validation images of those 50 classes (the field's second test set);
* ``food101n``: Food-101N (Lee et al., CVPR 2018, CleanNet), 310K web images of Food-101's 101 classes, tested
  on Food-101's test set.

Each loader returns a :class:`~dsink.data.sources.Source` of :class:`~dsink.data.images.ImageFiles` (nothing is
decoded at load; ``data.image_size`` is the resize), so the data streams like an image folder. The labels of
the training split are the benchmark's given (noisy) labels and are used as they are: each dataset defaults to
``data.noise_mode=none``, ``data.imbalance_ratio=1`` and ``data.image_size=224`` (:data:`REAL_NOISE_DEFAULTS`,
beneath the user's values), and the builder refuses to inject synthetic noise on top of real noise, and warns
when it subsamples one long-tailed (:func:`check_settings`). The noise the data holds is
measured where the release allows it (clean or verified labels of a subset) and reported in ``Source.info``
(``dsink data describe --json``: ``source_info``). The layouts are described in docs/data.md.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import InputError
from .datasets import register_dataset
from .filelists import check_files, image_files, joiner, key_lines, names_file, path_label_lines, text_lines
from .images import ImageFiles, image_files_under
from .sources import Source, check_source, few

log = logging.getLogger(__name__)

CLOTHING1M_CLASSES = ("T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker", "Jacket",
                      "Downcoat", "Suit", "Shawl", "Dress", "Vest", "Underwear")
WEBVISION_ALL_CLASSES = 1000  # labels in WebVision's file lists lie in 0..999
WEBVISION_MINI_CLASSES = 50  # mini-WebVision: the first 50 classes


# --------------------------------------------------------------------------- the settings guard
def check_settings(cfg: DataConfig, mode: str) -> None:
    """Refuse synthetic noise on a real-noise benchmark; warn when it would be subsampled long-tailed.

    Called by the builder for every dataset registered with ``real_noise=True``. ``mode`` is the canonical
    ``data.noise_mode``. Injected noise would be drawn on top of the real noise and the given noisy labels
    reported as the truth, so only ``none`` is accepted. A long-tailed subsample (``data.imbalance_ratio`` > 1
    or ``data.n_max``) is drawn by the given noisy labels: allowed (a long-tailed real-noise set), with a warning
    that it is not the published benchmark."""
    if mode != "none":
        raise InputError(
            f"dataset {cfg.dataset} has real label noise (its training labels are the benchmark's noisy labels); "
            f"data.noise_mode={cfg.noise_mode} would inject synthetic noise on top of it and report the noisy labels "
            f"as the truth; set data.noise_mode=none (and data.imbalance_ratio=1 for the published benchmark), "
            f"as configs/{_CONFIGS.get(cfg.dataset, cfg.dataset)}.yaml does")
    if cfg.imbalance_ratio != 1 or cfg.n_max is not None:
        warnings.warn(
            f"data.imbalance_ratio={cfg.imbalance_ratio:g}"
            + (f", data.n_max={cfg.n_max}" if cfg.n_max is not None else "")
            + f": {cfg.dataset} is subsampled long-tailed by its given (noisy) labels, so the data is not the "
            "published benchmark; set data.imbalance_ratio=1 (and leave data.n_max unset) to use it as published",
            UserWarning, stacklevel=1)


_CONFIGS = {"clothing1m": "clothing1m", "webvision": "webvision", "webvision_imagenet": "webvision",
            "food101n": "food101n"}
# A real-noise benchmark's own defaults (beneath the user's values; dsink.config.add_default_hook): its labels are
# already noisy and it is used as published, at the field's input size.
REAL_NOISE_DEFAULTS = {"data": {"noise_mode": "none", "imbalance_ratio": 1, "image_size": 224}}
_SETTINGS = ("Real label noise: defaults data.noise_mode=none, data.imbalance_ratio=1, data.image_size=224 "
             "(configs/{}.yaml has the field's recipe).")


# --------------------------------------------------------------------------- reading the file lists
def _root(cfg: DataConfig, what: str) -> Path:
    if not cfg.root:
        raise InputError(f"dataset {cfg.dataset} needs data.root: {what}")
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise InputError(f"data.root {str(root)!r} of dataset {cfg.dataset} is not a folder; set it to {what}")
    return root


def _image_size(cfg: DataConfig) -> int:
    if cfg.image_size <= 0:
        raise InputError(f"dataset {cfg.dataset} holds images of many sizes; set data.image_size (the shorter side "
                         f"is resized to it, then centre-cropped; 224 is the field's input size, as "
                         f"configs/{_CONFIGS[cfg.dataset]}.yaml sets)")
    return int(cfg.image_size)


# --------------------------------------------------------------------------- Clothing1M
def _clothing1m_dir(root: Path) -> Path:
    """The folder of the label files: DIR, or DIR/annotations (as some copies of the release have them)."""
    if not (root / "noisy_label_kv.txt").exists() and (root / "annotations" / "noisy_label_kv.txt").exists():
        return root / "annotations"
    return root


@register_dataset("clothing1m", real_noise=True, config_defaults=REAL_NOISE_DEFAULTS, description=(
    "Clothing1M (Xiao et al. 2015): 14 clothing classes, 1M web images with noisy labels (noisy_train_key_list), "
    "clean validation and test sets (clean_val/clean_test_key_list); data.root = the release's folder (images/, "
    "*_label_kv.txt, *_key_list.txt). " + _SETTINGS.format("clothing1m")))
def load_clothing1m(cfg: DataConfig) -> Source:
    """Clothing1M: training = ``noisy_train_key_list.txt`` with the labels of ``noisy_label_kv.txt``;
    validation (``val_mask``) = ``clean_val_key_list.txt`` and test = ``clean_test_key_list.txt``, both with the
    labels of ``clean_label_kv.txt``. ``info`` holds the split sizes and the noise realised on the training keys
    that also have a clean label."""
    root = _root(cfg, "the Clothing1M folder holding images/ and the *_label_kv.txt / *_key_list.txt files")
    size = _image_size(cfg)
    ann = _clothing1m_dir(root)
    k = len(CLOTHING1M_CLASSES)
    names = names_file(ann / "category_names_eng.txt", k, "one class name per line (T-Shirt, Shirt, ...)")
    names = names or list(CLOTHING1M_CLASSES)
    example = "images/0/00/123.jpg 4"
    noisy = {key: y for _, key, y in path_label_lines(ann / "noisy_label_kv.txt", example, k)}
    clean = {key: y for _, key, y in path_label_lines(ann / "clean_label_kv.txt", example, k)}

    def split(fname: str, labels: dict[str, int], kv: str) -> tuple[list[str], list[int], list[int]]:
        keys, ys, lines = [], [], []
        path = ann / fname
        for n, key in key_lines(path, "images/0/00/123.jpg"):
            y = labels.get(key)
            if y is None:
                raise InputError(f"line {n} of {path}: key {key!r} has no label in {ann / kv}; use the key lists "
                                 "and label files of one Clothing1M release")
            keys.append(key)
            ys.append(y)
            lines.append(n)
        if not keys:
            raise InputError(f"{path} lists no images; it must hold one image key per line")
        return keys, ys, lines

    tr_keys, tr_y, tr_lines = split("noisy_train_key_list.txt", noisy, "noisy_label_kv.txt")
    va_keys, va_y, va_lines = split("clean_val_key_list.txt", clean, "clean_label_kv.txt")
    te_keys, te_y, te_lines = split("clean_test_key_list.txt", clean, "clean_label_kv.txt")
    hint = (f"extract the image archives under {str(root)!r} so that each key (images/0/00/123.jpg) names a file "
            "under data.root")
    paths = {}
    join = joiner(root)
    for name, keys, lines, fname in (("train", tr_keys, tr_lines, "noisy_train_key_list.txt"),
                                     ("val", va_keys, va_lines, "clean_val_key_list.txt"),
                                     ("test", te_keys, te_lines, "clean_test_key_list.txt")):
        paths[name] = [join(key) for key in keys]
        check_files(paths[name], lambda i, lines=lines, fname=fname: f"line {lines[i]} of {ann / fname}", hint)
    both = [(noisy[key], clean[key]) for key in tr_keys if key in clean]
    pairs = np.asarray(both, dtype=np.int64).reshape(-1, 2)
    train_set = set(tr_keys)
    overlap_val = sum(key in train_set for key in va_keys)
    overlap_test = sum(key in train_set for key in te_keys)
    if overlap_test:
        log.warning("%d Clothing1M test keys are also training keys (noisy_train_key_list.txt)", overlap_test)
    info = {
        "benchmark": "Clothing1M (Xiao et al., CVPR 2015)",
        "num_train": len(tr_keys), "num_val": len(va_keys), "num_test": len(te_keys),
        "validation": "clean_val_key_list.txt, clean labels",
        "test": "clean_test_key_list.txt, clean labels",
        "noise_measured_on": "training keys that also have a clean label (clean_label_kv.txt)",
        "num_train_with_clean_label": int(len(pairs)),
        "realised_noise_rate": float((pairs[:, 0] != pairs[:, 1]).mean()) if len(pairs) else None,
        "train_keys_also_in_val": int(overlap_val), "train_keys_also_in_test": int(overlap_test),
    }
    val_mask = np.r_[np.zeros(len(tr_keys), bool), np.ones(len(va_keys), bool)]
    src = Source("clothing1m", "image", image_files(paths["train"] + paths["val"], size),
                 np.asarray(tr_y + va_y, np.int64), image_files(paths["test"], size), np.asarray(te_y, np.int64),
                 k, names, val_mask=val_mask, info=info)
    return check_source(src, f"Clothing1M in {str(root)!r}", index_labels=False)


# --------------------------------------------------------------------------- (mini-)WebVision
def _synset_line(line: str) -> str:
    """A line of synsets.txt ('n01440764 tench, Tinca tinca': a synset id, then words) stripped, or '' if malformed."""
    parts = line.strip().split(None, 1)
    return line.strip() if len(parts) == 2 and parts[0][:1] == "n" and parts[0][1:].isdigit() else ""


def _synsets(root: Path, required: bool) -> list[tuple[str, str]] | None:
    """(synset id, first name) of WebVision's first 50 classes from DIR/info/synsets.txt, or None if it is missing."""
    path = root / "info" / "synsets.txt"
    expected = "one class a line, '<synset> <names>' (e.g. 'n01440764 tench, Tinca tinca')"
    if required and not path.is_file():
        raise InputError(f"{path} not found; it must hold {expected} (the synset order of WebVision's labels)")
    lines = names_file(path, WEBVISION_MINI_CLASSES, expected, _synset_line)
    if lines is None:
        return None
    out = []
    for line in lines:
        wnid, words = line.split(None, 1)
        out.append((wnid, words.split(",")[0].strip() or wnid))
    return out


def _webvision_train(root: Path, size: int) -> tuple[ImageFiles, np.ndarray, dict]:
    path = root / "info" / "train_filelist_google.txt"
    rows = [(n, rel, y) for n, rel, y in path_label_lines(path, "google/q0001/0000001.jpg 0", WEBVISION_ALL_CLASSES)]
    kept = [r for r in rows if r[2] < WEBVISION_MINI_CLASSES]
    if not kept:
        raise InputError(f"{path} lists no image of the first {WEBVISION_MINI_CLASSES} classes (labels "
                         f"0..{WEBVISION_MINI_CLASSES - 1}); it must hold lines '<path> <label>' of WebVision's "
                         "Google images")
    join = joiner(root)
    paths = [join(rel) for _, rel, _ in kept]
    check_files(paths, lambda i: f"line {kept[i][0]} of {path}",
                 f"place WebVision's Google images under {str(root)!r} (paths relative to data.root, e.g. "
                 "google/q0001/0000001.jpg)")
    info = {"train_list": str(path), "train_lines": len(rows), "num_train": len(kept)}
    return image_files(paths, size), np.asarray([y for _, _, y in kept], np.int64), info


def _webvision_source(cfg: DataConfig, imagenet: bool) -> Source:
    root = _root(cfg, "the WebVision folder holding info/, google/ and val_images_256/")
    size = _image_size(cfg)
    synsets = _synsets(root, required=imagenet)
    names = [name for _, name in synsets] if synsets else [f"class_{i}" for i in range(WEBVISION_MINI_CLASSES)]
    train_x, train_y, info = _webvision_train(root, size)
    info = {"benchmark": "mini-WebVision (WebVision 1.0, Google images of the first 50 classes)", **info}
    if imagenet:
        test_paths, test_y = _imagenet_val(root, [wnid for wnid, _ in synsets])
        info["test"] = "ImageNet (ILSVRC2012) validation images of the 50 classes, imagenet/val/<synset>/"
    else:
        path = root / "info" / "val_filelist.txt"
        rows = [r for r in path_label_lines(path, "val000001.jpg 0", WEBVISION_ALL_CLASSES)
                if r[2] < WEBVISION_MINI_CLASSES]
        if not rows:
            raise InputError(f"{path} lists no image of the first {WEBVISION_MINI_CLASSES} classes; it must hold "
                             "lines '<file> <label>' of WebVision's validation images")
        join = joiner(root / "val_images_256")
        test_paths = [join(rel) for _, rel, _ in rows]
        check_files(test_paths, lambda i: f"line {rows[i][0]} of {path}",
                     f"place WebVision's validation images in {str(root / 'val_images_256')!r}")
        test_y = np.asarray([y for _, _, y in rows], np.int64)
        info["test"] = "WebVision validation images of the 50 classes (info/val_filelist.txt, val_images_256/)"
    info["num_test"] = len(test_paths)
    info["validation"] = "none of its own: held out of the noisy training set (data.val_fraction)"
    info["noise"] = "not measurable: WebVision has no clean or verified training labels"
    src = Source(cfg.dataset, "image", train_x, train_y, image_files(test_paths, size), test_y,
                 WEBVISION_MINI_CLASSES, names, info=info)
    return check_source(src, f"mini-WebVision in {str(root)!r}", index_labels=synsets is None)


def _imagenet_val(root: Path, wnids: list[str]) -> tuple[list[str], np.ndarray]:
    base = root / "imagenet" / "val"
    what = (f"ImageNet's (ILSVRC2012) validation images of the {len(wnids)} mini-WebVision classes, sorted into one "
            f"folder per synset: {str(base)}/<synset>/*.JPEG for the first {len(wnids)} synsets of "
            f"{root / 'info' / 'synsets.txt'} ({few(wnids, 3)})")
    if not base.is_dir():
        raise InputError(f"{base} not found; place {what}")
    paths, labels, lacking = [], [], []
    for c, wnid in enumerate(wnids):
        files = image_files_under(base / wnid) if (base / wnid).is_dir() else []
        if not files:
            lacking.append(wnid)
        paths += files
        labels += [c] * len(files)
    if lacking:
        raise InputError(f"{base} has no images of synset(s) {few(lacking)}; place {what}")
    return paths, np.asarray(labels, np.int64)


@register_dataset("webvision", real_noise=True, config_defaults=REAL_NOISE_DEFAULTS, description=(
    "mini-WebVision: WebVision 1.0's Google images of the first 50 classes (info/train_filelist_google.txt), "
    "tested on WebVision's validation images of those classes (info/val_filelist.txt, val_images_256/); no "
    "validation split of its own (data.val_fraction is held out); data.root = the WebVision folder. "
    + _SETTINGS.format("webvision")))
def load_webvision(cfg: DataConfig) -> Source:
    """mini-WebVision tested on WebVision's validation set (the field's first test set)."""
    return _webvision_source(cfg, imagenet=False)


@register_dataset("webvision_imagenet", real_noise=True, config_defaults=REAL_NOISE_DEFAULTS, description=(
    "mini-WebVision's training data tested on ImageNet's validation images of the same 50 classes "
    "(DIR/imagenet/val/<synset>/*.JPEG, synset order of DIR/info/synsets.txt; the field's second test set). "
    + _SETTINGS.format("webvision")))
def load_webvision_imagenet(cfg: DataConfig) -> Source:
    """mini-WebVision tested on ImageNet's validation images of its 50 classes."""
    return _webvision_source(cfg, imagenet=True)


# --------------------------------------------------------------------------- Food-101N
def _food_key(n: int, line: str, path: Path, example: str) -> tuple[str, str]:
    cls, sep, key = line.strip().partition("/")
    if not (sep and cls and key) or len(line.split()) != 1:
        raise InputError(f"line {n} of {path} is {line!r}: expected '<class_name>/<key>' (e.g. {example!r})")
    return cls, key


def _food_list(path: Path) -> list[tuple[int, str]]:
    """(line number, 'class/key.jpg') of Food-101N's meta/imagelist.tsv (the header 'class_name/key' skipped)."""
    out = []
    for n, line in text_lines(path, "a header 'class_name/key', then lines '<class_name>/<key>' (e.g. apple_pie/0001.jpg)"):
        if not out and n == 1 and line.strip() == "class_name/key":
            continue
        _food_key(n, line, path, "apple_pie/0001.jpg")
        out.append((n, line.strip()))
    if not out:
        raise InputError(f"{path} lists no images; it must hold lines '<class_name>/<key>' (e.g. apple_pie/0001.jpg)")
    return out


def _food_verified(path: Path) -> list[tuple[int, str, int]]:
    """(line number, 'class/key.jpg', verification label 0/1) of meta/verified_{train,val}.tsv."""
    example = "apple_pie/0001.jpg\t1"
    expected = (f"a header 'class_name/key<TAB>verification_label', then lines '<class_name>/<key><TAB>0|1' "
                f"(e.g. {example!r})")
    out = []
    for n, line in text_lines(path, expected):
        parts = line.strip().split("\t")
        if n == 1 and parts[0].strip() == "class_name/key":
            continue
        if len(parts) != 2 or parts[1].strip() not in ("0", "1"):
            raise InputError(f"line {n} of {path} is {line!r}: expected '<class_name>/<key><TAB>0|1' "
                             f"(e.g. {example!r}; 1 = the noisy label is correct)")
        _food_key(n, parts[0], path, example)
        out.append((n, parts[0].strip(), int(parts[1])))
    return out


def _food101_dir(root: Path) -> Path:
    for d in (root / "food-101", root.resolve().parent / "food-101"):
        if d.is_dir():
            return d
    raise InputError(f"Food-101 (the test set of Food-101N) not found: place the Food-101 release (food-101/meta/"
                     f"test.txt, food-101/images/<class>/<id>.jpg) at {str(root / 'food-101')!r} or beside data.root "
                     f"at {str(root.resolve().parent / 'food-101')!r}")


def _food_classes(root: Path, food101: Path, listed: set[str]) -> tuple[list[str], str]:
    """Class names: Food-101's meta/classes.txt, else Food-101N's meta/classes.txt, else the sorted class folders."""
    for path in (food101 / "meta" / "classes.txt", root / "meta" / "classes.txt"):
        if path.is_file():
            names = [line.strip() for n, line in text_lines(path, "one class name per line (e.g. apple_pie)")]
            names = [c for i, c in enumerate(names) if not (i == 0 and c == "class_name")]  # Food-101N's header
            if len(set(names)) != len(names) or not names:
                raise InputError(f"{path} must list each class name once, one per line (e.g. apple_pie)")
            unknown = sorted(listed - set(names))
            if unknown:
                raise InputError(f"class folder(s) {few(unknown)} of the Food-101N lists are not in {path}; use the "
                                 "class list of the same release")
            return names, str(path)
    return sorted(listed), "the class folders of meta/imagelist.tsv, sorted"


@register_dataset("food101n", real_noise=True, config_defaults=REAL_NOISE_DEFAULTS, description=(
    "Food-101N (Lee et al. 2018): 310K web images of Food-101's 101 classes with noisy labels (meta/imagelist.tsv; "
    "the label is the class folder), validation = meta/verified_val.tsv, test = Food-101's test set "
    "(DIR/food-101 or DIR/../food-101); data.root = the Food-101N folder. " + _SETTINGS.format("food101n")))
def load_food101n(cfg: DataConfig) -> Source:
    """Food-101N: training = ``meta/imagelist.tsv`` less the validation images, labelled by their class folder;
    validation (``val_mask``) = ``meta/verified_val.tsv`` (noisy labels); test = Food-101's ``meta/test.txt``.
    ``info`` holds the noise measured on the verified training and validation images (share of
    verification label 0)."""
    root = _root(cfg, "the Food-101N folder holding meta/imagelist.tsv, meta/verified_*.tsv and images/")
    size = _image_size(cfg)
    images = _food_list(root / "meta" / "imagelist.tsv")
    v_train = _food_verified(root / "meta" / "verified_train.tsv")
    v_val = _food_verified(root / "meta" / "verified_val.tsv")
    if not v_val:
        raise InputError(f"{root / 'meta' / 'verified_val.tsv'} lists no images; it must hold lines "
                         "'<class_name>/<key><TAB>0|1' (the validation split)")
    food101 = _food101_dir(root)
    test_file = food101 / "meta" / "test.txt"
    test = [(n, line.strip()) for n, line in text_lines(test_file, "lines '<class_name>/<id>' (e.g. apple_pie/1011328)")]
    for n, line in test:
        _food_key(n, line, test_file, "apple_pie/1011328")
    listed = {rel.split("/", 1)[0] for _, rel in images} | {rel.split("/", 1)[0] for _, rel, _ in v_val}
    names, names_from = _food_classes(root, food101, listed)
    index = {c: i for i, c in enumerate(names)}
    for n, rel in test:
        if rel.split("/", 1)[0] not in index:
            raise InputError(f"line {n} of {test_file}: class {rel.split('/', 1)[0]!r} is not a Food-101N class "
                             f"({names_from}); use Food-101's own test list")
    val_keys = list(dict.fromkeys(rel for _, rel, _ in v_val))  # in file order, once each
    val_set = set(val_keys)
    train = [(n, rel) for n, rel in images if rel not in val_set]
    img_dir = root / "images"
    hint = f"place Food-101N's images at {str(img_dir)!r}/<class_name>/<key>"
    join = joiner(img_dir)
    tr_paths = [join(rel) for _, rel in train]
    check_files(tr_paths, lambda i: f"line {train[i][0]} of {root / 'meta' / 'imagelist.tsv'}", hint)
    va_paths = [join(rel) for rel in val_keys]
    val_line = {rel: n for n, rel, _ in reversed(v_val)}
    check_files(va_paths, lambda i: f"line {val_line[val_keys[i]]} of {root / 'meta' / 'verified_val.tsv'}", hint)
    join_test = joiner(food101 / "images")
    te_paths = [join_test(rel + ".jpg") for _, rel in test]
    check_files(te_paths, lambda i: f"line {test[i][0]} of {test_file}",
                 f"place Food-101's images at {str(food101 / 'images')!r}/<class_name>/<id>.jpg")

    def label(rel: str) -> int:
        return index[rel.split("/", 1)[0]]

    def noise(rows) -> dict:
        v = np.asarray([r[2] for r in rows], np.int64)
        return {"num_verified": int(len(v)), "num_wrong": int((v == 0).sum()),
                "realised_noise_rate": float((v == 0).mean()) if len(v) else None}

    train_set = {rel for _, rel in train}
    info = {
        "benchmark": "Food-101N (Lee et al., CVPR 2018), tested on Food-101",
        "num_train": len(train), "num_val": len(val_keys), "num_test": len(test),
        "validation": "meta/verified_val.tsv, noisy labels",
        "test": f"Food-101's test set ({test_file})", "class_names_from": names_from,
        "noise_measured_on": "verified images: share with verification_label 0 (the noisy label is wrong)",
        "verified_train": noise(v_train), "verified_val": noise(v_val),
        "verified_train_in_training_split": int(sum(rel in train_set for _, rel, _ in v_train)),
    }
    val_mask = np.r_[np.zeros(len(train), bool), np.ones(len(val_keys), bool)]
    src = Source("food101n", "image", image_files(tr_paths + va_paths, size),
                 np.asarray([label(rel) for _, rel in train] + [label(rel) for rel in val_keys], np.int64),
                 image_files(te_paths, size), np.asarray([label(rel) for _, rel in test], np.int64), len(names),
                 names, val_mask=val_mask, info=info)
    return check_source(src, f"Food-101N in {str(root)!r}", index_labels=False)
