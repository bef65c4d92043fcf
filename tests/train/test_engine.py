import json

import numpy as np
import pytest
import torch

from dsink.config import load_config
from dsink.errors import InputError
from dsink.train import train_run
from dsink.train.engine import TIMING_KEYS
from dsink.runs import load_checkpoint


def _rows(run):
    return [{k: v for k, v in json.loads(l).items() if k not in TIMING_KEYS} for l in (run / "metrics.jsonl").read_text().splitlines()]


def test_smoke_run_writes_the_run_directory_contract(tmp_path, fmnist_small):
    run = tmp_path / "ce"
    report = train_run(load_config(None, fmnist_small), run)
    for f in ("config.yaml", "run.json", "metrics.jsonl", "checkpoints/last.pt", "checkpoints/best.pt",
              "eval.json", "predictions.npz"):
        assert (run / f).exists(), f
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert len(_rows(run)) == 2
    assert 0.3 < report["last"]["top1"] <= 1.0  # well above chance (0.1) after two epochs
    assert len(report["last"]["per_class_acc"]) == 10
    with np.load(run / "predictions.npz") as z:
        n = len(z["train_noisy"])
        assert z["train_probs"].shape == (n, 10) and np.allclose(z["train_probs"].sum(1), 1, atol=1e-4)
        assert z["test_probs"].shape == (10000, 10) and "train_true" in z.files
    assert 0.25 < report["train"]["noise_rate"] < 0.35


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, fmnist_small):
    over = fmnist_small + ["optim.epochs=3", "data.n_max=150", "model.width=16"]
    full, part = tmp_path / "full", tmp_path / "part"
    train_run(load_config(None, over), full)
    assert train_run(load_config(None, over), part, stop_after=1) is None
    assert load_checkpoint(part / "checkpoints/last.pt")["epoch"] == 1
    with pytest.raises(InputError, match="--resume"):
        train_run(load_config(None, over), part)
    train_run(load_config(None, over), part, resume=True)
    a = load_checkpoint(full / "checkpoints/last.pt")["models"]["net"]
    b = load_checkpoint(part / "checkpoints/last.pt")["models"]["net"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _rows(full) == _rows(part)  # incl. the prediction changes, which need the restored last predictions
    changes = [r.get("train_pred_changes") for r in _rows(full)]
    assert changes[0] is None and all(0 < c < 1 for c in changes[1:])
    assert json.loads((full / "eval.json").read_text()) == json.loads((part / "eval.json").read_text())
    # same config and seeds: bit-identical predictions (CPU)
    with np.load(full / "predictions.npz") as a, np.load(part / "predictions.npz") as b:
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)


def test_finished_runs_are_protected_and_configs_checked(tmp_path, fmnist_small):
    run = tmp_path / "r"
    cfg = load_config(None, fmnist_small + ["optim.epochs=1", "data.n_max=100", "model.width=16"])
    train_run(cfg, run)
    before = (run / "checkpoints/last.pt").read_bytes()
    with pytest.raises(InputError, match="finished; pass --force"):
        train_run(cfg, run)
    other = load_config(None, fmnist_small + ["optim.epochs=1", "data.n_max=100", "model.width=16", "optim.lr=0.3"])
    with pytest.raises(InputError, match="differs in optim.lr"):
        train_run(other, run, resume=True)
    assert (run / "checkpoints/last.pt").read_bytes() == before  # nothing overwritten
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a dsink run directory"):
        train_run(cfg, tmp_path / "x")
    assert (tmp_path / "x" / "notes.txt").read_text() == "mine"


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(tmp_path, fmnist_small):
    from dsink.errors import TrainingError

    run = tmp_path / "nan"
    cfg = load_config(None, fmnist_small + ["optim.epochs=3", "data.n_max=100", "optim.lr=1e30"])
    with pytest.raises(TrainingError, match="non-finite"):
        train_run(cfg, run)
    assert not (run / "eval.json").exists()


def test_progress_into_a_pipe_is_one_plain_line_per_epoch(tmp_path):
    """stderr into a log file or a pipe: no progress-bar redraws ('\\r'), one greppable line per epoch."""
    import os
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, X=rng.normal(size=(200, 5)).astype(np.float32), y=rng.integers(0, 3, 200),
             X_test=rng.normal(size=(30, 5)).astype(np.float32), y_test=rng.integers(0, 3, 30))
    sets = ["model.name=mlp", "optim.epochs=4", "optim.batch_size=16", "data.imbalance_ratio=1", "data.noise_rate=0.2"]
    cmd = [sys.executable, "-m", "dsink", "train", "--dataset", "npz", "--root", str(data),
           *[a for s in sets for a in ("--set", s)], "--out", str(tmp_path / "run")]
    env = dict(os.environ, OMP_NUM_THREADS="1", DSINK_CACHE=str(tmp_path / "cache"))
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "\r" not in p.stderr and "\r" not in p.stdout
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert [line.split(": ")[1] for line in lines] == [f"epoch {e}/4" for e in range(1, 5)], p.stderr
    assert all(line.startswith("run: epoch") and "loss " in line and "val_acc " in line for line in lines)
    quiet = subprocess.run(cmd[:-2] + ["--out", str(tmp_path / "q"), "-q"], env=env, capture_output=True, text=True,
                           timeout=120)
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_epoch_scalars_are_sample_weighted_means_even_when_a_method_changes_them(tmp_path, fmnist_small, monkeypatch):
    """The engine sums a step's scalars as one vector; a method that logs other scalars in some steps still gets
    each one's mean over the samples of the steps that logged it, divided by the epoch's samples as before."""
    from dsink.methods.ce import CrossEntropy

    sizes = []
    step = CrossEntropy.training_step

    def varying(self, models, x, y, idx, epoch):
        out = step(self, models, x, y, idx, epoch)
        sizes.append(len(idx))
        out["one"] = torch.tensor(1.0)
        if len(sizes) % 2 == 0:  # every second step logs one more scalar
            out["two"] = torch.tensor(2.0)
        return out

    monkeypatch.setattr(CrossEntropy, "training_step", varying)
    train_run(load_config(None, fmnist_small + ["optim.epochs=1", "optim.batch_size=50"]), tmp_path / "r")
    row = _rows(tmp_path / "r")[0]
    assert len(sizes) > 3 and row["one"] == 1.0
    assert row["two"] == pytest.approx(2.0 * sum(sizes[1::2]) / sum(sizes), rel=1e-6)
