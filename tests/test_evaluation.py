"""`evaluate` scores every model on the same patches and writes a readable report."""

import json
import shutil

import numpy as np
import pytest
import torch

from nmflowgan.api import evaluate_to_report
from nmflowgan.cli import main
from nmflowgan.data.folders import find_pairs
from nmflowgan.data.patches import PatchDataset
from nmflowgan.data.simcam import simulate
from nmflowgan.errors import BadInputError, DataError, OutputExistsError
from nmflowgan.evaluation import evaluate, protocol
from nmflowgan.models.noise_model import NoiseModel
from nmflowgan.models.sampler import SamplingOptions
from nmflowgan.reporting.report import FIGURES
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
    assert results["protocol"] == {"name": "default", "patch_px": 32, "stride_px": 32, "max_patches": 40,
                                   "rounded": True}
    assert results["sampling"] == "plain"  # the same numbers on a CPU with or without native bf16
    models = results["models"]
    # The oracle is a second real draw: no model gets closer to the real noise than it does.
    assert all(models["oracle"]["kld"] <= m["kld"] for m in models.values())
    assert models["oracle"]["corr_error"] < 0.05 < models["gaussian"]["corr_error"]
    conditions = {(row["camera"], row["iso"]) for row in results["per_condition"]}
    assert conditions <= {(c, i) for c in ("V1", "V2") for i in (100.0, 1600.0)} and conditions
    assert all(set(row["models"]["nmflowgan"]) == {"kld", "akld", "corr_error", "neighbour_kld", "skew_match", "std",
                                                     "kurtosis"}
               for row in results["per_condition"])
    row = results["per_condition"][0]
    assert set(row["correlation"]) == {"real", "gaussian", "nlf", "flow-only", "nmflowgan", "oracle"}
    assert len(row["correlation"]["real"]["spatial"]) == 3 and len(row["correlation"]["real"]["cross"]) == 3
    assert row["correlation"]["real"]["spatial"][0][0] == pytest.approx(1.0)
    # Simcam noise is spatially correlated: its neighbour differences are narrower than white noise's.
    assert models["oracle"]["neighbour_kld"] < models["gaussian"]["neighbour_kld"]
    # The oracle is real noise too: its level and shape match the real noise's. Pooled over ISO 100 and 1600 and over
    # dark and bright pixels, the noise mixes levels: tails heavier than a Gaussian's (one channel may come out near 3
    # on one scene's 40 patches, so the mean over the channels).
    real = results["real"]
    assert models["oracle"]["std"] == pytest.approx(real["std"], rel=0.1)
    assert models["oracle"]["kurtosis"] == pytest.approx(real["kurtosis"], rel=0.15)
    assert np.mean(real["kurtosis"]) > 3.3
    text = (tmp_path / "eval" / "report.md").read_text()
    assert "| oracle |" in text and "AKLD" in text and "samples.png" in text and "kurtosis R / G / B" in text
    assert "Protocol `default`" in text and "R-G / G-B / R-B" in text
    assert report.table in text
    html = (tmp_path / "eval" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(FIGURES) and "<table>" in html
    assert "skewness_vs_intensity.png" in text and "## Noise shape per clean intensity" in text
    with pytest.raises(OutputExistsError, match="--overwrite"):
        evaluate_to_report(tiny_run, simcam_tree, tmp_path / "eval", patch_px=32, max_patches=8, progress=False)


def test_evaluate_command_prints_the_table_and_refuses_a_missing_checkpoint(tmp_path, tiny_run, simcam_tree, capsys):
    code = main(["evaluate", "--checkpoint", str(tiny_run), "--data", str(simcam_tree), "--out",
                 str(tmp_path / "e"), "--patch-px", "32", "--max-patches", "16", "--quiet"])
    assert code == 0
    assert "| nmflowgan |" in capsys.readouterr().out
    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing"), "--data", str(simcam_tree), "--out",
                 str(tmp_path / "f"), "--quiet"]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_flow_only_and_nmflowgan_refine_the_same_latents(tmp_path, simcam_tree):
    # An untrained refiner is the identity: with paired latents the two sources draw identical noise.
    model = NoiseModel(tiny_config().model, ["V1", "V2"], [100, 1600])
    model.save(tmp_path / "model")
    result = evaluate(tmp_path / "model", simcam_tree, protocol=protocol("default", 32, 24), fit_patches=50,
                      progress=False)
    assert result.realism.models["flow-only"] == result.realism.models["nmflowgan"]
    assert all(torch.equal(e["flow-only"], e["nmflowgan"]) for e in result.examples.values())


def test_official_protocol_scores_every_96px_patch_at_stride_48_unrounded(tmp_path, simcam_tree):
    model = NoiseModel(tiny_config().model, ["V1", "V2"], [100, 1600])
    model.save(tmp_path / "model")
    big = simulate(tmp_path / "big", cameras=["V1"], isos=[100], scenes=4, size_px=160, seed=1, progress=False)
    official = evaluate(tmp_path / "model", big, protocol=protocol("official"), fit_patches=50, progress=False)
    default = evaluate(tmp_path / "model", big, fit_patches=50, progress=False)
    test_images = len(find_pairs(big, "test"))
    assert official.realism.n_patches == test_images * 2 * 2  # (160 - 96) // 48 + 1 = 2 per side
    assert default.realism.n_patches == test_images * 2 * 2  # 64 px non-overlapping: 2 per side
    assert official.protocol.to_dict() == {"name": "official", "patch_px": 96, "stride_px": 48, "max_patches": None,
                                           "rounded": False}
    # Generated noise is clipped to the 8-bit range but not rounded (the flow's own sample is integer-valued:
    # its dequantization layer inverts to a floor), and rounded under the default protocol: exactly, with no float32
    # round-off left on values near 255.
    clean = next(iter(official.examples.values()))["clean"].double()
    for examples, rounded in ((official.examples, False), (default.examples, True)):
        for example in examples.values():
            noisy = example["clean"].double() + example["gaussian"]
            assert bool(((noisy >= 0) & (noisy <= 255)).all())
            off_integer = (example["gaussian"] - example["gaussian"].round()).abs().max().item()
            assert (off_integer == 0) == rounded
    assert clean.shape[-1] == 96
    with pytest.raises(BadInputError, match="official protocol"):
        protocol("official", patch_px=64)
    with pytest.raises(BadInputError, match="float32"):
        evaluate(tmp_path / "model", big, protocol=protocol("official"), options=SamplingOptions(precision="bf16"),
                 progress=False)


def test_evaluate_refuses_a_data_set_without_a_test_split(tmp_path, tiny_run, simcam_tree):
    pairs = find_pairs(simcam_tree, "test")[:2]
    folder = tmp_path / "pairs"
    folder.mkdir()
    for p in pairs:
        shutil.copy(p.clean, folder / p.clean.name)
        shutil.copy(p.noisy, folder / p.noisy.name)
    (folder / "metadata.csv").write_text("\n".join(
        ["clean,noisy,camera,iso"] + [f"{p.clean.name},{p.noisy.name},{p.camera},{p.iso}" for p in pairs]) + "\n")
    with pytest.raises(DataError, match="no test split"):
        evaluate(tiny_run, folder, progress=False)


@pytest.mark.slow
def test_a_short_small_run_on_simcam_beats_the_closed_form_baselines(tmp_path):
    """The model, not only the data: 600 steps of ``small`` give noise closer to the real than the NLF fit
    (per-pixel KLD) and correlated like it (correlation error well below the white flow's)."""
    import dataclasses

    from nmflowgan.config import small

    data = simulate(tmp_path / "data", cameras=["V1", "V2"], isos=[100, 1600], scenes=8, size_px=128, seed=5,
                    progress=False)
    config = small()
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, val_every=200))
    train_noise_model(config, NoiseTrainingOptions(data=data, out=tmp_path / "run", steps=600, device="cpu",
                                                   quiet=True))
    models = evaluate(tmp_path / "run", data, protocol=protocol("default", 64, 200), fit_patches=500,
                      progress=False).realism.models
    assert models["flow-only"].kld < models["nlf"].kld < models["gaussian"].kld
    assert models["nmflowgan"].kld < models["nlf"].kld
    assert models["nmflowgan"].corr_error < 0.5 * models["flow-only"].corr_error


def test_test_pairs_of_unknown_conditions_are_refused_or_skipped_and_named(tmp_path, simcam_tree, capsys):
    """A model that knows only V1 scored on V1 and V2 pairs: refused by default; with --known-only the V2 pairs
    are left out and named in the output, results.json and the report."""
    model = NoiseModel.from_preset("small", cameras=("V1",), isos=(100, 1600)).save(tmp_path / "model")
    arguments = ["evaluate", "--checkpoint", str(model), "--data", str(simcam_tree), "--out", str(tmp_path / "eval"),
                 "--patch-px", "32", "--max-patches", "8", "--device", "cpu", "--quiet"]
    assert main(arguments) == 2
    error = capsys.readouterr().err
    assert "test pairs have a camera/ISO this model does not know (V2 ISO 100, V2 ISO 1600)" in error
    assert "--known-only" in error and not (tmp_path / "eval").exists()
    assert main([*arguments, "--known-only"]) == 0
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert set(results["skipped_conditions"]) == {"V2 ISO 100", "V2 ISO 1600"}
    assert all(row["camera"] == "V1" for row in results["per_condition"])
    assert "Not scored:" in (tmp_path / "eval" / "report.md").read_text()


def test_further_captures_give_the_decorrelated_oracle_and_the_correlation_charge(tmp_path, simcam_tree):
    data = simulate(tmp_path / "sim", cameras=["V1", "V2"], isos=[100, 1600], scenes=6, size_px=64, seed=3,
                    progress=False, oracle_draws=6)
    # The further draws come after the pair's two captures, which stay what they were without them.
    for path in sorted(simcam_tree.rglob("*.PNG")):
        assert (data / path.relative_to(simcam_tree)).read_bytes() == path.read_bytes()
    test, train = find_pairs(data, "test"), find_pairs(data, "train")
    assert all(len(r.oracle_draws) == 6 and r.oracle is not None for r in test)
    assert all(r.oracle_draws == () for r in train)
    assert len(list((data / "test").rglob("*_NOISY_SRGB_017.PNG"))) == len(test)

    model = NoiseModel(tiny_config().model, ["V1", "V2"], [100, 1600])
    model.save(tmp_path / "model")
    evaluate_to_report(tmp_path / "model", data, tmp_path / "eval", patch_px=32, max_patches=64, fit_patches=50,
                       progress=False)
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    models = results["models"]
    assert list(models)[-2:] == ["oracle", "decorrelated oracle"]
    decorrelated, oracle = models["decorrelated oracle"], models["oracle"]
    # Each value keeps the real noise's distribution: the level and the tails of the oracle ...
    assert decorrelated["std"] == pytest.approx(oracle["std"], rel=0.05)
    assert decorrelated["kurtosis"] == pytest.approx(oracle["kurtosis"], rel=0.15)
    # ... while neighbours share a capture with probability 1/6 only: their correlation falls by that factor.
    for row in results["per_condition"]:
        lag1 = [row["correlation"][name]["spatial"][c][1] for name in ("oracle", "decorrelated oracle")
                for c in range(3)]
        assert all(d == pytest.approx(o / 6, abs=0.06) for o, d in zip(lag1[:3], lag1[3:]))
        assert min(lag1[:3]) > 0.2
    assert results["correlation_charge"] == pytest.approx(oracle["kld"] - decorrelated["kld"])
    assert results["correlation_charge"] > 0  # correlated noise fills a patch's histogram less evenly
    assert "Correlation charge" in (tmp_path / "eval" / "report.md").read_text()
    with pytest.raises(BadInputError, match="further draws"):
        simulate(tmp_path / "bad", cameras=["V1"], isos=[100], scenes=2, size_px=32, oracle_draws=1, progress=False)
