"""The committed configs: each loads, names valid methods and data, and matches configs/generate.py."""

import subprocess
import sys
from pathlib import Path

import pytest

from dsink.config import load_config
from dsink.pipeline import _role_config, load_pipeline

CONFIGS = Path(__file__).parent.parent / "configs"
RUN_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if p.name != "fmnist_lt.yaml")


def test_grid_is_complete():
    names = {p.name for p in RUN_CONFIGS}
    for ds in ("cifar10", "cifar100"):
        for rho in (10, 100):
            for noise in ("uniform20", "uniform40", "semantic20", "semantic40"):
                assert f"{ds}_lt{rho}_{noise}.yaml" in names
    assert {"cifar10n_lt10_worse.yaml", "cifar10n_lt100_worse.yaml", "cifar100n_lt10_noisy.yaml",
            "cifar100n_lt100_noisy.yaml", "fmnist_lt100_uniform40.yaml", "fmnist_lt10_semantic20.yaml"} <= names


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_run_config_resolves(path):
    base, pipe = load_pipeline(path)
    for role, method in (("imbalance", pipe.imbalance), ("noise", pipe.noise)):
        cfg = _role_config(base, pipe, role, method, pipe.seeds[0])
        assert cfg.method.name == method.name
    if base.data.dataset.startswith("cifar"):
        o = base.optim
        assert (base.model.name, o.lr, o.batch_size, o.weight_decay, o.epochs, o.milestones, o.warmup_epochs) == \
            ("resnet32", 0.1, 128, 2e-4, 200, [160, 180], 5)
        assert base.data.download and base.train.device == "auto"


def test_train_config_loads():
    cfg = load_config(CONFIGS / "fmnist_lt.yaml")
    assert (cfg.data.dataset, cfg.data.imbalance_ratio, cfg.data.noise_rate) == ("fashion_mnist", 100, 0.4)


def test_committed_configs_match_the_generator(tmp_path):
    subprocess.run([sys.executable, str(CONFIGS / "generate.py"), str(tmp_path)], check=True)
    generated = sorted(p.name for p in tmp_path.glob("*.yaml"))
    assert generated == [p.name for p in RUN_CONFIGS]
    for name in generated:
        assert (tmp_path / name).read_text() == (CONFIGS / name).read_text(), name
