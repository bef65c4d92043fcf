"""The committed configs: each loads, names valid methods and data, and matches configs/generate.py."""

import subprocess
import sys
from pathlib import Path

import pytest

from dsink.config import load_config
from dsink.pipeline import load_pipeline, role_config

CONFIGS = Path(__file__).parent.parent / "configs"
DEDICATED = ("rolt", "tabasco", "sfa")  # single-run configs of the dedicated methods' published recipes
TRAIN_CONFIGS = ("fmnist_lt.yaml", "fmnist_lt_mlp.yaml") + tuple(
    f"{ds}_lt100_uniform40_{m}.yaml" for ds in ("cifar10", "cifar100") for m in DEDICATED)  # no pipeline section
RUN_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if p.name not in TRAIN_CONFIGS)


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
        cfg = role_config(base, pipe, role, method, pipe.seeds[0])
        assert cfg.method.name == method.name
    if base.data.dataset.startswith("cifar"):
        o = base.optim
        assert (base.model.name, o.lr, o.batch_size, o.weight_decay, o.epochs, o.milestones, o.warmup_epochs) == \
            ("resnet32", 0.1, 128, 2e-4, 200, [160, 180], 5)
        assert base.data.download and base.train.device == "auto"


def test_train_config_loads():
    cfg = load_config(CONFIGS / "fmnist_lt.yaml")
    assert (cfg.data.dataset, cfg.data.imbalance_ratio, cfg.data.noise_rate) == ("fashion_mnist", 100, 0.4)


@pytest.mark.parametrize("method", DEDICATED)
def test_dedicated_method_configs_carry_their_published_recipes(method):
    for ds, warmup in (("cifar10", {"rolt": 80, "tabasco": 10, "sfa": 30}), ("cifar100", {"rolt": 80, "tabasco": 30, "sfa": 30})):
        cfg = load_config(CONFIGS / f"{ds}_lt100_uniform40_{method}.yaml")
        o = cfg.optim
        assert cfg.method.name == method and cfg.method.params["warmup_epochs"] == warmup[method]
        assert cfg.data.dataset == ds and cfg.train.device == "auto" and o.epochs > cfg.method.params["warmup_epochs"]
        if method == "rolt":  # the LDAM/RoLT line
            assert (cfg.model.name, o.lr, o.batch_size, o.weight_decay, o.epochs) == ("resnet32", 0.1, 128, 2e-4, 200)
        else:  # the DivideMix line
            assert (cfg.model.name, o.lr, o.batch_size, o.weight_decay, o.momentum) == ("preact_resnet18", 0.02, 64, 5e-4, 0.9)


def test_committed_configs_match_the_generator(tmp_path):
    subprocess.run([sys.executable, str(CONFIGS / "generate.py"), str(tmp_path)], check=True)
    generated = sorted(p.name for p in tmp_path.glob("*.yaml"))
    # fmnist_lt.yaml is hand-written
    assert generated == sorted([p.name for p in RUN_CONFIGS] + [n for n in TRAIN_CONFIGS if n != "fmnist_lt.yaml"])
    for name in generated:
        assert (tmp_path / name).read_text() == (CONFIGS / name).read_text(), name


def test_offline_default_of_dsink_run_is_the_cpu_claims_setting_with_one_seed():
    base, pipe = load_pipeline(None)
    ref, ref_pipe = load_pipeline(CONFIGS / "fmnist_lt100_uniform40.yaml")
    assert base == ref and (base.model.name, base.optim.optimizer, base.optim.epochs) == ("mlp", "adam", 15)
    assert (base.data.dataset, base.data.imbalance_ratio, base.data.noise_rate) == ("fashion_mnist", 100, 0.4)
    assert pipe.seeds == [0] and ref_pipe.seeds == [0, 1, 2]
    assert (pipe.imbalance.name, pipe.noise.name) == (ref_pipe.imbalance.name, ref_pipe.noise.name) == ("la", "gce")
    base, pipe = load_pipeline(None, ["optim.epochs=2", "pipeline.seeds=[1]"])  # --set applies on top
    assert base.optim.epochs == 2 and base.model.name == "mlp" and pipe.seeds == [1]


def test_single_run_config_of_the_offline_default_matches_dsink_run():
    base, _ = load_pipeline(None)
    cfg = load_config(CONFIGS / "fmnist_lt_mlp.yaml", ["method.name=la"])
    assert cfg.method.name == "la"
    assert (cfg.data, cfg.model, cfg.optim, cfg.train) == (base.data, base.model, base.optim, base.train)
