"""ImageNet backbones from torchvision (and, when installed, timm) behind dsink's ``Classifier`` interface.

Each model holds ``backbone`` (the library network with its classifier head replaced by identity, so
``backbone(x)`` is the pooled feature vector) and ``fc``, a new ``nn.Linear(D, num_classes)`` for the
data's classes. One-channel images are repeated to three channels inside ``features``.

Weights (``model.pretrained``) come from a local file or, for ``true``, from torchvision's default
weights already in the torch hub cache (``$TORCH_HOME/hub/checkpoints``); nothing is downloaded.
``freeze_backbone`` only sets ``requires_grad=False`` on the backbone's parameters: BatchNorm layers
still update their running statistics in train mode.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

import torch
import torch.nn as nn

from ..errors import InputError
from .nets import Classifier

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# name -> (keys of the torchvision classifier head, dropped from weight files; short description)
TORCHVISION_BACKBONES: dict[str, tuple[tuple[str, ...], str]] = {
    "resnet18": (("fc.",), "ResNet-18, 11.2M parameters"),
    "resnet50": (("fc.",), "ResNet-50, 23.5M parameters"),
    "convnext_tiny": (("classifier.2.",), "ConvNeXt-Tiny, 27.8M parameters"),
    "efficientnet_b0": (("classifier.1.",), "EfficientNet-B0, 4.0M parameters"),
    "vit_b_16": (("heads.",), "ViT-B/16 for the data's image size (a multiple of 16), 85.8M parameters"),
}
TIMM_PREFIX = "timm:"
_TRUE, _FALSE = ("true", "yes"), ("false", "no", "none", "")


class BackboneClassifier(Classifier):
    """``fc(flatten(backbone(x)))``; ``arch`` names the architecture, ``head_keys`` the prefixes of the
    library's own head in weight files (ignored when loading)."""

    def __init__(self, backbone: nn.Module, dim: int, num_classes: int, arch: str, head_keys: tuple[str, ...]):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(dim, num_classes)
        self.arch = arch
        self.head_keys = tuple(head_keys)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return torch.flatten(self.backbone(x), 1)


def has_backbone(model: nn.Module) -> bool:
    """True for models with a separate pretrainable ``backbone`` (the torchvision and timm models)."""
    return isinstance(getattr(model, "backbone", None), nn.Module)


def _channels(shape, name: str) -> int:
    if len(shape) != 3:
        raise InputError(f"model {name} needs image input (C, H, W), got samples of shape {tuple(shape)}; use model mlp")
    if shape[0] not in (1, 3):
        raise InputError(f"model {name} needs 1- or 3-channel images, got {shape[0]} channels")
    return shape[0]


def build_torchvision(name: str, shape, num_classes: int) -> BackboneClassifier:
    """A torchvision ``name`` network (random weights) with its head replaced for ``num_classes``."""
    import torchvision.models as tvm

    _channels(shape, name)
    h, w = int(shape[1]), int(shape[2])
    head_keys = TORCHVISION_BACKBONES[name][0]
    if name == "vit_b_16":
        if h != w or h % 16:
            raise InputError(f"model vit_b_16 needs square images whose side is a multiple of 16, got {h}x{w}; "
                             "set data.image_size to a multiple of 16 (e.g. 32, 224)")
        net = tvm.vit_b_16(image_size=h)
        dim = net.heads.head.in_features
        net.heads = nn.Identity()
    else:
        if name == "convnext_tiny" and min(h, w) < 32:
            raise InputError(f"model convnext_tiny needs images of at least 32x32 pixels (it downsamples 32 times), "
                             f"got {h}x{w}; set data.image_size=32 or more")
        net = getattr(tvm, name)()
        if name.startswith("resnet"):
            dim, net.fc = net.fc.in_features, nn.Identity()
        else:  # convnext: classifier = (LayerNorm2d, Flatten, Linear); efficientnet: (Dropout, Linear)
            dim = net.classifier[-1].in_features
            net.classifier[-1] = nn.Identity()
    return BackboneClassifier(net, dim, num_classes, name, head_keys)


def _import_timm(name: str):
    try:
        import timm
    except ImportError:
        raise InputError(f"model {name} needs the timm package: pip install timm") from None
    return timm


def timm_factory(name: str):
    """The factory ``f(input_shape, num_classes, width=0)`` of model ``timm:NAME`` (InputError without timm)."""
    arch = name[len(TIMM_PREFIX):]
    if not arch:
        raise InputError(f"model {name!r} names no timm architecture; write timm:NAME, e.g. timm:resnet34")
    timm = _import_timm(name)
    is_model = getattr(timm, "is_model", None)
    if is_model is not None and not is_model(arch):
        raise InputError(f"unknown timm model {arch!r} (model {name}); see timm.list_models()")

    def make(shape, num_classes, width=0):
        _channels(shape, name)
        net = timm.create_model(arch, pretrained=False, num_classes=0)
        cfg = getattr(net, "pretrained_cfg", None) or getattr(net, "default_cfg", None) or {}
        heads = cfg.get("classifier") or ()
        heads = (heads,) if isinstance(heads, str) else tuple(heads)
        return BackboneClassifier(net, int(net.num_features), num_classes, name, tuple(h + "." for h in heads))

    return make


def timm_info(name: str) -> dict[str, Any]:
    timm_factory(name)  # the same errors as get_model
    return {"name": name, "description": f"timm {name[len(TIMM_PREFIX):]} (ImageNet backbone; model.pretrained=FILE)",
            "aliases": (), "backbone": True}


def parse_pretrained(value) -> str | bool | None:
    """``None`` (no weights), ``True`` (the library's default weights) or a file path."""
    if value is None or value is False:
        return None
    if value is True:
        return True
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise InputError(f"model.pretrained must be a file path or true, got {value!r}")
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return None
    return value


def hub_weights_path(name: str) -> tuple[str, str]:
    """(local path, download URL) of torchvision's default weights for ``name`` in the torch hub cache."""
    import torchvision.models as tvm

    url = tvm.get_model_weights(name).DEFAULT.url
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url)), url


def _read_state_dict(path: str, model_name: str) -> "OrderedDict[str, torch.Tensor]":
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, pickled objects that weights_only refuses, ...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise InputError(f"model.pretrained file '{path}' could not be read as a PyTorch state dict "
                         f"({type(e).__name__}: {msg[:200]})") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"model.pretrained file '{path}' holds no state dict of tensors (a dict of parameter "
                         f"name -> tensor, or one under 'state_dict' or 'model') for model {model_name}")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, v in obj.items():
        out[k[len("module."):] if k.startswith("module.") else k] = v
    meta = getattr(obj, "_metadata", None)  # version info some modules' loading hooks read
    if meta is not None:
        out._metadata = OrderedDict(  # type: ignore[attr-defined]
            ("" if k == "module" else k[len("module."):] if k.startswith("module.") else k, v) for k, v in meta.items())
    return out


def _few(keys, n: int = 5) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def load_backbone_weights(model: BackboneClassifier, pretrained) -> BackboneClassifier:
    """Load ``pretrained`` (a state-dict file, or True for torchvision's default weights from the local
    hub cache) into ``model.backbone``; the library's head keys are dropped, everything else must fit."""
    source = parse_pretrained(pretrained)
    if source is None:
        return model
    name = model.arch
    if source is True:
        if name not in TORCHVISION_BACKBONES:
            raise InputError(f"model.pretrained=true works with the torchvision backbones only; "
                             f"for {name} give model.pretrained=FILE (a state-dict file)")
        path, url = hub_weights_path(name)
        if not os.path.isfile(path):
            raise InputError(f"model.pretrained=true: torchvision's {name} weights are not in the local cache {path}; "
                             f"no network is used: download {url} and place it at {path}, or set model.pretrained=FILE")
    else:
        path = os.path.expanduser(source)
        if not os.path.isfile(path):
            raise InputError(f"model.pretrained file '{source}' not found; give a state-dict file of a {name} "
                             f"network, or model.pretrained=true for torchvision's ImageNet weights")
    sd = _read_state_dict(path, name)
    for k in [k for k in sd if k.startswith(model.head_keys)]:
        del sd[k]
    net = model.backbone
    pos = sd.get("encoder.pos_embedding")
    if name == "vit_b_16" and pos is not None and pos.shape != net.encoder.pos_embedding.shape:
        try:
            from torchvision.models.vision_transformer import interpolate_embeddings

            sd = interpolate_embeddings(net.image_size, net.patch_size, sd)
        except (ValueError, RuntimeError) as e:
            raise InputError(f"model.pretrained file '{path}': the position embedding {tuple(pos.shape)} cannot be "
                             f"interpolated to image size {net.image_size} ({e})") from None
    try:
        res = net.load_state_dict(sd, strict=False)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()]
        raise InputError(f"model.pretrained file '{path}' does not fit model {name}: "
                         + "; ".join(lines[:3]) + (f" (+{len(lines) - 3} more)" if len(lines) > 3 else "")) from None
    if res.missing_keys or res.unexpected_keys:
        parts = []
        if res.missing_keys:
            parts.append(f"{len(res.missing_keys)} missing keys: {_few(res.missing_keys)}")
        if res.unexpected_keys:
            parts.append(f"{len(res.unexpected_keys)} unexpected keys: {_few(res.unexpected_keys)}")
        raise InputError(f"model.pretrained file '{path}' does not fit model {name} (is it a torchvision {name} "
                         f"state dict?): " + "; ".join(parts))
    return model


def freeze_backbone(model: nn.Module) -> nn.Module:
    """``requires_grad=False`` on the backbone's parameters (the head ``fc`` keeps training)."""
    model.backbone.requires_grad_(False)
    return model
