"""dsink plot on a claims-benchmark JSON, and its errors."""

import json

from dsink.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def test_plot_claims_json(tmp_path, capsys):
    res = {"settings": [
        {"setting": "rho=100, uniform 0.4", "alpha": {"0.5": {"top1": 0.7, "top1_std": 0.01}, "1.0": {"top1": 0.72, "top1_std": 0.02},
                                                     "2": {"top1": 0.69, "top1_std": 0.0}},
         "correction_curve": {"f_N": [0.5, 0.6, 0.7], "D-SINK": [0.55, 0.66, 0.72]}},
        {"setting": "rho=10, semantic 0.2", "correction_curve": {"f_N": [0.4, 0.5]}},
    ]}
    f = tmp_path / "claims.json"
    f.write_text(json.dumps(res))
    assert main(["plot", str(f)]) == 0
    paths = capsys.readouterr().out.split()
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["alpha.png", "correction_0.png", "correction_1.png"]
    assert all(p.startswith(str(tmp_path / "claims_plots")) and open(p, "rb").read(8) == PNG for p in paths)


def test_plot_errors(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "x.json").write_text("{}")
    assert main(["plot", str(tmp_path / "x.json")]) == 2
    assert "not a claims benchmark result" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["plot", str(tmp_path / "empty")]) == 2
    assert "neither results.json nor eval.json" in capsys.readouterr().err
