"""The registries: one Registry type for every pluggable kind, its query API and `dsink list`."""

import numpy as np
import pytest

import dsink
from dsink.cli import LIST_KINDS, main
from dsink.config import load_config
from dsink.errors import InputError
from dsink.registry import Registry

# kind of `dsink list`, the word in error messages, the list/get functions' suffix, a built-in name
KINDS = [
    ("methods", "method", "methods", "methods", "ce"),
    ("models", "model", "models", "models", "mlp"),
    ("datasets", "dataset", "datasets", "datasets", "npz"),
    ("optimizers", "optimizer", "optimizers", "optimizers", "sgd"),
    ("schedules", "schedule", "schedules", "schedules", "cosine"),
    ("noise-modes", "noise mode", "modes", "noise_modes", "uniform_excl_true"),
]


def _api(suffix):
    singular = suffix[:-1]
    return getattr(dsink, f"list_{suffix}"), getattr(dsink, f"get_{singular}"), getattr(dsink, f"{singular}_info")


# --------------------------------------------------------------------------- the generic type
def test_registry_register_get_list_info_and_aliases():
    reg = Registry("colour")
    reg.register("red", 1, description="warm")

    @reg.register("blue", aliases=("azure", "navy"), description="cold", hue=240)
    def blue():
        return 2

    assert reg.get("red") == 1 and reg.get("blue") is blue and reg.get("navy") is blue
    assert reg.list() == ["blue", "red"] and reg.names() == ("red", "blue") and list(reg) == ["red", "blue"]
    assert reg.list("b*") == ["blue"] and reg.list(hue=240) == ["blue"] and len(reg) == 2
    assert "azure" in reg and "red" in reg and "green" not in reg
    assert reg.resolve("azure") == "blue"
    assert reg.info("navy") == {"name": "blue", "description": "cold", "hue": 240, "aliases": ("azure", "navy")}
    assert reg.info("red") == {"name": "red", "description": "warm", "aliases": ()}
    with pytest.raises(InputError, match=r"^unknown colour 'green'; valid colours: blue, red, azure, navy$"):
        reg.get("green")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("navy", 3)
    assert reg.unregister("blue") is blue
    assert reg.list() == ["red"] and "navy" not in reg and reg.aliases() == {}
    with pytest.raises(KeyError):
        reg.unregister("blue")


def test_registry_error_order_keeps_registration_order_when_asked():
    reg = Registry("step", "steps", error_order="registered")
    for name in ("zeta", "alpha"):
        reg.register(name, name)
    with pytest.raises(InputError, match="valid steps: zeta, alpha$"):
        reg.get("beta")
    assert reg.list() == ["alpha", "zeta"]


# --------------------------------------------------------------------------- every kind
@pytest.mark.parametrize("what,kind,plural,suffix,known", KINDS, ids=[k[0] for k in KINDS])
def test_each_registry_answers_list_get_and_info(what, kind, plural, suffix, known):
    list_, get, info = _api(suffix)
    names = list_()
    assert names == sorted(names) and known in names and len(names) >= 3
    assert get(known) is not None and info(known)["name"] == known and info(known)["description"]
    with pytest.raises(InputError) as e:
        get("nope")
    msg = str(e.value)
    assert msg.startswith(f"unknown {kind} 'nope'; valid {plural}: ") and all(n in msg for n in names)


def test_methods_keep_name_role_description_and_filter_by_role():
    noise = dsink.list_methods(role="noise")
    assert "gce" in noise and "la" not in noise
    cls = dsink.get_method("la")
    assert (cls.name, cls.role) == ("la", "imbalance") and dsink.method_info("la")["description"] == cls.description
    assert dsink.list_models("resnet*") == ["resnet18", "resnet20", "resnet32", "resnet50", "resnet8"]


def test_noise_mode_aliases_and_errors_are_unchanged():
    assert dsink.get_noise_mode("unif") is dsink.get_noise_mode("uniform_incl_true")
    assert dsink.noise_mode_info("imb")["name"] == "class_size_prop"
    assert "tabasco_flip" in dsink.noise_mode_info("pair_random")["aliases"]
    with pytest.raises(InputError, match="valid modes: uniform_incl_true, uniform_excl_true, class_size_prop"):
        dsink.get_noise_mode("gaussian")
    with pytest.raises(InputError, match="'sym' is ambiguous"):
        dsink.get_noise_mode("sym")


@pytest.mark.parametrize("what", LIST_KINDS)
def test_dsink_list_answers_from_each_registry(what, capsys):
    assert main(["list", what]) == 0
    out = capsys.readouterr().out
    list_ = _api(next(k[3] for k in KINDS if k[0] == what))[0]
    listed = [line.split()[0] for line in out.splitlines()]
    assert sorted(listed) == list_()


def test_dsink_list_methods_and_models_keep_their_format(capsys):
    assert main(["list", "methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["ce", "baseline"] and lines[-1].split()[:2] == ["dsink", "target"]
    assert lines[0].startswith(f"{'ce':<22}{'baseline':<11}")
    assert main(["list", "models"]) == 0
    assert capsys.readouterr().out.startswith(f"{'mlp':<18}MLP")


# --------------------------------------------------------------------------- adding entries
def _load_blobs(cfg):
    """Three Gaussian blobs in 2-D (features), 200 training samples per class."""
    from dsink.data import Source

    rng = np.random.default_rng(0)
    y, y_test = np.repeat(np.arange(3), 200), np.arange(60) % 3
    x, x_test = ((rng.normal(size=(len(v), 2)) + 4 * v[:, None]).astype(np.float32) for v in (y, y_test))
    return Source("blobs", "features", x, y, x_test, y_test, 3, ["a", "b", "c"], train_true=y)


@pytest.fixture
def blobs():
    """The dataset "blobs", registered for one test only."""
    from dsink.data import DATASET_REGISTRY

    dsink.register_dataset("blobs", _load_blobs, description="three Gaussian blobs (a test dataset)")
    try:
        yield "blobs"
    finally:
        DATASET_REGISTRY.unregister("blobs")
    assert "blobs" not in dsink.list_datasets()


def test_a_registered_dataset_is_validated_listed_described_and_trained_on(blobs, tmp_path, capsys):
    from dsink.train import resolve_config, train_run

    over = ["data.dataset=blobs", "data.imbalance_ratio=2", "data.noise_rate=0.2", "model.name=mlp",
            "model.width=8", "optim.optimizer=adam", "optim.lr=0.05", "optim.batch_size=32", "optim.epochs=2",
            "train.device=cpu"]
    cfg = resolve_config(load_config(None, over))
    assert cfg.data.dataset == "blobs"
    assert main(["list", "datasets"]) == 0
    assert any(line.startswith("blobs ") and "Gaussian" in line for line in capsys.readouterr().out.splitlines())
    assert main(["data", "describe", "--dataset", "blobs", "--imbalance-ratio", "2", "--json"]) == 0
    assert '"dataset": "blobs"' in capsys.readouterr().out
    report = train_run(cfg, tmp_path / "run")
    assert report["last"]["top1"] > 0.5


def test_an_unregistered_dataset_is_refused_everywhere(capsys):
    from dsink.train import resolve_config

    with pytest.raises(InputError, match="unknown dataset 'blobs'; valid datasets: cifar10"):
        resolve_config(load_config(None, ["data.dataset=blobs"]))
    assert main(["data", "describe", "--dataset", "blobs"]) == 2
    assert "unknown dataset 'blobs'" in capsys.readouterr().err


def test_registered_optimizer_and_schedule_are_used_by_the_engine(blobs, tmp_path):
    import torch

    from dsink.train import resolve_config, train_run
    from dsink.train.optim import OPTIMIZER_REGISTRY
    from dsink.train.schedule import SCHEDULE_REGISTRY, lr_at

    built, lrs = [], []

    @dsink.register_optimizer("plain_sgd", description="SGD without momentum (a test optimiser)")
    def plain_sgd(params, o):
        built.append(o.lr)
        return torch.optim.SGD(params, lr=o.lr)

    @dsink.register_schedule("halved", description="half the learning rate (a test schedule)")
    def halved(o, t):
        lrs.append(t)
        return o.lr / 2

    try:
        assert "plain_sgd" in dsink.list_optimizers() and "halved" in dsink.list_schedules()
        cfg = resolve_config(load_config(None, [
            "data.dataset=blobs", "data.imbalance_ratio=2", "model.name=mlp", "model.width=8", "optim.epochs=1",
            "optim.optimizer=plain_sgd", "optim.schedule=halved", "optim.lr=0.2", "train.device=cpu"]))
        assert lr_at(cfg.optim, 0.5) == 0.1
        train_run(cfg, tmp_path / "run")
        assert built == [0.2] and lrs
    finally:
        OPTIMIZER_REGISTRY.unregister("plain_sgd")
        SCHEDULE_REGISTRY.unregister("halved")
    with pytest.raises(InputError, match="unknown optimizer 'plain_sgd'; valid optimizers: adam, adamw, sgd"):
        dsink.get_optimizer("plain_sgd")
