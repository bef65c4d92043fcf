import json
import subprocess
import sys

import pytest

from dsink.cli import main


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dsink", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("args,needle", [
    (["--dataset", "mnist"], "valid datasets: cifar10, cifar100, clothing1m, fashion_mnist"),
    (["--noise-mode", "gaussian"], "valid modes: uniform_incl_true"),
    (["--noise-rate", "1.2"], "noise_rate must be in [0, 1)"),
    (["--noise-rate", "-0.1"], "noise_rate must be in [0, 1)"),
    (["--imbalance-ratio", "0.5"], "imbalance_ratio must be >= 1"),
    (["--dataset", "cifar10", "--root", "/nonexistent"], "set data.root"),
    (["--set", "data.n_max=10", "--imbalance-ratio", "100"], "zero samples"),
    (["/nonexistent/config.yaml"], "config file '/nonexistent/config.yaml' not found"),
    (["--set", "data.bogus=1"], "unknown config key(s) data.bogus"),
])
def test_bad_input_exits_2_with_a_message_and_no_traceback(args, needle, capsys):
    assert main(["data", "describe", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_the_installed_command_exits_2_without_a_traceback():
    r = run_cli("data", "describe", "--dataset", "mnist")  # the real process: exit status and stderr as a user sees them
    assert r.returncode == 2, r.stderr
    assert "valid datasets: cifar10" in r.stderr and "Traceback" not in r.stderr and r.stderr.count("\n") == 1


def test_train_and_eval_errors(tmp_path, capsys):
    from dsink.methods import list_methods

    assert main(["train", "--method", "magic", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'magic'; valid methods: " + ", ".join(list_methods()) in err
    assert not (tmp_path / "r").exists()  # nothing written for a bad config
    assert main(["eval", str(tmp_path)]) == 2
    assert "not a dsink run directory" in capsys.readouterr().err


def test_describe_json_and_list(capsys):
    assert main(["data", "describe", "--imbalance-ratio", "100", "--noise-rate", "0.4", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["num_samples"] == 14886 and abs(d["noise_rate"] - 0.4) < 1e-3
    assert len(d["transition"]) == 10 and sum(d["noisy_counts"]) == 14886
    assert main(["list", "methods"]) == 0
    assert "ce" in capsys.readouterr().out


def test_cli_train_then_eval(tmp_path, fmnist_small, capsys):
    run = tmp_path / "run"
    sets = [a for o in fmnist_small + ["optim.epochs=1", "model.width=16"] for a in ("--set", o)]
    assert main(["train", *sets, "--out", str(run), "-q"]) == 0
    out = capsys.readouterr().out
    assert "top1" in out and "last" in out
    assert main(["eval", str(run), "-q", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep["epochs"] == 1 and 0 <= rep["last"]["top1"] <= 1
