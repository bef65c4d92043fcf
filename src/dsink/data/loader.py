"""One way to get a split's raw inputs onto the training device, with two backends.

* **memory** (:class:`MemoryInputs`): the whole split is one tensor on the device; a batch is an index
  gather. The fast path for Fashion-MNIST, CIFAR and feature data.
* **stream** (:class:`StreamInputs`): samples are read per batch in ``DataLoader`` worker processes
  (image files decoded and resized there) and each uint8 batch is copied to the device. Memory does
  not grow with the number of samples beyond the per-sample vectors (paths, labels).

Both hand the engine the same raw batches (uint8 images, float features), which then pass through
the same on-device augmentation (:mod:`dsink.train.augment`). The rule that picks one is
:func:`choose_backend`.
"""

from __future__ import annotations

import logging
from typing import Iterator, Sequence

import numpy as np
import torch

from ..errors import InputError
from .images import ImageFiles, UnreadableImage, default_workers

log = logging.getLogger(__name__)

# image files whose decoded training + validation + test arrays exceed this many bytes are streamed
STREAM_ABOVE_BYTES = 2 << 30


def choose_backend(arrays: Sequence, stream: bool | None) -> str:
    """``"memory"`` or ``"stream"``: ``data.stream`` when set; otherwise arrays already in memory stay there,
    and image files are streamed when their decoded uint8 arrays would exceed :data:`STREAM_ABOVE_BYTES`
    (2 GiB: e.g. 680k images at 32 px, 14k at 224 px), else decoded once into memory."""
    if stream is not None:
        return "stream" if stream else "memory"
    files = [a for a in arrays if isinstance(a, ImageFiles)]
    if not files:
        return "memory"
    return "stream" if sum(f.nbytes() for f in files) > STREAM_ABOVE_BYTES else "memory"


class Inputs:
    """The raw inputs of one split: ``len(inputs)`` samples, read in batches of row indices."""

    backend = ""

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def iterate(self, chunks: Sequence[torch.Tensor]) -> Iterator[torch.Tensor]:  # pragma: no cover - abstract
        """The raw batch (on the device) of each index tensor in ``chunks``, in order."""
        raise NotImplementedError

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        """The raw batch of the rows ``idx``."""
        return next(iter(self.iterate([idx])))


class MemoryInputs(Inputs):
    """A split held as one tensor on the device."""

    backend = "memory"

    def __init__(self, x: np.ndarray, device: torch.device):
        self.x = torch.as_tensor(np.ascontiguousarray(x)).to(device)

    def __len__(self) -> int:
        return len(self.x)

    def iterate(self, chunks):
        for c in chunks:
            yield self.x[c.to(self.x.device)]


class _Rows(torch.utils.data.Dataset):
    """Samples by row for the DataLoader workers: an image file decoded, or a row of an array; a failure is
    returned (not raised) so the main process can name the file without a worker traceback."""

    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        try:
            return self.samples[i], None
        except UnreadableImage as e:
            return None, (e.path, e.cause)


def _collate(items):
    errors = [e for _, e in items if e is not None]
    if errors:
        return None, errors
    arrays = [a for a, _ in items]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        return None, [("", f"images of different sizes in one batch {sorted(shapes)[:3]}")]
    return torch.from_numpy(np.stack(arrays)), None


class StreamInputs(Inputs):
    """A split read per batch by ``workers`` DataLoader processes (0: in this process)."""

    backend = "stream"

    def __init__(self, samples, device: torch.device, workers: int = -1, prefetch: int = 4):
        self.samples, self.device = samples, device
        self.workers = default_workers(workers)
        self.prefetch = prefetch

    def __len__(self) -> int:
        return len(self.samples)

    def iterate(self, chunks):
        chunks = [c.cpu() for c in chunks]
        if not chunks:
            return
        workers = min(self.workers, len(chunks))
        loader = torch.utils.data.DataLoader(
            _Rows(self.samples), batch_sampler=[c.tolist() for c in chunks], num_workers=workers,
            collate_fn=_collate, pin_memory=self.device.type == "cuda",
            prefetch_factor=self.prefetch if workers else None,
        )
        for batch, errors in loader:
            if errors:
                _raise(errors)
            yield batch.to(self.device, non_blocking=True)


def _raise(errors) -> None:
    path, cause = errors[0]
    if not path:
        raise InputError(f"{cause}; set data.image_size=N to resize every image (shorter side, then a centre crop)")
    more = f" ({len(errors) - 1} more in the same batch)" if len(errors) > 1 else ""
    raise UnreadableImage(path, cause, more)


def decode_all(files: ImageFiles, workers: int = -1) -> np.ndarray:
    """Every image of ``files`` decoded into one (N, 3, S, S) uint8 array (``workers`` processes)."""
    n = len(files)
    shape = files.shape
    out = np.empty(shape, dtype=np.uint8)
    if n == 0:
        return out
    stream = StreamInputs(files, torch.device("cpu"), workers)
    idx = torch.arange(n)
    chunks = list(idx.split(256))
    for c, batch in zip(chunks, stream.iterate(chunks)):
        if tuple(batch.shape[1:]) != tuple(shape[1:]):
            raise InputError(f"image {files.path(int(c[0]))!r} has size {tuple(batch.shape[2:])}, the first image "
                             f"{tuple(shape[2:])}; set data.image_size=N to resize every image")
        out[int(c[0]) : int(c[-1]) + 1] = batch.numpy()
    return out


def make_inputs(x, device: torch.device, backend: str, workers: int = -1) -> Inputs:
    """The :class:`Inputs` of one split's array or :class:`ImageFiles` on ``backend`` (see :func:`choose_backend`)."""
    if backend == "stream":
        return StreamInputs(x, device, workers)
    if isinstance(x, ImageFiles):
        x = decode_all(x, workers)
    return MemoryInputs(x, device)
