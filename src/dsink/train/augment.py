"""Batched, on-device input pipeline: uint8 gather -> random crop with padding -> flip -> normalise.

Random numbers come from a CPU ``torch.Generator`` (a few per sample), so batch order and
augmentation are the same on CPU and CUDA for one seed, and resume restores them exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(x: torch.Tensor, gen: torch.Generator, pad: int = 4, hflip: bool = True) -> torch.Tensor:
    """Random ``pad``-padded crop back to the input size (zero padding) and random horizontal flip.

    ``x``: (B, C, H, W) of any dtype. Two gathers index the padded batch; no per-sample Python.
    """
    b, c, h, w = x.shape
    dev = x.device
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(dev)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(dev)
    xp = F.pad(x, (pad, pad, pad, pad))
    rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None].expand(b, c, h, w + 2 * pad)
    xp = xp.gather(2, rows)
    cols = ox[:, None] + torch.arange(w, device=dev)
    if hflip:
        flip = torch.rand(b, generator=gen).to(dev) < 0.5
        cols = torch.where(flip[:, None], cols.flip(1), cols)
    return xp.gather(3, cols[:, None, None, :].expand(b, c, h, w))


class InputPipeline:
    """Turns stored samples (uint8 images or float features) into normalised float batches."""

    def __init__(self, kind: str, mean, std, device: torch.device, *, augment: bool, hflip: bool, channels_last: bool):
        self.kind = kind
        shape = (1, -1, 1, 1) if kind == "image" else (1, -1)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(shape)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(shape)
        self.augment = augment and kind == "image"
        self.hflip = hflip
        self.channels_last = channels_last and kind == "image"

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """Normalise (and augment when ``gen`` is given and augmentation is on)."""
        if self.augment and gen is not None:
            x = random_crop_flip(x, gen, hflip=self.hflip)
        if self.kind == "image":
            x = x.float().div_(255.0)
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x
