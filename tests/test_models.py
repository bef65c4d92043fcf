import pytest
import torch
import torch.nn as nn

from dsink.errors import InputError
from dsink.models import build_model, list_models
from dsink.models.heads import penultimate


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("shape,classes", [((1, 28, 28), 10), ((3, 32, 32), 100)])
def test_every_model_any_channels_and_classes(name, shape, classes):
    if name in ("vit_b_16", "convnext_tiny") and shape[-1] == 28:  # 16-pixel patches / 32-fold downsampling
        with pytest.raises(InputError, match="data.image_size"):
            build_model(name, shape, classes)
        return
    m = build_model(name, shape, classes)
    x = torch.randn(2, *shape)
    out = m(x)
    assert out.shape == (2, classes)
    assert m.features(x).shape[0] == 2 and m.fc.out_features == classes
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_parameter_counts_match_the_registry_descriptions():
    n = {k: sum(p.numel() for p in build_model(k, (3, 32, 32), 10).parameters()) for k in list_models()}
    assert 460_000 < n["resnet32"] < 470_000
    assert 11_100_000 < n["preact_resnet18"] < 11_250_000
    assert 90_000 < sum(p.numel() for p in build_model("small_cnn", (1, 28, 28), 10).parameters()) < 100_000


def test_errors():
    with pytest.raises(InputError, match="valid models"):
        build_model("vgg", (3, 32, 32), 10)
    with pytest.raises(InputError, match="image input"):
        build_model("resnet32", (20,), 10)
    assert build_model("mlp", (20,), 3)(torch.randn(4, 20)).shape == (4, 3)


def test_penultimate_features_are_the_classifier_heads_input_for_every_model_kind():
    torch.manual_seed(0)
    for name, shape in (("mlp", (6,)), ("small_cnn", (1, 12, 12)), ("resnet8", (3, 8, 8))):
        net = build_model(name, shape, 4, width=8).eval()
        x = torch.randn(3, *shape)
        with torch.no_grad():
            f, logits = penultimate(net, x)
            assert torch.allclose(f, net.features(x)) and torch.allclose(logits, net(x)), name
    seq = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))  # no `fc`: the last nn.Linear's input
    x = torch.randn(2, 6)
    f, logits = penultimate(seq, x)
    assert torch.allclose(f, seq[1](seq[0](x))) and logits.shape == (2, 3)
    assert not seq[2]._forward_pre_hooks  # the hook is removed
    with pytest.raises(InputError, match="final linear layer"):
        penultimate(nn.Sequential(nn.ReLU()), x)
