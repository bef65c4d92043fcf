"""train.tensorboard: every epoch's metrics row goes to TensorBoard live, one run per model under one folder;
TensorBoard stays optional (a clear error when asked for but missing) and the key does not change a run's identity."""

import json
import sys

import pytest

from dsink.cli import main
from dsink.config import load_config, run_name
from dsink.train import tensorboard


class FakeWriter:
    """Records what torch's SummaryWriter would be given."""

    made: list["FakeWriter"] = []

    def __init__(self, log_dir, purge_step=None):
        self.log_dir, self.purge_step, self.scalars, self.flushes, self.closed = log_dir, purge_step, [], 0, False
        FakeWriter.made.append(self)

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        self.flushes += 1

    def close(self):
        self.closed = True


@pytest.fixture
def fake_writer(monkeypatch):
    FakeWriter.made = []
    monkeypatch.setattr(tensorboard, "_summary_writer", lambda: FakeWriter)
    return FakeWriter


def test_each_epoch_row_is_logged_under_the_run_name(tmp_path, fmnist_small, fake_writer):
    logs = tmp_path / "tb"
    args = ["train", *[a for o in fmnist_small for a in ("--set", o)], "--set", f"train.tensorboard={logs}",
            "--out", str(tmp_path / "run"), "-q"]
    assert main(args) == 0
    (w,) = fake_writer.made
    assert w.log_dir == str(logs / "run") and w.purge_step is None and w.closed
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and w.flushes == 2  # flushed every epoch: live
    for row in rows:
        got = {t: v for t, v, s in w.scalars if s == row["epoch"]}
        assert got["train/loss"] == row["loss"] and got["val/bal_acc"] == row["val_bal_acc"]
        assert got["train/acc_noisy"] == row["train_acc_noisy"] and "train/epoch" not in got
        assert len(got) == sum(isinstance(v, (int, float)) for k, v in row.items() if k != "epoch")


def test_a_resumed_run_replaces_its_events_from_the_resumed_epoch(tmp_path, fmnist_small, fake_writer):
    from dsink.train import train_run

    cfg = load_config(None, fmnist_small + [f"train.tensorboard={tmp_path / 'tb'}"])
    assert train_run(cfg, tmp_path / "run", stop_after=1) is None
    train_run(cfg, tmp_path / "run", resume=True)
    first, second = fake_writer.made
    assert first.purge_step is None and {s for _, _, s in first.scalars} == {1}
    assert second.purge_step == 2 and {s for _, _, s in second.scalars} == {2}
    assert first.log_dir == second.log_dir == str(tmp_path / "tb" / "run")


def test_the_tags():
    assert [tensorboard.tag(k) for k in ("val_acc", "test_acc", "train_correction", "loss", "lr")] == \
        ["val/acc", "test/acc", "train/correction", "train/loss", "train/lr"]


def test_resuming_purges_the_later_events(tmp_path, fake_writer):
    logger = tensorboard.epoch_logger(str(tmp_path), "r", first_epoch=3)
    logger.log({"epoch": 3, "loss": 0.5, "note": "x", "flag": True})
    assert fake_writer.made[0].purge_step == 3 and fake_writer.made[0].scalars == [("train/loss", 0.5, 3)]
    assert tensorboard.epoch_logger(None, "r") is None


def test_asked_for_but_not_installed_is_an_input_error(tmp_path, fmnist_small, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if it were missing
    args = ["train", *[a for o in fmnist_small for a in ("--set", o)], "--set", f"train.tensorboard={tmp_path / 'tb'}",
            "--out", str(tmp_path / "run"), "-q"]
    assert main(args) == 2
    assert "TensorBoard is not installed; install it with pip install tensorboard" in capsys.readouterr().err
    assert not (tmp_path / "tb").exists() and not (tmp_path / "run").exists()  # refused before the run is made


def test_the_log_folder_is_not_part_of_a_runs_identity(fmnist_small, fake_writer):
    from dsink.train import resolve_config

    a = resolve_config(load_config(None, fmnist_small))
    b = resolve_config(load_config(None, fmnist_small + ["train.tensorboard=/tmp/tb"]))
    assert b.train.tensorboard == "/tmp/tb" and run_name(a) == run_name(b)
