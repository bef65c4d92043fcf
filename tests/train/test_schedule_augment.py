import pytest
import torch

from dsink.config import OptimConfig
from dsink.train.augment import random_crop_flip
from dsink.train.schedule import lr_at


def test_multistep_with_warmup_matches_the_ldam_recipe():
    cfg = OptimConfig(lr=0.1, epochs=200, schedule="multistep", milestones=[160, 180], gamma=0.01, warmup_epochs=5)
    assert lr_at(cfg, 0) == pytest.approx(0.02) and lr_at(cfg, 4.5) == pytest.approx(0.1)
    assert lr_at(cfg, 100) == 0.1 and lr_at(cfg, 160) == pytest.approx(1e-3) and lr_at(cfg, 185) == pytest.approx(1e-5)


def test_cosine():
    cfg = OptimConfig(lr=0.2, epochs=10, schedule="cosine")
    assert lr_at(cfg, 0) == pytest.approx(0.2) and lr_at(cfg, 5) == pytest.approx(0.1) and lr_at(cfg, 10) == pytest.approx(0)


def test_crop_flip_is_a_shifted_window_of_the_padded_image():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6) + 1
    g = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, g, pad=2, hflip=False)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(2):
        windows = [padded[b, :, i:i + 6, j:j + 6] for i in range(5) for j in range(5)]
        assert any(torch.equal(out[b], w) for w in windows)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(random_crop_flip(x, g1), random_crop_flip(x, g2))
    # with pad 0 and flips, each sample is either itself or its mirror image
    out = random_crop_flip(x, torch.Generator().manual_seed(1), pad=0, hflip=True)
    for b in range(2):
        assert torch.equal(out[b], x[b]) or torch.equal(out[b], x[b].flip(-1))
