"""Dataset sources: the raw train/test arrays with true (or given) labels.

Images are held as ``uint8`` arrays of shape (N, C, H, W); feature data as ``float32``
(N, D). Nothing here subsamples or corrupts labels (see :mod:`dsink.data.builder`).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)

FMNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FMNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FMNIST_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
CIFAR_N_URL = "https://github.com/UCSC-REAL/cifar-10-100n/raw/main/data/"
CIFAR_N_FILES = {
    "cifar10": ("CIFAR-10_human.pt", "873e69c39cb9b5e97fb6bae2d60bb59b38a5cbc31d2b868f7903dcb2b9dd2310"),
    "cifar100": ("CIFAR-100_human.pt", "bd2d80409754d420292d622e15e25248ba21e37d27429efac49c8da723f44394"),
}
CIFAR_N_DIR_ENV = "DSINK_CIFAR_N_DIR"  # folder holding CIFAR-10_human.pt / CIFAR-100_human.pt (see find_cifar_n)
CIFAR_N_LABEL_SETS = {
    "cifar10": ("aggre_label", "worse_label", "random_label1", "random_label2", "random_label3"),
    "cifar100": ("noisy_label",),
}


@dataclass
class Source:
    """Raw arrays of one dataset.

    ``train_labels`` are the true labels for benchmark data; for a user's own data they
    are the given (possibly noisy) labels, and ``train_true`` holds true labels if known.
    """

    name: str
    kind: str  # "image" or "features"
    train_x: np.ndarray
    train_labels: np.ndarray
    test_x: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    class_names: list[str]
    train_true: np.ndarray | None = None
    semantic_map: str | None = None
    val_mask: np.ndarray | None = None  # (N_train,) bool: the data's own validation split (None: held out by the builder)
    info: dict | None = None  # facts about the source for `dsink data describe` (e.g. noise measured on verified labels)

    @property
    def has_test(self) -> bool:
        """Whether the data has a clean test split (user image folders may not)."""
        return len(self.test_labels) > 0

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample (C, H, W) or (D,)."""
        return tuple(self.train_x.shape[1:])


def few(values, limit: int = 8) -> str:
    """``values`` as a short comma-separated list (the first ``limit``, then how many more)."""
    values = [str(v) for v in values]
    head = ", ".join(values[:limit])
    return head + (f", ... ({len(values) - limit} more)" if len(values) > limit else "")


def check_source(src: Source, where: str, *, index_labels: bool = True, require_test: bool = True) -> Source:
    """Refuse degenerate data; return ``src`` unchanged.

    Refused: an empty training or test split, fewer than 2 classes among the training labels,
    and classes in ``0..num_classes-1`` without any training sample (a test class the training set
    lacks, or gaps left by labels that are not contiguous indices). ``where`` names the data in the
    messages; ``index_labels`` says the labels were given as integer indices (not class names);
    ``require_test=False`` accepts data without a test split (evaluation then uses the noisy validation split).
    """
    from .noise import check_labels

    k = src.num_classes
    y = check_labels(src.train_labels, k, f"{where} training labels")
    yt = check_labels(src.test_labels, k, f"{where} test labels")
    if len(y) == 0:
        raise InputError(f"{where} has no training samples; add labelled training data")
    if len(yt) == 0 and require_test:
        raise InputError(f"{where}: the test split is empty; add a clean labelled test set")

    def names(idx) -> str:
        return few(int(i) for i in idx) if index_labels else few(repr(src.class_names[i]) for i in idx)

    counts = np.bincount(y, minlength=k)
    present = np.flatnonzero(counts)
    if len(present) < 2:
        raise InputError(
            f"{where}: every training label is class {names(present)}; a classifier needs at least 2 classes "
            "with training samples"
        )
    empty = np.flatnonzero(counts == 0)
    if empty.size == 0:
        return src
    test_only = np.intersect1d(empty, yt)
    if test_only.size:
        raise InputError(
            f"{where}: test labels hold {'class' if test_only.size == 1 else 'classes'} {names(test_only)} "
            "with no training samples; a class with no training samples cannot be learned; "
            "add training samples of it or drop those test rows"
        )
    if index_labels:
        raise InputError(
            f"{where}: {empty.size} of the {k} classes 0..{k - 1} (one per index up to the largest label {k - 1}) "
            f"have no training samples: {names(empty)}; relabel to contiguous class indices 0..K-1"
        )
    raise InputError(
        f"{where}: {empty.size} of the {k} classes have no training samples ({names(empty)}); "
        "a class with no training samples cannot be learned; drop it or add training samples of it"
    )


def default_cache_dir() -> Path:
    """``$DSINK_CACHE`` or ``~/.cache/dsink``."""
    return Path(os.environ.get("DSINK_CACHE", Path.home() / ".cache" / "dsink")).expanduser()


def _download(url: str, dest: Path, sha256: str | None = None) -> None:
    import urllib.request

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise InputError(f"download of {url} failed ({e}); place the file at {dest} by hand") from None
    if sha256 is not None and sha256_file(tmp) != sha256:
        tmp.unlink(missing_ok=True)
        raise InputError(f"download of {url} has the wrong checksum; expected sha256 {sha256}")
    os.replace(tmp, dest)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- IDX (Fashion-MNIST)
def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) of unsigned bytes into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise InputError(f"IDX file {str(path)!r} cannot be read ({e}); re-download or reinstall it") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise InputError(f"{str(path)!r} is not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise InputError(f"IDX file {str(path)!r} is truncated (incomplete header)")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise InputError(
            f"IDX file {str(path)!r} is truncated or corrupt: {len(data)} bytes, header says {expected}; "
            "re-download or reinstall it"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _find_fmnist(root: str | None, download: bool) -> Path:
    candidates = [Path(root).expanduser()] if root else [FMNIST_SYSTEM_DIR, default_cache_dir() / "fashion-mnist"]
    for d in candidates:
        if all((d / f).exists() or (d / (f + ".gz")).exists() for f in FMNIST_FILES.values()):
            return d
    if download:
        d = candidates[0] if root else candidates[1]
        for f in FMNIST_FILES.values():
            if not (d / (f + ".gz")).exists():
                _download(FMNIST_URL + f + ".gz", d / (f + ".gz"))
        return d
    where = " or ".join(str(c) for c in candidates)
    raise InputError(
        f"Fashion-MNIST files not found in {where}; install them with "
        "`apt-get install dataset-fashion-mnist`, set data.root to a folder with the IDX files, "
        "or set data.download=true"
    )


def load_fashion_mnist(root: str | None = None, download: bool = False) -> Source:
    """Fashion-MNIST from IDX files (the Debian package, a folder, or a download)."""
    d = _find_fmnist(root, download)

    def read(key):
        f = d / FMNIST_FILES[key]
        return read_idx(f if f.exists() else f.with_name(f.name + ".gz"))

    tx, ty, vx, vy = (read(k) for k in ("train_x", "train_y", "test_x", "test_y"))
    if tx.ndim != 3 or len(tx) != len(ty) or vx.ndim != 3 or len(vx) != len(vy):
        raise InputError(f"Fashion-MNIST files in {d} have inconsistent shapes; re-download them")
    from .noise import _FMNIST_NAMES

    src = Source(
        "fashion_mnist", "image", tx[:, None].copy(), ty.astype(np.int64), vx[:, None].copy(),
        vy.astype(np.int64), 10, list(_FMNIST_NAMES), train_true=ty.astype(np.int64), semantic_map="fashion_mnist",
    )
    return check_source(src, f"Fashion-MNIST in {str(d)!r}")


# --------------------------------------------------------------------------- CIFAR (torchvision layout)
_CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", "batches.meta", "label_names"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", "meta", "fine_label_names"),
}


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as e:
        raise InputError(f"CIFAR file {str(path)!r} is missing or corrupt ({e}); re-download it") from None


def load_cifar(name: str, root: str | None = None, download: bool = False) -> Source:
    """CIFAR-10/100 in torchvision's on-disk layout (``ROOT/cifar-10-batches-py/...``)."""
    folder, train_files, test_files, label_key, meta_file, names_key = _CIFAR[name]
    base = Path(root).expanduser() if root else default_cache_dir() / "cifar"
    if not (base / folder).is_dir():
        if not download:
            raise InputError(
                f"{name} not found: no folder {folder!r} under {str(base)!r}; set data.root to the folder "
                f"holding {folder}/ (torchvision layout) or set data.download=true"
            )
        import torchvision

        cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
        cls(str(base), train=True, download=True)

    def read(files):
        xs, ys = [], []
        for fn in files:
            d = _unpickle(base / folder / fn)
            if b"data" not in d or label_key not in d:
                raise InputError(f"CIFAR file {str(base / folder / fn)!r} lacks data/labels; re-download it")
            try:
                x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
                y = np.asarray(d[label_key], dtype=np.int64).reshape(-1)
            except (ValueError, TypeError, OverflowError) as e:
                raise InputError(f"CIFAR file {str(base / folder / fn)!r} does not hold 3x32x32 images with integer "
                                 f"labels ({e}); re-download it") from None
            if len(x) != len(y):
                raise InputError(f"CIFAR file {str(base / folder / fn)!r} has {len(x)} images but {len(y)} labels; "
                                 "re-download it")
            xs.append(x)
            ys.append(y)
        return np.concatenate(xs), np.concatenate(ys)

    tx, ty = read(train_files)
    vx, vy = read(test_files)
    num_classes = 10 if name == "cifar10" else 100
    names = [str(i) for i in range(num_classes)]
    meta = base / folder / meta_file
    if meta.exists():
        m = _unpickle(meta)
        raw = m.get(names_key.encode(), m.get(names_key))
        if raw is not None and len(raw) == num_classes:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in raw]
    src = Source(name, "image", tx, ty, vx, vy, num_classes, names, train_true=ty, semantic_map=name)
    return check_source(src, f"{name} in {str(base / folder)!r}")


# --------------------------------------------------------------------------- CIFAR-N
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds numpy arrays and plain containers, and refuses anything else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),  # how numpy pickles raw bytes under protocol 2
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy") and module.endswith("multiarray"):
            try:
                from numpy._core import multiarray
            except ImportError:  # numpy < 2
                from numpy.core import multiarray

            return getattr(multiarray, name)
        return super().find_class(module, name)


def load_cifar_n(path: str | Path) -> dict[str, np.ndarray]:
    """Load a CIFAR-N label file (a torch zip pickle of numpy int64 arrays) without executing code.

    Returns the dict of label arrays, e.g. ``clean_label``, ``worse_label``, ``aggre_label``.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            pkl = [n for n in z.namelist() if n.endswith("data.pkl")]
            if not pkl:
                raise InputError(f"CIFAR-N file {str(path)!r} holds no data.pkl; re-download it")
            import io

            raw = _NumpyOnlyUnpickler(io.BytesIO(z.read(pkl[0]))).load()
    except FileNotFoundError:
        raise InputError(
            f"CIFAR-N file {str(path)!r} not found; set data.cifar_n_path to the .pt file "
            f"or {CIFAR_N_DIR_ENV} to the folder holding it"
        ) from None
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, OSError, ValueError) as e:
        raise InputError(f"CIFAR-N file {str(path)!r} is corrupt or not a CIFAR-N file ({e}); re-download it") from None
    if not isinstance(raw, dict) or "clean_label" not in raw:
        raise InputError(f"CIFAR-N file {str(path)!r} has no 'clean_label' entry; is it a CIFAR-N label file?")
    return {k: np.asarray(v, dtype=np.int64) for k, v in raw.items() if isinstance(v, np.ndarray)}


def find_cifar_n(dataset: str, path: str | None, download: bool) -> Path:
    """Locate (or download, checksum-verified) the CIFAR-N file for ``dataset``.

    Looked for, in order: ``path`` (``data.cifar_n_path``, used as given); the folder named by the
    environment variable ``DSINK_CIFAR_N_DIR`` (holding ``CIFAR-10_human.pt`` / ``CIFAR-100_human.pt``);
    the cache folder ``default_cache_dir() / "cifar-n"``. With ``download`` a missing file is
    downloaded into that cache folder.
    """
    fname, sha = CIFAR_N_FILES[dataset]
    if path:
        return Path(path).expanduser()
    env_dir = os.environ.get(CIFAR_N_DIR_ENV, "").strip()
    dest = default_cache_dir() / "cifar-n" / fname
    places = ([Path(env_dir).expanduser() / fname] if env_dir else []) + [dest]
    for cand in places:
        if cand.is_file():
            return cand
    if download:
        _download(CIFAR_N_URL + fname, dest, sha)
        return dest
    looked = " and ".join(repr(str(c.parent)) for c in places)
    raise InputError(
        f"CIFAR-N file {fname} not found (looked in {looked}); set data.cifar_n_path to the file, "
        f"set the environment variable {CIFAR_N_DIR_ENV} to the folder holding it, put it in {str(dest.parent)!r}, "
        "or set data.download=true"
    )


# --------------------------------------------------------------------------- user data
def load_npz(path: str | Path) -> Source:
    """Features from an ``.npz`` with ``X``, ``y`` (given labels), ``X_test``, ``y_test`` and optionally ``y_true``.

    ``X`` and ``X_test`` are numeric (N, D) arrays; labels are integer class indices ``0..K-1``
    (floats holding whole numbers are accepted) and ``K`` is the largest label plus one. ``X_test`` may have
    no rows (no clean test set: runs are evaluated on the noisy validation split). Optional: ``is_val`` (bool
    per row of ``X``: the validation split to use instead of holding one out) and ``class_names`` (strings),
    as ``dsink embed`` writes them; other arrays (e.g. ``paths``) are ignored.
    """
    from ..fileio import read_npz

    path = Path(path)
    where = f"npz file {str(path)!r}"
    if not path.is_file():
        raise InputError(f"{where} not found; set data.root to the .npz file")
    arrays = read_npz(path, "it needs X, y, X_test, y_test (y_true optional): save them with "
                      "np.savez(path, X=..., y=..., X_test=..., y_test=...)", ("X", "y", "X_test", "y_test"), "npz file")
    X, Xt = arrays["X"], arrays["X_test"]
    for key, a in (("X", X), ("X_test", Xt)):
        if a.dtype.kind not in "biuf":
            raise InputError(
                f"{where}: {key} has dtype {a.dtype}; features must be numbers (int or float); "
                "encode text or categorical columns as numbers first"
            )
    if X.ndim == 0 or X.shape[0] == 0:
        raise InputError(f"{where} has no training samples: X and y are empty; add training rows to X and y")
    if X.ndim != 2 or Xt.ndim != 2 or X.shape[1] != Xt.shape[1]:
        raise InputError(f"npz X and X_test must be 2-D with the same number of features, got {X.shape} and {Xt.shape}")
    if X.shape[1] == 0:
        raise InputError(f"{where}: X and X_test have no feature columns (shape {X.shape}); add at least one feature")
    if not (np.isfinite(X).all() and np.isfinite(Xt).all()):
        raise InputError(f"{where} has NaN or Inf features; clean or impute them first")
    from .noise import check_labels

    keys = ["y", "y_test"] + (["y_true"] if "y_true" in arrays else [])
    labels = {k: check_labels(arrays[k], None, f"{where} array {k!r}") for k in keys}  # types only
    num_classes = max([int(a.max()) + 1 for a in labels.values() if a.size] + [0])
    labels = {k: check_labels(a, num_classes, f"{where} array {k!r}") for k, a in labels.items()}  # ranges
    y, yt, true = labels["y"], labels["y_test"], labels.get("y_true")
    if len(y) != len(X) or len(yt) != len(Xt) or (true is not None and len(true) != len(X)):
        sizes = ", ".join(f"{k} {len(v)}" for k, v in labels.items())
        raise InputError(
            f"{where}: label arrays must have one entry per row of X / X_test "
            f"(X {len(X)}, X_test {len(Xt)} rows; {sizes})"
        )
    names = [str(i) for i in range(num_classes)]
    if "class_names" in arrays:
        given = [str(n) for n in np.asarray(arrays["class_names"]).reshape(-1)]
        if len(given) < num_classes:
            raise InputError(f"{where}: class_names lists {len(given)} names for labels up to {num_classes - 1}; "
                             "give one name per class")
        names, num_classes = given, len(given)
    val = None
    if "is_val" in arrays:
        val = np.asarray(arrays["is_val"])
        if val.dtype != bool or val.shape != (len(X),):
            raise InputError(f"{where}: is_val must be a boolean array with one entry per row of X, got "
                             f"{val.dtype} {val.shape}")
        val = val if val.any() else None
    src = Source(
        path.stem, "features", X.astype(np.float32), y, Xt.astype(np.float32), yt, num_classes, names,
        train_true=true, val_mask=val,
    )
    return check_source(src, where, require_test=False)
