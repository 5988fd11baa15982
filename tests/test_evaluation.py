"""`evaluate` scores every model on the same patches and writes a readable report."""

import json

import pytest

from nmflowgan.api import evaluate_to_report
from nmflowgan.cli import main
from nmflowgan.data.folders import find_pairs
from nmflowgan.data.patches import PatchDataset
from nmflowgan.errors import OutputExistsError
from nmflowgan.training.noise_trainer import NoiseTrainingOptions, train_noise_model
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, simcam_tree):
    run = tmp_path_factory.mktemp("eval") / "run"
    train_noise_model(tiny_config(), NoiseTrainingOptions(data=simcam_tree, out=run, steps=6, device="cpu", quiet=True))
    return run


def test_evaluate_writes_results_and_report(tmp_path, tiny_run, simcam_tree):
    report = evaluate_to_report(tiny_run, simcam_tree, tmp_path / "eval", patch_px=32, max_patches=40,
                                fit_patches=200, progress=False)
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert list(results["models"]) == ["gaussian", "nlf", "flow-only", "nmflowgan", "oracle"]
    available = len(PatchDataset(find_pairs(simcam_tree, "test"), 32, 32))
    assert results["n_patches"] == min(40, available) and results["seed"] == 0
    models = results["models"]
    # The oracle is a second real draw: no model gets closer to the real noise than it does.
    assert all(models["oracle"]["kld"] <= m["kld"] for m in models.values())
    assert models["oracle"]["corr_error"] < 0.05 < models["gaussian"]["corr_error"]
    conditions = {(row["camera"], row["iso"]) for row in results["per_condition"]}
    assert conditions <= {(c, i) for c in ("V1", "V2") for i in (100.0, 1600.0)} and conditions
    assert all(set(row["nmflowgan"]) == {"kld", "akld", "corr_error"} for row in results["per_condition"])
    text = (tmp_path / "eval" / "report.md").read_text()
    assert "| oracle |" in text and "AKLD" in text and "samples.png" in text
    assert report.table in text
    html = (tmp_path / "eval" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and "<table>" in html
    with pytest.raises(OutputExistsError, match="--overwrite"):
        evaluate_to_report(tiny_run, simcam_tree, tmp_path / "eval", patch_px=32, max_patches=8, progress=False)


def test_evaluate_cli(tmp_path, tiny_run, simcam_tree, capsys):
    code = main(["evaluate", "--checkpoint", str(tiny_run), "--data", str(simcam_tree), "--out",
                 str(tmp_path / "e"), "--patch-px", "32", "--max-patches", "16", "--quiet"])
    assert code == 0
    assert "| nmflowgan |" in capsys.readouterr().out
    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing"), "--data", str(simcam_tree), "--out",
                 str(tmp_path / "f"), "--quiet"]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
