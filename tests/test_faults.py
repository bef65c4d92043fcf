"""Faults, one test (or more) per class: concurrent writers, operating-system errors, partial auxiliaries,
checks before anything is written, and surprises (resume of nothing, hints, file modes). Every case ends
with exit code 2 and a message (or waits), never a traceback, and touches no finished result."""

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dsink.cli import main

from .test_bad_inputs import MLP, _cli, _npz


def _base(data):
    return ["--dataset", "npz", "--root", str(data), *MLP]


def _files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.fixture
def data(tmp_path):
    return _npz(tmp_path / "d.npz", n=200, y_true=np.random.default_rng(0).integers(0, 3, 200))


def _status(run: Path) -> str:
    return json.loads((run / "run.json").read_text())["status"]


# --------------------------------------------------------------------------- 1. two processes on one run
def _hold_lock(run: Path, pid: int = 4242) -> int:
    run.mkdir(parents=True, exist_ok=True)
    fd = os.open(run / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, json.dumps({"pid": pid, "host": "elsewhere", "command": "dsink train", "since": "then"}).encode())
    return fd


def test_a_run_held_by_another_process_is_refused_and_a_dead_holder_is_stale(tmp_path, data, capsys):
    run = tmp_path / "run"
    fd = _hold_lock(run)
    for extra in ([], ["--resume"], ["--force"]):
        code, err = _cli(capsys, "train", *_base(data), "--out", str(run), *extra)
        if extra == ["--resume"]:  # nothing to resume yet: refused before the lock is even tried
            assert code == 2 and "not a dsink run directory" in err
            continue
        assert code == 2 and "in use by process 4242 on elsewhere" in err, err
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing written
    os.close(fd)  # the holder dies: the kernel drops its lock, its details stay behind
    assert "4242" in (run / ".lock").read_text()
    assert main(["train", *_base(data), "--out", str(run)]) == 0
    assert _status(run) == "finished" and (run / ".lock").read_text() == ""  # released, emptied
    # a finished run is not rewritten by a second process that finds it locked
    before = _files(run)
    fd = _hold_lock(run)
    code, err = _cli(capsys, "eval", str(run))
    assert code == 2 and "in use by" in err and "--out" not in err and "wait until it ends" in err  # eval has no --out
    os.close(fd)
    assert {k: v for k, v in _files(run).items() if k != ".lock"} == {k: v for k, v in before.items() if k != ".lock"}


def test_a_second_train_of_a_running_run_exits_2_and_rows_are_not_duplicated(tmp_path, data, capsys):
    run = tmp_path / "run"
    sets = [a for o in ("model.name=mlp", "optim.batch_size=32", "data.imbalance_ratio=1", "data.noise_rate=0.2",
                        "optim.epochs=400") for a in ("--set", o)]
    cmd = [sys.executable, "-m", "dsink", "train", "--dataset", "npz", "--root", str(data), *sets, "--out", str(run), "-q"]
    p = subprocess.Popen(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        deadline = time.time() + 120
        while not (run / "metrics.jsonl").exists() and time.time() < deadline and p.poll() is None:
            time.sleep(0.1)
        assert p.poll() is None, p.stderr.read()
        code, err = _cli(capsys, "train", "--dataset", "npz", "--root", str(data), *sets, "--out", str(run), "--resume", "-q")
        assert code == 2 and f"in use by process {p.pid}" in err, err
        code, err = _cli(capsys, "train", "--dataset", "npz", "--root", str(data), *sets, "--out", str(run), "--force", "-q")
        assert code == 2 and f"in use by process {p.pid}" in err, err
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=120)
    assert p.returncode == 143 and "terminated; resume with `dsink train --resume --out" in err, (p.returncode, err[-3000:])
    assert _status(run) == "interrupted"
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, len(epochs) + 1))  # one writer: every epoch once, in order


def test_a_writer_waits_for_the_holder_when_asked(tmp_path):
    from dsink.runs import run_lock

    run = tmp_path / "run"
    fd = _hold_lock(run, pid=777)
    told = []
    threading.Timer(0.5, os.close, args=(fd,)).start()
    t0 = time.time()
    with run_lock(run, wait=True, poll_s=0.05, on_wait=told.append):
        waited = time.time() - t0
        assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()
    assert waited >= 0.4 and len(told) == 1 and "process 777" in told[0]


def test_two_pipelines_sharing_a_cache_wait_for_each_other_and_agree(tmp_path, data):
    over = ["data.dataset=npz", f"data.root={data}", "data.imbalance_ratio=1", "data.noise_rate=0.2",
            "optim.epochs=3", "optim.batch_size=32", f"pipeline.cache_dir={tmp_path / 'cache'}"]
    sets = [a for o in over for a in ("--set", o)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-m", "dsink", "run", *sets, "--out", str(tmp_path / f"p{i}"), "-q"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0 and "Traceback" not in err, err[-2000:]
    tables = [(tmp_path / f"p{i}" / "results.md").read_text() for i in range(2)]
    assert tables[0] == tables[1]
    runs = [d for d in (tmp_path / "cache").iterdir() if (d / "metrics.jsonl").exists()]
    assert len(runs) == 5  # ce, la, gce, kd, dsink: each trained once
    for d in runs:
        assert len((d / "metrics.jsonl").read_text().splitlines()) == 3 and _status(d) == "finished"


# --------------------------------------------------------------------------- 2. operating-system errors
def test_unwritable_out_paths_exit_2_naming_the_path(tmp_path, data, capsys):
    code, err = _cli(capsys, "train", *_base(data), "--out", "/proc/dsink-no-such/run")
    assert code == 2 and "/proc/dsink-no-such" in err
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    for out in (blocker, blocker / "run"):
        code, err = _cli(capsys, "train", *_base(data), "--out", str(out))
        assert code == 2 and str(blocker) in err and ("folder" in err or "exists" in err), err
    code, err = _cli(capsys, "run", "--set", "data.dataset=npz", "--set", f"data.root={data}",
                     "--out", str(blocker / "p"), "-q")
    assert code == 2 and str(blocker) in err
    assert blocker.read_text() == "keep me"


def test_a_full_disk_mid_run_exits_2_and_marks_the_run_crashed(tmp_path, data, capsys, monkeypatch):
    import dsink.runs.rundir as engine  # where checkpoints are written

    real = engine.save_checkpoint

    def full(obj, path):
        if obj.get("epoch", 0) >= 1 and Path(path).name == "last.pt" and (Path(path).parent / "last.pt").exists():
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(obj, path)

    monkeypatch.setattr(engine, "save_checkpoint", full)
    run = tmp_path / "run"
    code, err = _cli(capsys, "train", *_base(data), "--set", "optim.epochs=3", "--out", str(run))
    assert code == 2 and "No space left on device" in err and str(run) in err and "free disk space" in err
    st = json.loads((run / "run.json").read_text())
    assert st["status"] == "crashed" and "No space left" in st["error"]
    monkeypatch.setattr(engine, "save_checkpoint", real)
    assert main(["train", *_base(data), "--set", "optim.epochs=3", "--out", str(run), "--resume"]) == 0
    assert _status(run) == "finished"


def _torch_full(statvfs_full: bool):
    """A torch.save that fails like torch's zip writer on a full disk: some bytes, then "unexpected pos", with the
    disk's OSError behind it (``statvfs_full`` False) or with none, the file system reporting no space left."""
    import torch

    real = torch.save

    def save(obj, f, *a, **k):
        if obj.get("epoch", 0) < 2:
            return real(obj, f, *a, **k)
        f.write(b"PK\x03\x04 half a checkpoint")
        if statvfs_full:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None
    return save


@pytest.mark.parametrize("statvfs_full", [False, True])
def test_torch_save_on_a_full_disk_exits_2_and_keeps_the_last_checkpoint(tmp_path, data, capsys, monkeypatch,
                                                                         statvfs_full):
    import os as _os

    import torch

    import dsink.fileio as fileio
    import dsink.runs.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint.torch, "save", _torch_full(statvfs_full))
    if statvfs_full:
        full = _os.statvfs_result((4096, 4096, 100, 0, 0, 100, 0, 0, 0, 255))
        monkeypatch.setattr(fileio.os, "statvfs", lambda p: full)
    run = tmp_path / "run"
    code, err = _cli(capsys, "train", *_base(data), "--set", "optim.epochs=3", "--out", str(run))
    last = run / "checkpoints" / "last.pt"
    assert code == 2 and "No space left on device" in err and "the disk is full" in err, err
    # the message names the checkpoint being written when the disk filled (best.pt goes first when the epoch improved)
    named = [n for n in ("last.pt", "best.pt") if str(run / "checkpoints" / n) in err]
    assert len(named) == 1 and f"dsink train --resume --out {run}" in err, err
    assert _status(run) == "crashed"
    assert torch.load(last, weights_only=True)["epoch"] == 1  # the previous checkpoint is whole
    assert not list((run / "checkpoints").glob(".*.tmp"))
    monkeypatch.undo()
    assert main(["train", *_base(data), "--set", "optim.epochs=3", "--out", str(run), "--resume"]) == 0
    assert _status(run) == "finished"


def test_a_full_label_cache_exits_2_naming_the_cache_file(tmp_path, data, capsys, monkeypatch):
    import dsink.data.builder as builder

    def full(f, **arrays):
        raise OSError(errno.ENOSPC, "No space left on device")  # a failed write names no file

    monkeypatch.setenv("DSINK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(builder.np, "savez", full)
    code, err = _cli(capsys, "train", *_base(data), "--out", str(tmp_path / "run"))
    assert code == 2 and "No space left on device" in err and str(tmp_path / "cache" / "labels") in err, err
    assert "DSINK_CACHE" in err and not list((tmp_path / "cache" / "labels").iterdir())


def test_read_only_runs_exit_2_for_eval_audit_and_plot(tmp_path, data, capsys, monkeypatch):
    import dsink.fileio as fileio

    run = tmp_path / "run"
    assert main(["train", *_base(data), "--out", str(run)]) == 0
    before = _files(run)
    real_mkstemp = fileio.tempfile.mkstemp

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(k.get("dir", run)))

    monkeypatch.setattr(fileio.tempfile, "mkstemp", read_only)
    real_mkdir = Path.mkdir

    def mkdir(self, *a, **k):
        if str(self).startswith(str(run)):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    for cmd in (["eval", str(run)], ["audit", str(run)], ["plot", str(run), "--no-embedding"]):
        code, err = _cli(capsys, *cmd)
        assert code == 2 and "Read-only file system" in err and str(run) in err and "read-only" in err, (cmd, err)
        # every hint names an option the command has: eval has no --out
        assert ("--out" in err) == (cmd[0] != "eval") and ("copy the run" in err) == (cmd[0] == "eval"), (cmd, err)
    monkeypatch.setattr(fileio.tempfile, "mkstemp", real_mkstemp)
    assert _files(run) == before


# --------------------------------------------------------------------------- 3. corrupt inputs of a run
def test_truncated_auxiliary_predictions_exit_2_naming_the_file(tmp_path, data, capsys):
    for m in ("la", "gce"):
        assert main(["train", "--method", m, *_base(data), "--out", str(tmp_path / m)]) == 0
    preds = tmp_path / "la" / "predictions.npz"
    preds.write_bytes(preds.read_bytes()[: len(preds.read_bytes()) // 2])
    code, err = _cli(capsys, "distill", "--imbalance-run", str(tmp_path / "la"), "--noise-run", str(tmp_path / "gce"),
                     "--out", str(tmp_path / "d"), "-q")
    assert code == 2 and str(preds) in err and "corrupt or truncated" in err and "dsink eval" in err
    assert not (tmp_path / "d").exists()
    with open(preds, "wb") as f:  # a plain .npy array where the archive should be
        np.save(f, np.zeros((3, 2)))
    code, err = _cli(capsys, "distill", "--imbalance-run", str(tmp_path / "la"), "--noise-run", str(tmp_path / "gce"),
                     "--out", str(tmp_path / "d"), "-q")
    assert code == 2 and "not an .npz archive" in err and "dsink eval" in err
    (tmp_path / "gce" / "eval.json").write_text('{"last": ')
    code, err = _cli(capsys, "average", "--imbalance-run", str(tmp_path / "la"), "--noise-run", str(tmp_path / "gce"),
                     "--out", str(tmp_path / "avg"))
    assert code == 2 and "eval.json" in err and "corrupt or truncated" in err


# --------------------------------------------------------------------------- 4. partial auxiliaries
def test_unfinished_auxiliaries_are_refused_unless_allowed(tmp_path, data, capsys, caplog):
    from dsink.config import load_config
    from dsink.train import train_run

    over = ["data.dataset=npz", f"data.root={data}", "model.name=mlp", "optim.batch_size=32", "data.imbalance_ratio=1",
            "data.noise_rate=0.2"]
    train_run(load_config(None, over + ["method.name=la", "optim.epochs=3"]), tmp_path / "la", stop_after=1)
    assert main(["train", "--method", "gce", *_base(data), "--out", str(tmp_path / "gce")]) == 0
    code, err = _cli(capsys, "eval", str(tmp_path / "la"))  # inspecting a partial run works, and says so
    assert code == 0 and "stopped after epoch 1 of 3" in caplog.text
    args = ["distill", "--imbalance-run", str(tmp_path / "la"), "--noise-run", str(tmp_path / "gce"), "-q"]
    code, err = _cli(capsys, *args, "--out", str(tmp_path / "d"))
    assert code == 2 and "imbalance run" in err and "is stopped after epoch 1, not finished" in err
    assert "--allow-unfinished" in err and not (tmp_path / "d").exists()
    code, err = _cli(capsys, "average", "--imbalance-run", str(tmp_path / "la"), "--noise-run", str(tmp_path / "gce"),
                     "--out", str(tmp_path / "avg"))
    assert code == 2 and "not finished" in err and not (tmp_path / "avg").exists()
    caplog.clear()
    assert main([*args, "--out", str(tmp_path / "d"), "--allow-unfinished"]) == 0
    assert "not finished; using it as it is" in caplog.text


# --------------------------------------------------------------------------- 5. checks before writing
@pytest.mark.parametrize("bad,needle", [
    (["--set", "optim.epochs=0"], "optim.epochs must be an integer >= 1"),
    (["--set", "optim.batch_size=0"], "optim.batch_size must be an integer >= 1"),
    (["--set", "optim.lr=-0.1"], "optim.lr must be a number > 0"),
    (["--method", "dsink"], "D-SINK needs method.params.imbalance_run"),
    (["--set", "method.params.nope=1"], "nope"),
])
def test_bad_settings_write_nothing_and_the_corrected_command_runs(tmp_path, data, capsys, bad, needle):
    run = tmp_path / "run"
    code, err = _cli(capsys, "train", *_base(data), *bad, "--out", str(run))
    assert code == 2 and needle in err, err
    assert not run.exists()
    assert main(["train", *_base(data), "--out", str(run)]) == 0


def test_mismatched_auxiliary_data_names_the_run_that_differs(tmp_path, data, capsys):
    for m, seed in (("la", 0), ("gce", 0), ("la", 7), ("gce", 7)):
        assert main(["train", "--method", m, *_base(data), "--data-seed", str(seed), "--out", str(tmp_path / f"{m}{seed}")]) == 0

    def distill(la, gce, *extra):
        return _cli(capsys, "distill", "--imbalance-run", str(tmp_path / la), "--noise-run", str(tmp_path / gce),
                    "--out", str(tmp_path / "d"), "-q", *extra)

    code, err = distill("la0", "gce7")
    assert code == 2 and f"imbalance run '{tmp_path / 'la0'}' was trained on different data" in err
    code, err = distill("la0", "gce7", "--set", "data.data_seed=0")
    assert code == 2 and f"noise run '{tmp_path / 'gce7'}' was trained on different data" in err
    code, err = distill("la0", "gce0", "--set", "data.data_seed=7")
    assert code == 2 and "differs from both auxiliaries" in err
    assert not (tmp_path / "d").exists()


# --------------------------------------------------------------------------- 7. surprises
def test_resume_of_a_missing_run_is_refused(tmp_path, data, capsys):
    code, err = _cli(capsys, "train", *_base(data), "--resume", "--out", str(tmp_path / "typo"))
    assert code == 2 and "does not exist" in err and "drop --resume" in err
    assert not (tmp_path / "typo").exists()


def test_the_interrupt_hint_names_the_command_that_was_interrupted(tmp_path, capsys, monkeypatch):
    import dsink.train as train

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "train_run", interrupted)
    monkeypatch.setattr(train, "distill_config", lambda *a, **k: __import__("dsink").load_config(None, []))
    code, err = _cli(capsys, "distill", "--imbalance-run", "A", "--noise-run", "B", "--out", str(tmp_path / "d"))
    assert code == 130 and "dsink distill --imbalance-run A --noise-run B --resume --out" in err
    code, err = _cli(capsys, "train", "--out", str(tmp_path / "t"))
    assert code == 130 and f"dsink train --resume --out {tmp_path / 't'}" in err


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_run_files_follow_the_umask(tmp_path, data, mask, mode):
    old = os.umask(mask)
    try:
        assert main(["train", *_base(data), "--out", str(tmp_path / "run")]) == 0
    finally:
        os.umask(old)
    for name in ("config.yaml", "run.json", "metrics.jsonl", "eval.json", "predictions.npz", "checkpoints/last.pt"):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == mode, name


def test_write_errors_name_the_file_being_written(tmp_path):
    from dsink.fileio import atomic_write

    def disk_full(f):
        raise OSError(errno.ENOSPC, "No space left on device")  # what a failed write() raises: no file name

    def torch_full(f):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file data/0")

    for write, code in ((disk_full, errno.ENOSPC), (torch_full, errno.EIO)):
        with pytest.raises(OSError) as e:
            atomic_write(tmp_path / "x.bin", write)
        assert e.value.errno == code and e.value.filename == str(tmp_path / "x.bin")
    assert list(tmp_path.iterdir()) == []  # no temporary left behind


def test_an_interrupt_during_an_atomic_write_stays_an_interrupt_and_keeps_the_old_file(tmp_path):
    """A writer whose clean-up fails while a SIGTERM (raised as KeyboardInterrupt) unwinds through it, as
    torch.save's zip writer does, must not turn the interruption into a traceback."""
    from dsink.fileio import atomic_write

    target = tmp_path / "last.pt"
    target.write_bytes(b"old")

    def write(f):
        f.write(b"new, half written")
        try:
            raise KeyboardInterrupt
        finally:
            raise RuntimeError("unexpected pos 272128 vs 272080")  # the writer's own failure on the way out

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, write)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_run_left_running_by_a_dead_process_reads_as_stopped_and_resume_marks_it(tmp_path, data, capsys, caplog):
    from dsink.config import load_config
    from dsink.train import train_run

    over = ["data.dataset=npz", f"data.root={data}", "model.name=mlp", "optim.batch_size=32", "data.imbalance_ratio=1",
            "data.noise_rate=0.2", "optim.epochs=3"]
    run = tmp_path / "run"
    train_run(load_config(None, over), run, stop_after=1)
    fd = _hold_lock(run, pid=4242)  # what a SIGKILLed trainer leaves: its details in the lock file, no lock
    os.close(fd)
    assert _status(run) == "running"
    code, err = _cli(capsys, "average", "--imbalance-run", str(run), "--noise-run", str(run), "--out",
                     str(tmp_path / "avg"))
    assert code == 2 and "is stopped after epoch 1, not finished (marked running, but process 4242 on elsewhere" in err
    with caplog.at_level("WARNING"):
        assert main(["train", "--resume", "--out", str(run), "-q"]) == 0
    assert "process 4242 on elsewhere" in caplog.text and "marked crashed" in caplog.text
    assert _status(run) == "finished"
