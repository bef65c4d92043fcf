"""A practitioner's photo folder end to end: streaming = memory, every role of `dsink run`, predict, audit,
pretrained backbones, and the user-data cache identity."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from dsink.cli import main
from dsink.config import RunConfig, build_dataclass, config_hash
from dsink.data import build_data
from dsink.train import Trainer
from dsink.train.engine import TIMING_KEYS

from .data.test_images import make_folder

FOLDER = ["--set", "data.dataset=image_folder", "--set", "data.image_size=16", "--set", "data.noise_mode=none",
          "--set", "data.imbalance_ratio=1", "--set", "optim.epochs=1", "--set", "optim.batch_size=8",
          "--set", "model.name=small_cnn", "--set", "model.width=4"]


def _cli(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _cfg(root, tmp_path, **data):
    return build_dataclass(RunConfig, {
        "data": {"dataset": "image_folder", "root": str(root), "image_size": 16, "noise_mode": "none",
                 "imbalance_ratio": 1, "cache_dir": str(tmp_path / "cache"), **data},
        "model": {"name": "small_cnn", "width": 4}, "optim": {"epochs": 2, "batch_size": 8},
        "train": {"device": "cpu", "seed": 3}, "method": {"name": "ce"}})


@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_trains_exactly_like_memory(tmp_path, workers):
    root = make_folder(tmp_path / "photos")
    rows, logits = {}, {}
    for stream in (False, True):
        cfg = _cfg(root, tmp_path, stream=stream, workers=workers)
        data = build_data(cfg.data)
        t = Trainer(cfg, data, tmp_path / f"run-{stream}")
        assert t.backend == ("stream" if stream else "memory")
        rows[stream] = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in t.fit()]
        logits[stream] = t.predict_logits("train")
    assert rows[True] == rows[False]
    assert torch.equal(logits[True], logits[False])


def test_pipeline_on_a_folder_without_test_split(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DSINK_CACHE", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "photos")
    out = tmp_path / "pipe"
    code, stdout, err = _cli(capsys, "run", *FOLDER, "--set", f"data.root={root}", "--set", "data.stream=true",
                             "--set", "pipeline.seeds=[0]", "--set", "pipeline.baselines=[ce,dividemix]",
                             "--out", str(out), "-q")
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    methods = [r["method"] for r in res["rows"]]
    assert methods[:2] == ["ce", "dividemix"] and "D-SINK" in methods and "kd" in methods
    assert res["evaluated_on"] == ["val"] and "no clean test split" in res["notes"][0]
    assert all(r["top1"] is not None and 0 <= r["top1"] <= 1 for r in res["rows"])
    assert "no clean test split" in stdout

    dsink_run = res["rows"][methods.index("D-SINK")]["runs"][0]
    code, stdout, err = _cli(capsys, "audit", dsink_run, "--out", str(tmp_path / "A.csv"))
    assert code == 0, err
    with open(tmp_path / "A.csv") as f:
        audit = list(csv.DictReader(f))
    assert all(r["path"].startswith(str(root)) for r in audit)

    new = tmp_path / "new"
    make_folder(new, counts=(2, 1, 1), seed=5)
    code, stdout, err = _cli(capsys, "predict", dsink_run, "--data", str(new), "--out", str(tmp_path / "P.csv"), "-q")
    assert code == 0, err
    with open(tmp_path / "P.csv") as f:
        pred = list(csv.DictReader(f))
    assert len(pred) == 4 and pred[0]["path"].endswith("cat/000.png")
    for r in pred:
        p = np.array([float(r[f"p_{c}"]) for c in ("cat", "dog", "eel")])
        assert abs(p.sum() - 1) < 1e-4 and r["predicted_name"] == ["cat", "dog", "eel"][int(p.argmax())]
        assert abs(float(r["confidence"]) - p.max()) < 1e-6


def test_pretrained_backbone_on_a_folder(tmp_path, capsys, monkeypatch):
    torchvision = pytest.importorskip("torchvision")
    monkeypatch.setenv("DSINK_CACHE", str(tmp_path / "cache"))
    root = make_folder(tmp_path / "photos", counts=(10, 10, 10))
    weights = tmp_path / "r18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    args = ["train", "--method", "gce", *FOLDER, "--set", f"data.root={root}", "--set", "model.name=resnet18",
            "--set", "data.image_size=32"]
    code, _, err = _cli(capsys, *args, "--set", f"model.pretrained={tmp_path / 'missing.pt'}", "--out",
                        str(tmp_path / "bad"))
    assert code == 2 and "missing.pt" in err and "not found" in err and not (tmp_path / "bad").exists()
    code, stdout, err = _cli(capsys, *args, "--set", f"model.pretrained={weights}", "--set",
                             "model.freeze_backbone=true", "--out", str(tmp_path / "run"), "-q")
    assert code == 0, err
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["models"]["net"]
    saved = torch.load(weights, weights_only=True)
    assert torch.equal(state["backbone.conv1.weight"], saved["conv1.weight"])  # frozen: unchanged
    assert state["fc.weight"].shape == (3, 512)
    code, stdout, err = _cli(capsys, "audit", str(tmp_path / "run"), "--out", str(tmp_path / "A.csv"))
    assert code == 0 and (tmp_path / "A.csv").is_file(), err


def test_backbone_learns_slower_than_the_head(tmp_path):
    pytest.importorskip("torchvision")
    root = make_folder(tmp_path / "photos", counts=(10, 10, 10))
    cfg = _cfg(root, tmp_path, image_size=32)
    cfg.model.name, cfg.model.backbone_lr_scale = "resnet18", 0.25
    weights = tmp_path / "r18.pt"
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), weights)
    cfg.model.pretrained = str(weights)
    t = Trainer(cfg, build_data(cfg.data), tmp_path / "run")
    scales = sorted(g["lr_scale"] for g in t.optimizer.param_groups)
    assert scales == [0.25, 1.0]
    head = [g for g in t.optimizer.param_groups if g["lr_scale"] == 1.0][0]
    assert {id(p) for p in head["params"]} == {id(p) for p in t.models["net"].fc.parameters()}
    assert t.pipeline.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])  # ImageNet normalisation


def test_two_folders_never_share_a_cache_entry(tmp_path):
    a, b = _cfg(tmp_path / "a", tmp_path), _cfg(tmp_path / "b", tmp_path)
    assert config_hash(a) != config_hash(b)
    fm = build_dataclass(RunConfig, {"data": {"root": "/x"}}), build_dataclass(RunConfig, {"data": {"root": "/y"}})
    assert config_hash(fm[0]) == config_hash(fm[1])  # benchmark data: the path is only where the files are


def test_embed_writes_features_that_dsink_trains_on(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DSINK_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "photos"
    make_folder(root / "train", counts=(12, 12, 6))
    make_folder(root / "test", counts=(3, 3, 3), seed=4)
    feats = tmp_path / "f.npz"
    code, stdout, err = _cli(capsys, "embed", *FOLDER, "--set", f"data.root={root}", "--out", str(feats), "-q")
    assert code == 0, err
    z = dict(np.load(feats))
    assert z["X"].shape == (30, 16) and z["X_test"].shape == (9, 16)  # small_cnn width 4: 16 features
    assert z["is_val"].sum() == 2 and z["class_names"].tolist() == ["cat", "dog", "eel"]
    assert sorted(np.bincount(z["y"]).tolist()) == [6, 12, 12] and z["paths"][0].endswith(".png")
    assert np.isfinite(z["X"]).all() and z["X"].std(0).max() > 0
    code, stdout, err = _cli(capsys, "train", "--set", "data.dataset=npz", "--set", f"data.root={feats}", "--set",
                             "model.name=mlp", "--set", "data.noise_mode=none", "--set", "data.imbalance_ratio=1",
                             "--set", "optim.epochs=1", "--out", str(tmp_path / "run"), "-q")
    assert code == 0, err
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert report["evaluated_on"] == "test" and report["class_names"] == ["cat", "dog", "eel"]
    code, _, err = _cli(capsys, "embed", *FOLDER, "--set", f"data.root={root}", "--out", str(tmp_path / "f.txt"))
    assert code == 2 and "must name an .npz file" in err


@pytest.mark.parametrize("method", ["rolt", "tabasco", "sfa"])
def test_dedicated_methods_train_on_a_streamed_image_folder(tmp_path, capsys, method):
    """The feature-space selections read the training set through the engine's streaming backend too."""
    root = make_folder(tmp_path / "photos", counts=(16, 12, 6))
    out = tmp_path / method
    code, _, err = _cli(capsys, "train", "--method", method, *FOLDER, "--set", f"data.root={root}",
                        "--set", "data.stream=true", "--set", "optim.epochs=2", "--set", "method.params.warmup_epochs=1",
                        "--out", str(out), "-q")
    assert code == 0, err
    with np.load(out / "selection.npz") as z:
        assert z["clean"].shape == z["label"].shape and len(z["clean"]) > 0
        assert ((z["clean"] >= 0) & (z["clean"] <= 1)).all()
    assert json.loads((out / "eval.json").read_text())["method"] == method
