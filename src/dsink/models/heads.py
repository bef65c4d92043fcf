"""The classifier head of a network and the penultimate features it reads (for feature-space methods:
prototypes, centroids, nearest-class-mean rules)."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import InputError


def classifier_head(net: nn.Module) -> nn.Module:
    """The module producing the logits: ``net.fc`` (every :func:`dsink.models.build_model` network, and any
    head a method swaps in there), else the network's last ``nn.Linear``; its input is the penultimate feature."""
    head = getattr(net, "fc", None)
    if isinstance(head, nn.Module):
        return head
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise InputError(f"this method needs a network with a final linear layer (an `fc` module or an nn.Linear); "
                         f"{type(net).__name__} has none")
    return linears[-1]


def penultimate(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features (B, D), logits (B, C))`` of one forward pass: the features are the input of
    :func:`classifier_head`, caught by a forward pre-hook so the network's own ``forward`` runs unchanged."""
    caught: list[torch.Tensor] = []
    handle = classifier_head(net).register_forward_pre_hook(lambda _module, args: caught.append(args[0]))
    try:
        logits = net(x)
    finally:
        handle.remove()
    return caught[-1].flatten(1), logits


def centred_l2(feats: torch.Tensor) -> torch.Tensor:
    """Features (N, D) centred on their mean and scaled to unit length row by row (float32; the ``cl2n``
    features of the nearest-class-mean literature)."""
    z = feats.float() - feats.float().mean(0)
    return z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)
