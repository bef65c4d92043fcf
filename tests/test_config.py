import pytest

from dsink.config import RunConfig, load_config, parse_overrides
from dsink.errors import InputError


def test_defaults_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  imbalance_ratio: 10\noptim:\n  lr: 0.2\n  milestones: [5, 8]\n")
    cfg = load_config(p, ["optim.lr=0.05", "train.amp=false", "method.params.alpha=2"])
    assert cfg.data.imbalance_ratio == 10.0 and cfg.optim.lr == 0.05
    assert cfg.optim.milestones == [5, 8] and cfg.train.amp is False
    assert cfg.method.params == {"alpha": 2}
    assert cfg.data.noise_mode == RunConfig().data.noise_mode  # untouched default
    assert load_config(None, ["data.n_max=null"]).data.n_max is None


def test_unknown_keys_and_bad_values_are_errors(tmp_path):
    with pytest.raises(InputError, match="unknown config key.*optim.learning_rate"):
        load_config(None, ["optim.learning_rate=0.1"])
    with pytest.raises(InputError, match="optim.epochs.*integer"):
        load_config(None, ["optim.epochs=2.5"])
    with pytest.raises(InputError, match="true/false"):
        load_config(None, ["train.amp=maybe"])
    with pytest.raises(InputError, match="key=value"):
        parse_overrides(["optim.lr"])
    with pytest.raises(InputError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [1, 2\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_config(bad)


def test_fingerprint_tracks_content():
    a, b = RunConfig(), RunConfig()
    assert a.fingerprint() == b.fingerprint()
    b.train.seed = 1
    assert a.fingerprint() != b.fingerprint() and a.fingerprint("data") == b.fingerprint("data")
