"""The auxiliaries' health check: an f_N blind to a class is named with the class and the fix."""

import json

import numpy as np
import pytest

from dsink.eval.health import (auxiliary_health, balanced_accuracy, blind_classes, class_recall, deploy_row,
                               unfit_roles)


def _run(path, train_probs, val_probs, train_noisy, val_noisy, names=("a", "b", "c")):
    path.mkdir(parents=True)
    np.savez(path / "predictions.npz", train_probs=train_probs.astype(np.float32),
             val_probs=val_probs.astype(np.float32), test_probs=val_probs.astype(np.float32),
             train_noisy=train_noisy, val_noisy=val_noisy, test_labels=val_noisy)
    from dsink.eval.metrics import classification_report

    last = classification_report(val_probs, val_noisy, np.bincount(train_noisy, minlength=len(names)))
    (path / "eval.json").write_text(json.dumps({"class_names": list(names), "last": last,
                                                 "data_fingerprint": "f", "num_classes": len(names)}))
    return path


def _onehot(pred, c=3, p=0.8):
    out = np.full((len(pred), c), (1 - p) / (c - 1))
    out[np.arange(len(pred)), pred] = p
    return out


@pytest.fixture
def blind_pair(tmp_path):
    """30 training samples per class; f_L predicts every label, f_N never predicts class c (index 2)."""
    y = np.repeat(np.arange(3), 30)
    yv = np.repeat(np.arange(3), 10)
    fl = _run(tmp_path / "la", _onehot(y), _onehot(yv), y, yv)
    fn_pred, fnv_pred = np.where(y == 2, 0, y), np.where(yv == 2, 0, yv)
    fn = _run(tmp_path / "gce", _onehot(fn_pred), _onehot(fnv_pred), y, yv)
    ce = _run(tmp_path / "ce", _onehot(y), _onehot(yv), y, yv)
    return fl, fn, ce


def test_blind_f_n_is_named_with_its_class_and_the_fix(blind_pair):
    fl, fn, ce = blind_pair
    h = auxiliary_health(fl, fn, ce_run=ce, labels={"imbalance": "f_L (la)", "noise": "f_N (gce)"},
                         selected_imbalance=False)
    assert not h["ok"]
    kinds = {(w["role"], w["kind"]): w for w in h["warnings"]}
    blind = kinds[("noise", "blind_class")]
    assert blind["classes"] == [2] and blind["method"] == "f_N (gce)"
    assert "f_N (gce) hardly predicts class(es) c" in blind["message"]
    assert "pipeline.noise.name=elr" in blind["message"] and "pipeline.target.trust=collapse" in blind["message"]
    assert "pipeline.target.trust_margin=0" in blind["message"]
    below = kinds[("noise", "below_ce")]  # 2 of 3 classes recalled: balanced accuracy 0.667 against CE's 1.0
    assert "0.667 vs 1.000" in below["message"]
    assert ("noise", "zero_recall") not in kinds  # the blind class is reported once, as blind
    assert all(w["role"] == "noise" for w in h["warnings"])  # f_L is fit: nothing said about it
    assert h["scores"]["imbalance"] == pytest.approx(1.0) and h["scores"]["noise"] == pytest.approx(2 / 3)


def test_healthy_pair_gives_no_warning(tmp_path):
    y = np.repeat(np.arange(3), 30)
    yv = np.repeat(np.arange(3), 10)
    fl = _run(tmp_path / "la", _onehot(y), _onehot(yv), y, yv)
    fn = _run(tmp_path / "gce", _onehot(y, p=0.6), _onehot(yv, p=0.6), y, yv)
    h = auxiliary_health(fl, fn, selected_imbalance=False)
    assert h["ok"] and h["warnings"] == []


def test_zero_recall_on_validation_only(tmp_path):
    """An f_N that predicts the class on the training set but never on the noisy validation split."""
    y = np.repeat(np.arange(3), 30)
    yv = np.repeat(np.arange(3), 10)
    fl = _run(tmp_path / "la", _onehot(y), _onehot(yv), y, yv)
    fn = _run(tmp_path / "gce", _onehot(y), _onehot(np.where(yv == 1, 0, yv)), y, yv)
    w = auxiliary_health(fl, fn, selected_imbalance=False)["warnings"]
    assert [(x["kind"], x["classes"]) for x in w] == [("zero_recall", [1])]
    assert "b (0.00 vs 1.00)" in w[0]["message"]


def test_primitives_and_deploy_row(blind_pair):
    fl, fn, ce = blind_pair
    probs = _onehot(np.array([0, 0, 1, 2]))
    labels = np.array([0, 1, 1, 2])
    assert np.allclose(class_recall(probs, labels, 3), [1.0, 0.5, 1.0])
    assert balanced_accuracy(probs, labels) == pytest.approx(2.5 / 3)
    y = np.repeat(np.arange(3), 30)
    assert blind_classes(_onehot(np.where(y == 2, 0, y)), _onehot(y), y) == [2]
    rows = [{"method": "ce", "role": "baseline"}, {"method": "f_L (la)", "role": "imbalance"},
            {"method": "f_N (gce)", "role": "noise"}, {"method": "D-SINK", "role": "target"}]
    assert deploy_row(rows, {"warnings": []})["method"] == "D-SINK"
    h = auxiliary_health(fl, fn, ce_run=ce, selected_imbalance=False)
    dep = deploy_row(rows, h)  # f_N unfit (below CE; blind and 0.33 below f_L): the fit f_L, and the rule says why
    assert dep["method"] == "f_L (la)" and "flagged f_N (gce)" in dep["rule"]
    # a blind class alone, with f_N level with f_L on the noisy validation split, is a warning, not a reason to
    # deploy an auxiliary (a competent f_N can miss one confusable class; D-SINK guards it)
    blind_only = {"warnings": [w for w in h["warnings"] if w["kind"] == "blind_class"],
                  "scores": {"imbalance": 0.70, "noise": 0.69}}
    assert unfit_roles(blind_only) == [] and deploy_row(rows, blind_only)["method"] == "D-SINK"
    blind_only["scores"]["noise"] = 0.60  # ... unless it also scores clearly lower
    assert unfit_roles(blind_only) == ["noise"] and deploy_row(rows, blind_only)["method"] == "f_L (la)"
    both = {"warnings": [{"role": "noise", "kind": "below_ce"}, {"role": "imbalance", "kind": "below_ce"}]}
    assert deploy_row(rows, both)["method"] == "ce"
    assert deploy_row(rows[:3], {"warnings": []}) is None  # no target row


def test_a_collapsed_target_is_flagged_and_the_better_auxiliary_deployed(blind_pair, tmp_path):
    """A distilled target that predicts one class where its auxiliaries see three (a two-epoch run on a tiny folder)
    is named, and the row to deploy becomes the auxiliary the noisy validation split scores higher."""
    from dsink.eval.health import target_health

    fl, fn, ce = blind_pair
    y = np.repeat(np.arange(3), 30)
    yv = np.repeat(np.arange(3), 10)
    collapsed = _run(tmp_path / "dsink", _onehot(np.zeros(90, int)), _onehot(np.zeros(30, int)), y, yv)
    w = target_health(collapsed, fl, fl, label="D-SINK")
    assert [x["classes"] for x in w] == [[1, 2]] and w[0]["role"] == "target"
    assert "D-SINK hardly predicts class(es) b, c" in w[0]["message"]
    assert target_health(fl, fl, fl) == []  # a target that predicts what its auxiliaries predict
    rows = [{"method": "f_L (la)", "role": "imbalance"}, {"method": "f_N (gce)", "role": "noise"},
            {"method": "D-SINK", "role": "target"}]
    dep = deploy_row(rows, {"warnings": w, "scores": {"imbalance": 0.7, "noise": 0.9}})
    assert dep["method"] == "f_N (gce)" and "flagged D-SINK" in dep["rule"]
