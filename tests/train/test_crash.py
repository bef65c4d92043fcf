"""SIGKILL a training subprocess at arbitrary moments: the run directory stays readable, --resume finishes
it, and the result equals an uninterrupted run's (CPU)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dsink.runs import load_checkpoint

OVER = ["data.n_max=200", "data.imbalance_ratio=10", "data.noise_rate=0.3", "optim.batch_size=32",
        "optim.epochs=4", "optim.lr=0.05", "model.width=8"]


def _cmd(out, resume=False, over=OVER):
    sets = [a for o in over for a in ("--set", o)]
    return [sys.executable, "-m", "dsink", "train", *sets, "--out", str(out), "-q"] + (["--resume"] if resume else [])


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1")


def _check_readable(run: Path) -> int:
    """Every file a killed run leaves is whole; returns the epoch of its last checkpoint (0 if none)."""
    if (run / "config.yaml").exists():
        yaml.safe_load((run / "config.yaml").read_text())
    if (run / "run.json").exists():
        json.loads((run / "run.json").read_text())
    if (run / "metrics.jsonl").exists():
        lines = (run / "metrics.jsonl").read_text().splitlines()
        for line in lines[:-1]:
            json.loads(line)  # only the last line may be torn by a kill
    last = run / "checkpoints" / "last.pt"
    return int(load_checkpoint(last)["epoch"]) if last.exists() else 0


def _kill_after(out, seconds, resume, over=OVER):
    p = subprocess.Popen(_cmd(out, resume, over), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        p.wait(timeout=seconds)
        return p.returncode
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        p.wait()
        return None


def _reference(tmp_path, over=OVER):
    """An uninterrupted run in a subprocess with the same thread count (float sums depend on it)."""
    ref = tmp_path / "ref"
    subprocess.run(_cmd(ref, over=over), env=_env(), check=True, capture_output=True)
    return json.loads((ref / "eval.json").read_text())


def test_killed_after_a_checkpoint_resumes_to_the_same_result(tmp_path):
    run = tmp_path / "run"
    p = subprocess.Popen(_cmd(run), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:  # wait for the first epoch's checkpoint, then kill
        m = run / "metrics.jsonl"
        if m.exists() and m.read_text().count("\n") >= 1 and (run / "checkpoints" / "last.pt").exists():
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert _check_readable(run) >= 1
    r = subprocess.run(_cmd(run), env=_env(), capture_output=True, text=True)  # no --resume: refused, untouched
    assert r.returncode == 2 and "--resume" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(_cmd(run, resume=True), env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((run / "eval.json").read_text()) == _reference(tmp_path)


@pytest.mark.slow
def test_random_kills_never_corrupt_and_resume_matches(tmp_path):
    over = OVER[:4] + ["optim.epochs=12", "optim.lr=0.05", "model.width=8"]  # long enough that kills hit training
    t0 = time.monotonic()
    expected = _reference(tmp_path, over)
    total = time.monotonic() - t0
    per_epoch = [json.loads(line)["time_s"] for line in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    startup = max(total - sum(per_epoch), 0.5)
    epoch_s = sum(per_epoch) / len(per_epoch)
    rng = random.Random(0)
    run = tmp_path / "run"
    kills, done = 0, 0
    for _ in range(4):  # kill each attempt at a random moment of its expected duration, four times
        expected_s = startup + (12 - done) * epoch_s
        # within the first 70 %: "startup" also holds the final evaluation, so a later moment can fall after a
        # short resumed run has ended, and the test would see fewer than two kills
        rc = _kill_after(run, rng.uniform(0.1, 0.7) * expected_s, (run / "config.yaml").exists(), over)
        if rc is not None:
            assert rc == 0
            break
        kills += 1
        done = _check_readable(run)
    else:
        assert subprocess.run(_cmd(run, True, over), env=_env(), capture_output=True).returncode == 0
    assert kills >= 2
    _check_readable(run)
    assert not list(run.rglob("*.tmp"))  # temporaries of killed writes are cleaned on resume
    assert json.loads((run / "eval.json").read_text()) == expected


WRITER = """
import sys, torch
from dsink.runs import save_checkpoint
path = sys.argv[1]
save_checkpoint({"version": 0, "w": torch.zeros(10)}, path)
print("ready", flush=True)
v = 1
while True:  # large checkpoints, written over and over until killed
    save_checkpoint({"version": v, "w": torch.full((20_000_000,), float(v))}, path)
    v += 1
"""


def test_sigkill_during_a_checkpoint_write_leaves_a_whole_checkpoint(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    path = tmp_path / "ck" / "last.pt"
    p = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True, env=_env())
    assert p.stdout.readline().strip() == "ready"
    deadline = time.time() + 120
    while time.time() < deadline and not list(path.parent.glob(".*.tmp")):
        time.sleep(0.002)  # wait until a write is in progress
    tmps = list(path.parent.glob(".*.tmp"))
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert tmps, "no write was caught in progress"
    state = load_checkpoint(path)  # the old or the new checkpoint, whole
    v = state["version"]
    assert v == 0 and state["w"].shape == (10,) or bool((state["w"] == float(v)).all())
    from dsink.fileio import remove_stale_temporaries

    assert remove_stale_temporaries(path.parent) and not list(path.parent.glob(".*.tmp"))
    assert load_checkpoint(path)["version"] == v
