"""Model registry: ``list_models()``, ``get_model(name)`` and
``build_model(name, input_shape, num_classes, width=0, *, pretrained=None, freeze_backbone=False)``.

Every model exposes ``features(x) -> (B, D)`` and ``fc`` (the final linear layer), so
methods can replace the head (LDAM's normalised classifier) and reports can embed features.
The torchvision ImageNet backbones (``resnet18``, ``resnet50``, ``convnext_tiny``, ``efficientnet_b0``,
``vit_b_16``) and, when timm is installed, ``timm:NAME`` also hold ``backbone`` and take weights
(``pretrained``); see :mod:`dsink.models.backbones`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch.nn as nn

from ..errors import InputError
from ..registry import Registry
from . import backbones as _bb
from .backbones import IMAGENET_MEAN, IMAGENET_STD, has_backbone
from .nets import MLP, CifarResNet, PreActResNet18, SmallCNN

ModelFactory = Callable[..., nn.Module]  # f(input_shape, num_classes, width) -> nn.Module
MODEL_REGISTRY: Registry[ModelFactory] = Registry("model")


def register_model(name: str, description: str, **info: Any):
    """Decorator adding a factory ``f(input_shape, num_classes, width) -> nn.Module`` to the registry."""
    return MODEL_REGISTRY.register(name, description=description, **info)


def list_models(filter: str | None = None) -> list[str]:
    """Names of the registered models, sorted; ``filter``: a shell-style pattern such as ``"resnet*"``."""
    return MODEL_REGISTRY.list(filter)


def get_model(name: str) -> ModelFactory:
    """The factory ``f(input_shape, num_classes, width)`` of a registered model (InputError if unknown).

    ``timm:NAME`` (not registered, not listed) builds timm's ``NAME`` as a backbone; it needs timm.
    """
    if isinstance(name, str) and name.startswith(_bb.TIMM_PREFIX):
        return _bb.timm_factory(name)
    return MODEL_REGISTRY.get(name)


def model_info(name: str) -> dict[str, Any]:
    """``name`` and ``description`` of a registered model (or of ``timm:NAME``); backbones have ``backbone=True``."""
    if isinstance(name, str) and name.startswith(_bb.TIMM_PREFIX):
        return _bb.timm_info(name)
    return MODEL_REGISTRY.info(name)


def _image_shape(shape, name):
    if len(shape) != 3:
        raise InputError(f"model {name} needs image input (C, H, W), got samples of shape {tuple(shape)}; use model mlp")
    return shape


@register_model("mlp", "MLP (2 hidden layers, 256 units by default) for feature data or flattened images")
def _mlp(shape, num_classes, width=0):
    return MLP(int(__import__("math").prod(shape)), num_classes, hidden=width or 256)


@register_model("small_cnn", "3-conv CNN (~94k parameters) sized for CPU benchmarks")
def _small_cnn(shape, num_classes, width=0):
    return SmallCNN(_image_shape(shape, "small_cnn")[0], num_classes, width=width or 32)


for _depth, _params in ((8, "75k"), (20, "269k"), (32, "464k")):

    def _make(shape, num_classes, width=0, _d=_depth):
        return CifarResNet(_d, _image_shape(shape, f"resnet{_d}")[0], num_classes, width=width or 16)

    register_model(f"resnet{_depth}", f"CIFAR ResNet-{_depth} (He et al. 2016; LDAM/RoLT line, {_params} parameters)")(_make)


@register_model("preact_resnet18", "PreAct-ResNet-18 (11.2M parameters; DivideMix/TABASCO line)")
def _preact18(shape, num_classes, width=0):
    return PreActResNet18(_image_shape(shape, "preact_resnet18")[0], num_classes, width=width or 64)


for _name, (_heads, _what) in _bb.TORCHVISION_BACKBONES.items():

    def _make_tv(shape, num_classes, width=0, _n=_name):  # width is ignored
        return _bb.build_torchvision(_n, tuple(shape), num_classes)

    register_model(_name, f"torchvision {_what} (ImageNet backbone; model.pretrained=FILE|true)", backbone=True)(_make_tv)


def build_model(name: str, input_shape, num_classes: int, width: int = 0, *,
                pretrained: str | bool | None = None, freeze_backbone: bool = False) -> nn.Module:
    """Instantiate a registered model for samples of ``input_shape`` and ``num_classes`` outputs.

    For the backbone models only: ``pretrained`` is a state-dict file (a plain torchvision state dict,
    or one under ``"state_dict"``/``"model"``; ``module.`` prefixes and the library's own classifier
    head are ignored) or ``True``/``"true"`` for torchvision's default ImageNet weights, read from the
    local torch hub cache only (never downloaded). ``freeze_backbone`` sets ``requires_grad=False`` on
    the backbone's parameters, so only ``fc`` trains (BatchNorm statistics still update in train mode).
    """
    factory = get_model(name)
    source = _bb.parse_pretrained(pretrained)
    if (source is not None or freeze_backbone) and not model_info(name).get("backbone", False):
        option = "model.pretrained" if source is not None else "model.freeze_backbone"
        valid = ", ".join(MODEL_REGISTRY.list(backbone=True))
        raise InputError(f"{option} works with the torchvision backbones ({valid}) and timm:NAME models, "
                         f"not with model {name}")
    model = factory(tuple(input_shape), num_classes, width)
    if source is not None:
        _bb.load_backbone_weights(model, source)
    if freeze_backbone:
        _bb.freeze_backbone(model)
    return model


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "MODEL_REGISTRY", "build_model", "get_model", "has_backbone",
           "list_models", "model_info", "register_model"]
