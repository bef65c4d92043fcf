"""The helpers the D-SINK study's decisions rest on (studies/dsink_study.py): the random samples of unseen
settings, the setting names, the 2-of-3 chance, the decision table and the paired gap table."""

import json
import sys
from math import comb
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies"))
import dsink_study as study  # noqa: E402


def test_random_samples_are_fixed_fresh_and_disjoint():
    again = study.random_settings()
    assert again == study.RANDOM10  # the draw is fixed by its seed
    assert len(study.RANDOM10) == len(study.RANDOM11) == len(study.RANDOM13) == 24
    assert not set(study.RANDOM10) & set(study.RANDOM11)  # the eleventh round's sample excludes the tenth's
    assert not (set(study.RANDOM10) | set(study.RANDOM11)) & set(study.RANDOM13)  # the thirteenth's excludes both
    assert not (set(study.RANDOM10) | set(study.RANDOM11) | set(study.RANDOM13)) & set(study.SETTINGS)  # and every named setting
    earlier = set(study.RANDOM10) | set(study.RANDOM11) | set(study.RANDOM13) | set(study.SETTINGS)
    assert len(study.RANDOM15) == 24 and not set(study.RANDOM15) & earlier  # the fourteenth round's fresh sample
    assert study.GROUPS["random15a"] + study.GROUPS["random15b"] == list(study.RANDOM15)
    assert study.RANDOM15["r138-incl35"] == [400, 401, 402]
    earlier |= set(study.RANDOM15)
    assert len(study.RANDOM16) == 12 and not set(study.RANDOM16) & earlier  # the third session's, fresh again
    assert study.GROUPS["random16"] == list(study.RANDOM16) and study.RANDOM16["r156-sem30"] == [500, 501, 502]
    seeds = [s for v in study.GROUP_SEEDS.values() for s in v]
    assert len(seeds) == len(set(seeds)) == 324  # no two cells share a data seed
    assert study.RANDOM11["r26-sem30"] == [200, 201, 202]
    assert study.GROUPS["random11a"] + study.GROUPS["random11b"] == list(study.RANDOM11)
    assert study.GROUPS["random13a"] + study.GROUPS["random13b"] == list(study.RANDOM13)
    assert study.RANDOM13["r128-incl25"] == [300, 301, 302]
    for name in {**study.RANDOM11, **study.RANDOM13, **study.RANDOM15, **study.RANDOM16}:
        rho, mode, rate = study.setting(name)
        assert 10 <= rho <= 200 and mode in study.MODES.values() and 0.2 <= rate <= 0.45


def test_setting_names_parse_and_bad_names_say_what_is_allowed():
    assert study.setting("r57-pair40") == (57, "pair_random", 0.4)
    assert study.setting("r100-unif40") == (100, "uniform_excl_true", 0.4)
    with pytest.raises(SystemExit, match="r<rho>-<mode><percent>"):
        study.setting("r57-pear40")


def test_two_of_three_is_the_hypergeometric_tail():
    assert study.two_of_three(24, 24) == 1.0 and study.two_of_three(1, 24) == 0.0
    assert study.two_of_three(9, 24) == pytest.approx((comb(9, 2) * 15 + comb(9, 3)) / comb(24, 3))
    assert round(study.two_of_three(9, 24), 2) == 0.31


def _rec(top1, sel, correction=0.9):
    # a record whose curves make the selection rule pick the epoch with the higher balanced validation score
    return {"top1": top1, "correction": correction,
            "curves": {"test_acc": [sel, top1], "val_bal_acc": [0.9, 0.1], "val_acc": [0.9, 0.1]}}


def _results(dsink_last, dsink_sel):
    others = {k: [_rec(0.70, 0.70)] * 3 for k in study.OTHER_ROWS}
    others["kd"] = [_rec(0.80, 0.80), _rec(0.80, 0.80), _rec(0.80, 0.80)]
    return {"default": [_rec(a, b) for a, b in zip(dsink_last, dsink_sel)], **others}


def test_decision_table_counts_the_criterion_at_both_checkpoints():
    results = {"mlp:a": _results([0.81, 0.82, 0.83], [0.81, 0.81, 0.81]),  # ahead of kd at both: pass
               "mlp:b": _results([0.81, 0.82, 0.83], [0.79, 0.79, 0.79])}  # behind at the selected checkpoint
    results["mlp:a"]["new"] = results["mlp:b"]["new"] = [_rec(0.79, 0.79)] * 3  # behind everywhere
    table = study.decision_table(results, "default", "new")
    assert "| mlp:a | 82.00 / 81.00 | 79.00 / 79.00 | kd 80.00 / kd 80.00 | pass / fail |" in table
    assert "| mlp:b | 82.00 / 79.00 |" in table and "fail / fail" in table
    assert "criterion 1 (default) / 0 (new)" in table


def test_gap_table_pairs_by_seed_and_reads_the_ceiling():
    results = {"mlp:a": _results([0.81, 0.82, 0.83], [0.79, 0.79, 0.79])}
    table = study.gap_table(results, "default")
    # last epoch: +1, +2, +3 points over kd's 80 -> +2.00, standard error 1/sqrt(3) = 0.58
    assert "| mlp:a | kd +2.00 ± 0.58 | kd -1.00 ± 0.00 |" in table
    # the ceiling is the best test epoch (the last, 82) against kd's selected 80
    assert "82.00 / 80.00 |" in table
    assert "behind the best other row in 1 (0 of them within two standard errors)" in table
    assert "ceiling below the best other row's selected top-1 in 0 settings" in table


def test_regime_table_splits_by_noise_structure_and_imbalance():
    results = {"mlp:r20-pair30": _results([0.81, 0.82, 0.83], [0.79, 0.79, 0.79]),  # structured, rho <= 60
               "mlp:r30-unif30": _results([0.79, 0.79, 0.79], [0.79, 0.79, 0.79]),  # unstructured, rho <= 60
               "mlp:r90-csp30": _results([0.82, 0.82, 0.82], [0.82, 0.82, 0.82])}  # unstructured, rho > 60
    table = study.regime_table(results, "default")
    assert "| structured, rho <= 60 | 1 | +2.00 / -1.00 | 1 of 1 |" in table
    assert "| unstructured, rho <= 60 | 1 | -1.00 / -1.00 | 0 of 1 |" in table
    assert "| unstructured, rho > 60 | 1 | +2.00 / +2.00 | 1 of 1 |" in table
    # two-epoch curves: the jitter is |last - first| (default: 2, 3, 4 points in the first setting, 0 in the other
    # six runs -> 1.00) and the selection rule picks the first epoch (selected - last: -1.00)
    assert "| default | 1.00 | -1.00 |" in table and "| kd | 0.00 | +0.00 |" in table


def test_the_pool_resumes_past_finished_cells(tmp_path):
    import study_pool

    todo = study_pool.cells(["r26-sem30", "r38-incl25"], None)
    assert todo == [("r26-sem30", 200), ("r26-sem30", 201), ("r26-sem30", 202),
                    ("r38-incl25", 203), ("r38-incl25", 204), ("r38-incl25", 205)]
    part = {"results": {"mlp:r26-sem30": {"ce": [], "kd": [], "default": []}}}
    (tmp_path / "r26-sem30-s201.json").write_text(json.dumps(part))
    assert study_pool.pending(todo, tmp_path, ["default"]) == [c for c in todo if c != ("r26-sem30", 201)]
    # a pass that adds a variant runs the finished cell again (its reference rows come from the cache)
    assert study_pool.pending(todo, tmp_path, ["default", "f_L selected"]) == todo
