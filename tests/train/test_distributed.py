"""torchrun with 2 gloo processes on the CPU: same surrogate labels as one process, one set of files."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from dsink.cli import main
from dsink.runs import load_checkpoint

DATA = ["data.n_max=120", "data.imbalance_ratio=10", "data.noise_rate=0.3", "optim.batch_size=64",
        "optim.lr=0.05", "model.width=8"]


def _sets(extra=()):
    return [a for o in DATA + list(extra) for a in ("--set", o)]


def _torchrun(args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "dsink", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_two_processes_match_one(tmp_path, capsys):
    for m in ("la", "gce"):
        assert main(["train", "--method", m, *_sets(["optim.epochs=1"]), "--out", str(tmp_path / m), "-q"]) == 0
    distill = ["distill", "--imbalance-run", str(tmp_path / "la"), "--noise-run", str(tmp_path / "gce"),
               "--set", "optim.epochs=1", "-q"]
    assert main([*distill, "--out", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    proc = _torchrun([*distill, "--out", str(tmp_path / "two")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run directory:") == 1  # only rank 0 reports
    one, two = (load_checkpoint(tmp_path / d / "checkpoints" / "last.pt") for d in ("one", "two"))
    # the Sinkhorn step over the two shards gives the single-process surrogate labels (epoch 1 refreshes
    # Q with the uniform target, so both equal the solver's Q from the auxiliaries alone)
    from dsink import surrogate_labels

    with np.load(tmp_path / "gce" / "predictions.npz") as a, np.load(tmp_path / "la" / "predictions.npz") as b:
        q0 = torch.as_tensor(np.asarray(surrogate_labels(a["train_probs"], b["train_probs"], class_totals="noise_argmax",
                                                       cost="average+target")))  # D-SINK's defaults
    assert one["method"]["Q"].shape == two["method"]["Q"].shape == q0.shape
    assert torch.allclose(one["method"]["Q"], q0.float(), atol=1e-5)
    assert torch.allclose(two["method"]["Q"], q0.float(), atol=1e-5)
    # f's training-pass probabilities (target_probs=train) are merged across the processes after each epoch:
    # every row was seen by one of them (at most one left over by the even split)
    untouched = (two["method"]["train_pass"] == 0.1).all(1)
    assert int(untouched.sum()) <= 1 and torch.allclose(two["method"]["train_pass"].sum(1), torch.ones(len(q0)))
    # so are the latest training-step predictions the prediction-change share compares against
    assert int((two["last_pred"] < 0).sum()) <= 1 and int(two["last_pred"].max()) < q0.shape[1]
    rows_one = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    rows_two = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows_two] == [1]  # written once, not once per process
    assert rows_two[0]["q_disagree"] == rows_one[0]["q_disagree"]
    status = json.loads((tmp_path / "two" / "run.json").read_text())
    assert status["status"] == "finished" and status["processes"] == 2
    ev1, ev2 = (json.loads((tmp_path / d / "eval.json").read_text()) for d in ("one", "two"))
    assert abs(ev1["last"]["top1"] - ev2["last"]["top1"]) < 0.2  # same accuracy within the noise of one tiny epoch


def test_sharded_sinkhorn_step_equals_one_process(tmp_path):
    """D-SINK's refresh under 2 processes: the gathered Q equals the single-process Q to solver precision."""
    script = tmp_path / "q.py"
    script.write_text('''
import sys, torch, numpy as np
from dsink import distributed
info = distributed.init_from_env("cpu")
try:
  g = torch.Generator().manual_seed(0)
  n, c = 301, 7
  pn = torch.softmax(torch.randn(n, c, generator=g, dtype=torch.float64) * 2, 1)
  pl = torch.softmax(torch.randn(n, c, generator=g, dtype=torch.float64) * 2, 1)
  pf = torch.softmax(torch.randn(n, c, generator=g, dtype=torch.float64), 1)
  from dsink import surrogate_labels
  lo, hi = distributed.row_block(n, info)
  q = surrogate_labels(pn[lo:hi], pl[lo:hi], pf[lo:hi], class_totals="argmax", distributed=info.active)
  q = distributed.all_gather_rows(torch.as_tensor(q), n)
  if info.is_main:
      np.save(sys.argv[1], q.numpy())
finally:
  distributed.shutdown()  # every entry point that joins a process group leaves it, or a worker may abort at exit
''')
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, str(script), str(tmp_path / "one.npy")], check=True, env=env, timeout=300)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        str(script), str(tmp_path / "two.npy")], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    one, two = np.load(tmp_path / "one.npy"), np.load(tmp_path / "two.npy")
    assert one.shape == two.shape == (301, 7)
    assert np.allclose(one, two, atol=1e-9)
    assert np.allclose(two.sum(1), 1)


@pytest.mark.slow
def test_two_process_training_reaches_the_same_accuracy(tmp_path, capsys):
    """CE and ELR (per-sample state merged across processes) with 1 and 2 processes: accuracy within noise."""
    for method in ("ce", "elr"):
        args = ["train", "--method", method, "--set", "data.n_max=600", "--set", "data.imbalance_ratio=10",
                "--set", "data.noise_rate=0.3", "--set", "optim.epochs=6", "--set", "optim.lr=0.05", "-q"]
        assert main([*args, "--out", str(tmp_path / f"{method}1")]) == 0
        capsys.readouterr()
        proc = _torchrun([*args, "--out", str(tmp_path / f"{method}2")], tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        a, b = (json.loads((tmp_path / f"{method}{k}" / "eval.json").read_text())["last"]["top1"] for k in (1, 2))
        assert a > 0.3 and b > 0.3 and abs(a - b) < 0.06, (method, a, b)  # chance is 0.1


@pytest.mark.slow  # three torchrun launches: about a minute
@pytest.mark.parametrize("method", ["rolt", "tabasco", "sfa"])
def test_dedicated_methods_select_the_same_samples_under_two_processes(tmp_path, capsys, method):
    """RoLT, TABASCO and SFA fit their selection on a feature pass over the whole training set: under torchrun
    every process must reach the single-process selection (here from the shared initial weights, warm-up 0), and
    rank 0 alone saves it."""
    args = ["train", "--method", method, *_sets(["optim.epochs=1", "method.params.warmup_epochs=0"]), "-q"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    proc = _torchrun([*args, "--out", str(tmp_path / "two")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = json.loads((tmp_path / "two" / "run.json").read_text())
    assert status["status"] == "finished" and status["processes"] == 2
    with np.load(tmp_path / "one" / "selection.npz") as a, np.load(tmp_path / "two" / "selection.npz") as b:
        n = len(np.load(tmp_path / "one" / "predictions.npz")["train_noisy"])
        assert a["clean"].shape == b["clean"].shape == (n,) and a["label"].shape == b["label"].shape == (n,)
        assert 0 < int((a["clean"] > 0.5).sum()) < n  # a real split into clean and noisy samples
        assert np.allclose(a["clean"], b["clean"], atol=1e-5) and np.array_equal(a["label"], b["label"])


def test_a_killed_rank_leaves_one_dsink_line_and_a_run_that_says_so(tmp_path):
    """SIGKILL of rank 0 under torchrun: the surviving rank's collective fails; it prints one dsink line (what
    happened, the run, how to resume), no traceback of its own; the run left marked running reads as stopped,
    naming the dead process, until the next training marks it crashed."""
    import signal
    import time
    from pathlib import Path

    from dsink.errors import InputError
    from dsink.runs import RunDir

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "dsink",
           "train", *_sets(["optim.epochs=400"]), "--out", str(run), "-q"]
    p = subprocess.Popen(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.time()
        while not ((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text().count("\n") >= 2):
            assert time.time() - t0 < 120 and p.poll() is None, "training did not start"
            time.sleep(0.2)
        ranks = {}
        for child in Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split():
            env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            rank = [e for e in env if e.startswith(b"RANK=")]
            if rank:
                ranks[int(rank[0][5:])] = int(child)
        os.kill(ranks[0], signal.SIGKILL)
        _, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode != 0
    ours = [line for line in err.splitlines() if line.startswith("dsink: ")]
    assert len(ours) == 1 and str(run) in ours[0] and f"--resume --out {run}" in ours[0], err[-3000:]
    assert "another training process" in ours[0] or "launcher stops every process" in ours[0], ours
    assert err.count("Traceback") <= 1, err[-3000:]  # torchrun's own report; none from the surviving dsink
    r = RunDir(run)
    assert r.read_status()["status"] == "running" and r.state() == "stopped"  # SIGKILL: nobody could mark it
    with pytest.raises(InputError, match=rf"is stopped after epoch \d+, not finished \(marked running, but "
                                         rf"process {ranks[0]} on .* is gone\)"):
        r.require_finished("run")
    with r.lock(mark_abandoned=True):  # what the next `dsink train --resume` does first
        st = r.read_status()
    assert st["status"] == "crashed" and f"process {ranks[0]}" in st["error"] and "ended without marking" in st["error"]
