"""The torchvision (and optional timm) backbones: shapes, weight files, the hub cache, freezing, errors."""

from __future__ import annotations

import os
import re
import sys
import types

import pytest
import torch
import torch.nn as nn
import torchvision

from dsink.errors import InputError
from dsink.models import (IMAGENET_MEAN, IMAGENET_STD, build_model, get_model, has_backbone, list_models,
                          model_info)
from dsink.models.backbones import load_backbone_weights, parse_pretrained

BACKBONES = ["resnet18", "resnet50", "convnext_tiny", "efficientnet_b0", "vit_b_16"]
DIMS = {"resnet18": 512, "resnet50": 2048, "convnext_tiny": 768, "efficientnet_b0": 1280, "vit_b_16": 768}
RESNET18_FILE = "resnet18-f37072fd.pth"  # basename of torchvision's ResNet18_Weights.DEFAULT url


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return build_model("vit_b_16", (3, 32, 32), 5)


@pytest.fixture(scope="module")
def tv_resnet18():
    """State dict of a fresh torchvision resnet18 with its 1000-class head."""
    torch.manual_seed(1)
    return torchvision.models.resnet18().state_dict()


def _backbone_equals(model, sd):
    got = model.backbone.state_dict()
    keys = [k for k in sd if not k.startswith("fc.")]
    assert set(got) == set(keys)
    return all(torch.equal(got[k], sd[k]) for k in keys)


def test_registry_entries_and_constants():
    assert set(BACKBONES) <= set(list_models())
    assert list_models("resnet*") == ["resnet18", "resnet20", "resnet32", "resnet50", "resnet8"]
    for name in BACKBONES:
        info = model_info(name)
        assert info["backbone"] is True
        assert info["description"].startswith("torchvision ")
        assert info["description"].endswith("(ImageNet backbone; model.pretrained=FILE|true)")
    assert "backbone" not in model_info("small_cnn")
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)
    assert not has_backbone(build_model("small_cnn", (1, 28, 28), 10))
    assert parse_pretrained("True") is True and parse_pretrained(True) is True and parse_pretrained("true") is True
    assert parse_pretrained("false") is None and parse_pretrained(None) is None and parse_pretrained(False) is None
    assert parse_pretrained("w.pth") == "w.pth"


@pytest.mark.parametrize("name", BACKBONES)
def test_forward_and_features_shapes(name, request):
    torch.manual_seed(0)
    m = request.getfixturevalue("vit") if name == "vit_b_16" else build_model(name, (3, 32, 32), 5, width=99)
    assert has_backbone(m) and isinstance(m.fc, nn.Linear)
    assert (m.fc.in_features, m.fc.out_features) == (DIMS[name], 5)
    m.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        f = m.features(x)
        assert f.shape == (2, DIMS[name])
        assert torch.allclose(m(x), m.fc(f))
        assert torch.allclose(f, torch.flatten(m.backbone(x), 1))
        g = x[:, :1]  # a one-channel batch is repeated to three channels
        assert torch.allclose(m.features(g), m.features(g.repeat(1, 3, 1, 1)), atol=1e-5)
        assert m(g).shape == (2, 5)


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0"])
def test_one_channel_28px_images_train(name):
    m = build_model(name, (1, 28, 28), 10)
    out = m(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_load_state_dict_file(tmp_path, tv_resnet18):
    path = tmp_path / "r18.pth"
    torch.save(tv_resnet18, path)
    m = build_model("resnet18", (3, 32, 32), 10, pretrained=str(path))
    assert _backbone_equals(m, tv_resnet18)
    assert m.fc.out_features == 10 and m.fc.weight.shape == (10, 512)
    assert all(p.requires_grad for p in m.parameters())
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_wrapped_file_with_module_prefix(tmp_path, tv_resnet18, wrapper):
    path = tmp_path / "ckpt.pt"
    torch.save({wrapper: {"module." + k: v for k, v in tv_resnet18.items()}, "epoch": 90}, path)
    m = build_model("resnet18", (1, 28, 28), 3, pretrained=path)  # a PathLike works too
    assert _backbone_equals(m, tv_resnet18)
    assert m.fc.out_features == 3


def test_wrong_keys_and_shapes(tmp_path, tv_resnet18):
    extra = dict(tv_resnet18, **{"extra.weight": torch.zeros(3)})
    del extra["layer4.1.bn2.bias"]
    path = tmp_path / "other.pth"
    torch.save(extra, path)
    with pytest.raises(InputError) as e:
        build_model("resnet18", (3, 32, 32), 10, pretrained=str(path))
    msg = str(e.value)
    assert f"'{path}'" in msg and "model resnet18" in msg
    assert "1 missing keys: layer4.1.bn2.bias" in msg and "1 unexpected keys: extra.weight" in msg

    bad = dict(tv_resnet18, **{"conv1.weight": torch.zeros(64, 3, 3, 3)})
    torch.save(bad, path)
    with pytest.raises(InputError, match=r"does not fit model resnet18: .*conv1\.weight"):
        build_model("resnet18", (3, 32, 32), 10, pretrained=str(path))

    torch.save(tv_resnet18, path)  # a resnet18 file for another architecture
    with pytest.raises(InputError) as e:
        build_model("efficientnet_b0", (3, 32, 32), 10, pretrained=str(path))
    msg = str(e.value)
    assert f"'{path}'" in msg and "model efficientnet_b0" in msg and "missing keys: features." in msg
    assert "unexpected keys: bn1.bias" in msg and "more)" in msg


def test_missing_corrupt_and_empty_files(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(InputError, match="model.pretrained file '" + re.escape(str(missing)) + "' not found; "):
        build_model("resnet18", (3, 32, 32), 10, pretrained=str(missing))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a torch file at all")
    with pytest.raises(InputError, match="model.pretrained file '" + re.escape(str(corrupt)) + "' could not be read"):
        build_model("resnet18", (3, 32, 32), 10, pretrained=str(corrupt))
    no_tensors = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "lr": 0.1}, no_tensors)
    with pytest.raises(InputError, match="'" + re.escape(str(no_tensors)) + "' holds no state dict"):
        build_model("resnet18", (3, 32, 32), 10, pretrained=str(no_tensors))


def test_true_reads_only_the_local_hub_cache(tmp_path, monkeypatch, tv_resnet18):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = os.path.join(str(tmp_path), "hub", "checkpoints", RESNET18_FILE)
    with pytest.raises(InputError) as e:
        build_model("resnet18", (3, 32, 32), 10, pretrained="true")
    msg = str(e.value)
    assert expected in msg and "no network is used" in msg
    assert f"download https://download.pytorch.org/models/{RESNET18_FILE} and place it at {expected}" in msg
    assert not os.path.exists(expected)  # nothing was downloaded

    os.makedirs(os.path.dirname(expected))
    torch.save(tv_resnet18, expected)
    for flag in ("True", True):
        m = build_model("resnet18", (3, 32, 32), 7, pretrained=flag)
        assert _backbone_equals(m, tv_resnet18) and m.fc.out_features == 7


def test_freeze_backbone(tmp_path, tv_resnet18):
    path = tmp_path / "r18.pth"
    torch.save(tv_resnet18, path)
    m = build_model("resnet18", (3, 32, 32), 4, pretrained=str(path), freeze_backbone=True)
    assert not any(p.requires_grad for p in m.backbone.parameters())
    assert all(p.requires_grad for p in m.fc.parameters())
    m(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is None for p in m.backbone.parameters())
    assert m.fc.weight.grad is not None and m.fc.weight.grad.abs().sum() > 0
    assert all(torch.equal(p, tv_resnet18[k]) for k, p in m.backbone.named_parameters())
    # only requires_grad: BatchNorm running statistics still update in train mode (documented)
    assert not torch.equal(m.backbone.bn1.running_mean, tv_resnet18["bn1.running_mean"])


def test_options_refused_for_models_without_backbone(tmp_path):
    with pytest.raises(InputError) as e:
        build_model("small_cnn", (1, 28, 28), 10, pretrained=str(tmp_path / "w.pth"))
    msg = str(e.value)
    assert msg.startswith("model.pretrained works with the torchvision backbones (")
    assert "convnext_tiny, efficientnet_b0, resnet18, resnet50, vit_b_16" in msg and "model small_cnn" in msg
    with pytest.raises(InputError, match="model.freeze_backbone works with the torchvision backbones"):
        build_model("resnet32", (3, 32, 32), 10, freeze_backbone=True)
    with pytest.raises(InputError, match="model.pretrained works"):
        build_model("mlp", (20,), 3, pretrained=True)
    assert build_model("small_cnn", (1, 28, 28), 10, pretrained=None).fc.out_features == 10
    assert build_model("mlp", (20,), 3, pretrained="false").fc.out_features == 3


def test_image_size_errors():
    with pytest.raises(InputError, match=r"vit_b_16 needs square images whose side is a multiple of 16, got 40x40; "
                                         r"set data.image_size"):
        build_model("vit_b_16", (3, 40, 40), 10)
    with pytest.raises(InputError, match=r"got 32x48; set data.image_size"):
        build_model("vit_b_16", (3, 32, 48), 10)
    with pytest.raises(InputError, match=r"convnext_tiny needs images of at least 32x32 pixels .*got 28x28"):
        build_model("convnext_tiny", (1, 28, 28), 10)
    with pytest.raises(InputError, match="needs 1- or 3-channel images, got 4 channels"):
        build_model("resnet18", (4, 32, 32), 10)
    with pytest.raises(InputError, match="needs image input"):
        build_model("efficientnet_b0", (20,), 10)


def test_vit_weights_for_224_interpolated_to_32(tmp_path, vit):
    sd = {k: v.clone() for k, v in vit.backbone.state_dict().items()}
    assert sd["encoder.pos_embedding"].shape == (1, 5, 768)  # 2x2 patches + class token
    torch.manual_seed(2)
    pos224 = torch.randn(1, 197, 768)  # 14x14 patches + class token, as in torchvision's file
    sd["encoder.pos_embedding"] = pos224
    sd["conv_proj.weight"] += 1.0
    sd["heads.head.weight"], sd["heads.head.bias"] = torch.zeros(1000, 768), torch.zeros(1000)
    path = tmp_path / "vit224.pth"
    torch.save(sd, path)
    load_backbone_weights(vit, str(path))  # what build_model(..., pretrained=PATH) does after building
    got = vit.backbone.state_dict()
    assert torch.equal(got["conv_proj.weight"], sd["conv_proj.weight"])
    # bicubic with align_corners=True from 14x14 to 2x2 samples the grid's corners exactly
    assert torch.allclose(got["encoder.pos_embedding"], pos224[:, [0, 1, 14, 183, 196]], atol=1e-5)
    assert vit.fc.out_features == 5
    assert vit(torch.randn(1, 3, 32, 32)).shape == (1, 5)


def test_timm_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError, installed or not
    for call in (lambda: get_model("timm:resnet34"), lambda: model_info("timm:resnet34"),
                 lambda: build_model("timm:resnet34", (3, 32, 32), 10)):
        with pytest.raises(InputError, match=r"^model timm:resnet34 needs the timm package: pip install timm$"):
            call()
    assert not any(n.startswith("timm:") for n in list_models())


class _TinyTimmNet(nn.Module):
    num_features = 8

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.pretrained_cfg = {"classifier": "head"}

    def forward(self, x):
        return self.conv(x).mean((2, 3))


def test_timm_factory_with_a_fake_timm(monkeypatch, tmp_path):
    calls = []
    fake = types.ModuleType("timm")
    fake.is_model = lambda name: name == "tiny"
    fake.create_model = lambda name, **kw: calls.append((name, kw)) or _TinyTimmNet()
    monkeypatch.setitem(sys.modules, "timm", fake)
    with pytest.raises(InputError, match="unknown timm model 'nope'"):
        get_model("timm:nope")
    assert model_info("timm:tiny")["backbone"] is True
    m = build_model("timm:tiny", (1, 16, 16), 3)
    assert calls == [("tiny", {"pretrained": False, "num_classes": 0})]
    assert has_backbone(m) and (m.fc.in_features, m.fc.out_features) == (8, 3)
    assert m(torch.randn(2, 1, 16, 16)).shape == (2, 3)

    src = _TinyTimmNet()
    sd = dict(src.state_dict(), **{"head.weight": torch.zeros(1000, 8), "head.bias": torch.zeros(1000)})
    torch.save(sd, tmp_path / "t.pth")
    m = build_model("timm:tiny", (3, 16, 16), 3, pretrained=str(tmp_path / "t.pth"), freeze_backbone=True)
    assert torch.equal(m.backbone.conv.weight, src.conv.weight)
    assert not m.backbone.conv.weight.requires_grad and m.fc.weight.requires_grad
    with pytest.raises(InputError, match="model.pretrained=true works with the torchvision backbones only"):
        build_model("timm:tiny", (3, 16, 16), 3, pretrained="true")
