"""A run directory whose files were edited by hand: every command that reads a file refuses it with exit code 2
and a message naming the file, never a traceback, and writes nothing over what is there."""

import json
import shutil

import numpy as np
import pytest
import torch

from dsink.cli import main

from .test_bad_inputs import MLP, _cli, _npz


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished run (3 classes, MLP, 1 epoch) and its data."""
    tmp = tmp_path_factory.mktemp("edited")
    data = _npz(tmp / "d.npz", n=200, y_true=np.random.default_rng(0).integers(0, 3, 200))
    assert main(["train", "--dataset", "npz", "--root", str(data), *MLP, "--out", str(tmp / "base")]) == 0
    return tmp / "base", data


def _checkpoint(path, change):
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


def _predictions(path, change):
    with np.load(path) as z:
        arrays = dict(z)
    change(arrays)
    np.savez(path, **arrays)


def _json(path, **fields):
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def _shrink_weights(state):
    state["models"]["net"] = {k: v[:1] for k, v in state["models"]["net"].items()}


EDITS = {
    ("config.yaml", "bad YAML"): lambda p: p.write_text("data: [\n"),
    ("config.yaml", "wrong type"): lambda p: p.write_text(p.read_text().replace("epochs: 1", "epochs: many")),
    ("config.yaml", "out of range"): lambda p: p.write_text(p.read_text().replace("epochs: 1", "epochs: -3")),
    ("config.yaml", "unknown key"): lambda p: p.write_text(p.read_text() + "colour: red\n"),
    ("config.yaml", "emptied"): lambda p: p.write_text(""),
    ("config.yaml", "binary"): lambda p: p.write_bytes(b"\xff\xfe\x00"),
    ("run.json", "truncated"): lambda p: p.write_text(p.read_text()[:15]),
    ("run.json", "a list"): lambda p: p.write_text("[1]"),
    ("run.json", "status a number"): lambda p: _json(p, status=5),
    ("run.json", "unknown status"): lambda p: _json(p, status="done"),
    ("metrics.jsonl", "garbage"): lambda p: p.write_text("garbage\n" + p.read_text()),
    ("metrics.jsonl", "epoch a string"): lambda p: p.write_text('{"epoch": "one", "loss": 1.0}\n'),
    ("metrics.jsonl", "binary"): lambda p: p.write_bytes(b"\xff\xfe\x00\n"),
    ("eval.json", "truncated"): lambda p: p.write_text(p.read_text()[:40]),
    ("eval.json", "missing keys"): lambda p: p.write_text("{}"),
    ("eval.json", "wrong types"): lambda p: _json(p, last={"top1": "high"}),
    ("predictions.npz", "not an archive"): lambda p: p.write_bytes(b"garbage"),
    ("predictions.npz", "wrong shape"): lambda p: _predictions(p, lambda a: a.update(train_probs=a["train_probs"][:, 0])),
    ("predictions.npz", "rows cut"): lambda p: _predictions(p, lambda a: a.update(test_probs=a["test_probs"][:3])),
    ("predictions.npz", "array missing"): lambda p: _predictions(p, lambda a: a.pop("train_noisy")),
    ("checkpoints/last.pt", "not a checkpoint"): lambda p: p.write_bytes(b"garbage"),
    ("checkpoints/last.pt", "a tensor"): lambda p: torch.save(torch.zeros(3), p),
    ("checkpoints/last.pt", "weights missing"): lambda p: _checkpoint(p, lambda s: s.pop("models")),
    ("checkpoints/last.pt", "wrong shapes"): lambda p: _checkpoint(p, _shrink_weights),
    ("checkpoints/last.pt", "epoch a string"): lambda p: _checkpoint(p, lambda s: s.update(epoch="one")),
    ("checkpoints/last.pt", "optimiser state"): lambda p: _checkpoint(p, lambda s: s.update(optimizer={"x": 1})),
    ("checkpoints/best.pt", "not a checkpoint"): lambda p: p.write_bytes(b"garbage"),
    ("checkpoints/best.pt", "wrong shapes"): lambda p: _checkpoint(p, _shrink_weights),
}

# the commands that read each file (eval rewrites eval.json and predictions.npz, so it is not refused for them)
READERS = {
    "config.yaml": ("eval", "predict", "resume", "audit"),
    "run.json": ("eval", "predict", "resume", "audit"),
    "metrics.jsonl": ("predict", "resume", "plot"),
    "eval.json": ("audit", "plot"),
    "predictions.npz": ("audit",),
    "checkpoints/last.pt": ("eval", "predict", "resume"),
    "checkpoints/best.pt": ("eval", "predict_best"),
    ("checkpoints/last.pt", "optimiser state"): ("resume",),  # only training reads the optimiser's state
}


def _command(name, run, data, tmp_path):
    return {
        "eval": ["eval", str(run), "-q"],
        "predict": ["predict", str(run), "--data", str(data), "--out", str(tmp_path / "p.csv"), "-q"],
        "predict_best": ["predict", str(run), "--data", str(data), "--out", str(tmp_path / "p.csv"),
                         "--checkpoint", "best", "-q"],
        "resume": ["train", "--resume", "--out", str(run), "-q"],
        "audit": ["audit", str(run), "--out", str(tmp_path / "a.csv")],
        "plot": ["plot", str(run), "--no-embedding", "--out", str(tmp_path / "plots")],
    }[name]


def _files(run):
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize("name,edit", list(EDITS), ids=[f"{f}:{e}" for f, e in EDITS])
def test_an_edited_run_file_is_refused_naming_it(trained, tmp_path, capsys, name, edit):
    base, data = trained
    for command in READERS.get((name, edit), READERS[name]):
        run = tmp_path / "run"
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(base, run)
        if name != "run.json" and (command == "resume" or name == "metrics.jsonl"):
            _json(run / "run.json", status="crashed")  # unfinished: resume reads everything, predict the epochs
        EDITS[name, edit](run / name)
        before = _files(run)
        code, err = _cli(capsys, *_command(command, run, data, tmp_path))
        assert code == 2, (command, err)
        assert str(run / name) in err, (command, err)
        after = _files(run)
        if command == "resume" and after["run.json"] != before["run.json"]:  # refused in training: says why
            st = json.loads(after.pop("run.json"))
            assert st["status"] == "crashed" and name in st["error"], st
            before.pop("run.json")
        assert after == before, command  # nothing written over what is there
        assert not (tmp_path / "p.csv").exists() and not (tmp_path / "a.csv").exists()


def test_force_starts_over_a_run_whose_status_file_was_damaged(trained, tmp_path, capsys):
    base, data = trained
    run = tmp_path / "run"
    shutil.copytree(base, run)
    (run / "run.json").write_text("[1]")
    code, err = _cli(capsys, "train", "--resume", "--out", str(run), "-q")
    assert code == 2 and "run.json" in err and "--force" in err
    assert main(["train", "--dataset", "npz", "--root", str(data), *MLP, "--out", str(run), "--force"]) == 0
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
