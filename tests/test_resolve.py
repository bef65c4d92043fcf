"""One resolver: the flag table reaches its keys in every command, one hash names runs everywhere, and every
value is checked before anything is written."""

from pathlib import Path

import pytest

import dsink.data
import dsink.pipeline
import dsink.train
from dsink.cli import build_parser, main
from dsink.config import MethodConfig, RunConfig, add_hash_hook, config_hash, load_config, run_name, save_config, semantic_dict
from dsink.errors import InputError
from dsink.pipeline import cache_run_dir, load_pipeline, role_config, run_pipeline
from dsink.resolve import COMMANDS, FLAGS, check_values, flag_settings, flags_for
from dsink.train import resolve_config, train_run

CONFIGS = Path(__file__).parent.parent / "configs"
# a value per flag that every resolver check accepts, and what the config then holds
SAMPLES = {"--dataset": ("npz", "npz"), "--imbalance-ratio": ("10", 10.0), "--noise-mode": ("uniform_incl_true",) * 2,
           "--noise-rate": ("0.3", 0.3), "--data-seed": ("5", 5), "--root": ("/data/x", "/data/x"),
           "--method": ("la", "la"), "--seeds": (["3", "4"], [3, 4]), "--vary-data-seed": ([], True),
           "--epochs": ("3", 3), "--device": ("cpu", "cpu"), "--seed": ("7", 7), "--out": ("res", "res"),
           "--allow-unfinished": ([], True), "--paper": ([], True)}
# options of the flag-taking commands that set no config key
NOT_CONFIG = {"-h", "--help", "--set", "--out", "--resume", "--force", "-q", "--quiet", "--imbalance-run", "--noise-run",
              "--json", "--no-report"}


def _get(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.fixture
def captured(monkeypatch):
    """Stub the work behind each command; record what it was given."""
    seen = {}

    def train_run_stub(cfg, out, **kw):
        seen.update(cfg=cfg, out=str(out))

    def run_pipeline_stub(base, pipe, **kw):
        seen.update(cfg=base, pipe=pipe)
        return {"rows": [], "metrics": [], "pipeline_dir": "x"}

    def describe_stub(data_cfg):
        seen.update(data=data_cfg)
        return {}

    def embed_stub(cfg, out, **kw):
        seen.update(cfg=cfg, out=str(out))
        return {"out": str(out), "num_train": 0, "num_val": 0, "num_test": 0, "dim": 0, "model": "m", "backend": "memory",
                "seconds": 0.0}

    import dsink.train.embed

    monkeypatch.setattr(dsink.train.embed, "embed", embed_stub)
    monkeypatch.setattr(dsink.train, "train_run", train_run_stub)
    monkeypatch.setattr(dsink.pipeline, "run_pipeline", run_pipeline_stub)
    monkeypatch.setattr(dsink.data, "describe", describe_stub)
    return seen


@pytest.fixture
def noise_run(tmp_path):
    run = tmp_path / "fN"
    run.mkdir()
    save_config(resolve_config(load_config(None, ["method.name=gce"])), run / "config.yaml")
    return run


def _argv(command: str, tmp_path, noise_run) -> list[str]:
    return {"train": ["train", "--out", str(tmp_path / "t")],
            "distill": ["distill", "--imbalance-run", str(tmp_path / "fL"), "--noise-run", str(noise_run),
                        "--out", str(tmp_path / "d")],
            "run": ["run"], "describe": ["data", "describe", "--json"], "embed": ["embed", "--out", "f.npz"]}[command]


def _flag_argv(flag) -> list[str]:
    value = SAMPLES[flag.option][0]
    return [flag.option, *([value] if isinstance(value, str) else value)]


@pytest.mark.parametrize("command,flag", [(c, f) for f in FLAGS for c in f.commands], ids=lambda x: getattr(x, "option", x))
def test_each_flag_reaches_its_key(command, flag, captured, tmp_path, noise_run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(_argv(command, tmp_path, noise_run) + _flag_argv(flag)) == 0
    section, rest = flag.key.split(".", 1)
    if section == "pipeline":
        got = _get(captured["pipe"], rest)
    elif command == "describe":
        got = _get(captured["data"], rest)
    else:
        got = _get(captured["cfg"], flag.key)
    assert got == SAMPLES[flag.option][1]


def test_the_table_covers_every_config_option_of_the_parser():
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    parsers = {"train": sub["train"], "distill": sub["distill"], "run": sub["run"], "embed": sub["embed"],
               "describe": next(a for a in sub["data"]._actions if a.dest == "data_command").choices["describe"]}
    assert set(parsers) == set(COMMANDS)
    for command, p in parsers.items():
        options = {o for a in p._actions for o in a.option_strings}
        table = {f.option for f in flags_for(command)}
        assert table <= options and options - table <= NOT_CONFIG, command


def test_flags_are_the_last_layer_and_absent_flags_set_nothing(captured, tmp_path):
    assert main(["train", "--set", "optim.epochs=9", "--epochs", "3", "--out", str(tmp_path / "t")]) == 0
    assert captured["cfg"].optim.epochs == 3
    assert flag_settings("train", {"epochs": None, "dataset": None}) == {}
    assert flag_settings("run", {"vary_data_seed": False, "seeds": (1, 2)}) == {"pipeline": {"seeds": [1, 2]}}


def test_resume_keeps_the_stored_config_and_applies_the_flags(captured, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    save_config(resolve_config(load_config(None, ["method.name=la", "optim.epochs=4"])), run / "config.yaml")
    assert main(["train", "--resume", "--out", str(run), "--device", "cpu"]) == 0
    cfg = captured["cfg"]
    assert (cfg.method.name, cfg.optim.epochs, cfg.train.device) == ("la", 4, "cpu")


# --------------------------------------------------------------------------- one hash
def test_one_hash_names_the_cached_run_the_fingerprint_and_the_default_out(captured, tmp_path, monkeypatch):
    base, pipe = load_pipeline(None)
    cfg = role_config(base, pipe, "baseline", MethodConfig(name="ce"), 0)
    cached = cache_run_dir(cfg, tmp_path / "cache")
    assert cached.name == run_name(cfg) == f"ce-fashion_mnist-{cfg.fingerprint()}" == f"ce-fashion_mnist-{config_hash(cfg)}"
    monkeypatch.chdir(tmp_path)  # dsink train without --out: the same name under runs/
    assert main(["train", str(CONFIGS / "fmnist_lt_mlp.yaml"), "--method", "ce"]) == 0
    assert captured["out"] == f"runs/{cached.name}"


def test_the_hash_is_of_the_resolved_config_without_execution_keys(captured, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outs = []
    for extra in ([], ["--set", "method.params.tau=1.0"], ["--device", "cpu", "--set", "train.num_threads=1"],
                  ["--seed", "1"]):
        assert main(["train", "--method", "la", *extra]) == 0
        outs.append(captured["out"])
    assert outs[0] == outs[1] == outs[2] != outs[3]  # a default written out and execution keys: the same run
    a = resolve_config(load_config(None, ["method.name=la"]))
    assert a.fingerprint() == config_hash(semantic_dict(a)) and "train.device" not in semantic_dict(a)
    assert a.fingerprint("data") == resolve_config(load_config(None, ["method.name=la", "train.seed=3"])).fingerprint("data")


def test_a_hash_hook_changes_every_name_alike(tmp_path):
    cfg = resolve_config(load_config(None, ["method.name=kd", "method.params.imbalance_run=/a/fL",
                                            "method.params.noise_run=/a/fN"]))
    moved = resolve_config(load_config(None, ["method.name=kd", "method.params.imbalance_run=/b/fL",
                                              "method.params.noise_run=/b/fN"]))
    assert cfg.fingerprint() != moved.fingerprint()

    def identity(c, flat):  # e.g. the auxiliaries' identity in place of their paths; here: the paths dropped
        params = {k: v for k, v in flat["method.params"].items() if k not in ("imbalance_run", "noise_run")}
        return {**flat, "method.params": params}

    add_hash_hook("test-identity", identity)
    try:
        assert cfg.fingerprint() == moved.fingerprint()
        assert cache_run_dir(cfg, tmp_path).name == run_name(moved) == f"kd-fashion_mnist-{moved.fingerprint()}"
    finally:
        add_hash_hook("test-identity", None)
    assert cfg.fingerprint() != moved.fingerprint()


# --------------------------------------------------------------------------- every check before anything is written
BAD = [("optim.lr=-1", "optim.lr must be a number > 0, got -1.0"), ("optim.lr=nan", "optim.lr must be a number > 0, got nan"),
       ("optim.batch_size=0", "optim.batch_size must be an integer >= 1, got 0"),
       ("data.noise_rate=1", "data.noise_rate must be in [0, 1), got 1.0")]


@pytest.mark.parametrize("setting,message", BAD)
def test_bad_values_exit_2_and_write_nothing(setting, message, tmp_path, noise_run, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "DIR"
    for argv in (["train", "--set", setting, "--out", str(out)],
                 ["distill", "--imbalance-run", str(noise_run), "--noise-run", str(noise_run), "--set", setting,
                  "--out", str(out)],
                 ["run", "--set", setting, "--out", str(out), "--set", f"pipeline.cache_dir={tmp_path / 'cache'}"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"dsink: error: {message}" in err and "Traceback" not in err
        assert not out.exists() and not (tmp_path / "cache").exists() and not (tmp_path / "runs").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fN"]


@pytest.mark.parametrize("setting,message", BAD)
def test_bad_values_raise_before_anything_is_written_through_the_api(setting, message, tmp_path):
    out = tmp_path / "DIR"
    with pytest.raises(InputError, match="^" + message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        train_run(load_config(None, [setting]), out)
    assert not out.exists()
    base, pipe = load_pipeline(None, [setting, f"pipeline.out={out}", f"pipeline.cache_dir={tmp_path / 'cache'}"])
    with pytest.raises(InputError, match="must be"):
        run_pipeline(base, pipe)
    assert list(tmp_path.iterdir()) == []


def test_check_values_names_the_key_and_the_range():
    check_values(RunConfig())
    for setting, needle in (("optim.momentum=1", "optim.momentum must be in [0, 1)"),
                            ("optim.weight_decay=inf", "optim.weight_decay must be a number >= 0"),
                            ("optim.warmup_epochs=50", "optim.warmup_epochs must be in [0, optim.epochs]"),
                            ("data.imbalance_ratio=nan", "data.imbalance_ratio must be >= 1"),
                            ("data.val_fraction=1", "data.val_fraction must be in [0, 1)"),
                            ("optim.milestones=[0]", "optim.milestones must be epochs in 1..optim.epochs")):
        with pytest.raises(InputError) as e:
            check_values(load_config(None, [setting]))
        assert needle in str(e.value)
