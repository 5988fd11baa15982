"""Denoisers trained on real or synthesized pairs: resume, scores, tiled denoising, bad input."""

import json

import numpy as np
import pytest
import scipy.io
import torch
from safetensors.torch import load_file

from nmflowgan.cli import main
from nmflowgan.data.clean_images import clean_image_records
from nmflowgan.data.io import read_rgb, write_png
from nmflowgan.data.patches import PatchBatch
from nmflowgan.denoising import denoise_image, evaluate_denoiser
from nmflowgan.errors import BadInputError, CheckpointError, DataError
from nmflowgan.metrics.image_quality import psnr
from nmflowgan.models.dncnn import DnCNN
from nmflowgan.training.denoiser_trainer import DenoiserTrainingOptions, mixed, train_denoiser
from nmflowgan.training.noise_trainer import NoiseTrainingOptions, train_noise_model
from nmflowgan.training.run import read_metrics
from tests.conftest import tiny_config


def _train(data, out, noise, steps, **kwargs):
    options = DenoiserTrainingOptions(data=data, out=out, noise=noise, steps=steps, device="cpu", quiet=True,
                                      log_every=1, val_every=4, val_patches=8, fit_patches=64, **kwargs)
    return train_denoiser(tiny_config(), options)


def _weights(run):
    folder = (run / "last").resolve()
    return load_file(str(folder / "denoiser.safetensors")) | load_file(str(folder / "training.safetensors"))


@pytest.fixture(scope="module")
def noise_run(tmp_path_factory, simcam_tree):
    run = tmp_path_factory.mktemp("noise") / "run"
    train_noise_model(tiny_config(), NoiseTrainingOptions(data=simcam_tree, out=run, steps=4, device="cpu", quiet=True))
    return run


@pytest.mark.parametrize("noise", ["real", "gaussian", "nlf", "model", "flow-only"])
def test_every_noise_source_trains(tmp_path, simcam_tree, noise_run, noise):
    source = str(noise_run) if noise in ("model", "flow-only") else noise
    result = _train(simcam_tree, tmp_path / "run", source, 4, flow_only=noise == "flow-only")
    assert result.step == 4 and [v["step"] for v in result.validation] == [4]
    assert all(np.isfinite(m.get("l2", 0)) for m in read_metrics(tmp_path / "run"))
    assert DnCNN.load(tmp_path / "run").config.depth == 3


def test_bf16_denoiser_training_learns_like_float32(tmp_path, simcam_tree, noise_run):
    """bf16 autocast (the fast path on CPUs with native bf16) trains: its L2 falls as float32's does."""
    losses = {}
    for precision in ("fp32", "bf16"):
        _train(simcam_tree, tmp_path / precision, str(noise_run), 12, precision=precision)
        losses[precision] = [m["l2"] for m in read_metrics(tmp_path / precision) if "l2" in m]
    for curve in losses.values():
        assert np.mean(curve[-4:]) < np.mean(curve[:4])
    assert np.mean(losses["bf16"][-4:]) == pytest.approx(np.mean(losses["fp32"][-4:]), rel=0.2)


def test_flow_only_needs_a_model(tmp_path, simcam_tree):
    with pytest.raises(BadInputError, match="--flow-only"):
        _train(simcam_tree, tmp_path / "run", "real", 2, flow_only=True)


def test_resumed_denoiser_equals_uninterrupted(tmp_path, simcam_tree, noise_run):
    _train(simcam_tree, tmp_path / "straight", str(noise_run), 9)
    _train(simcam_tree, tmp_path / "resumed", str(noise_run), 5)
    _train(simcam_tree, tmp_path / "resumed", str(noise_run), 9, resume=True)
    straight, resumed = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_real_share_one_trains_exactly_as_real_pairs(tmp_path, simcam_tree, noise_run):
    """Every patch keeps its real partner at share 1: the synthesized draw is discarded, the weights are real's."""
    _train(simcam_tree, tmp_path / "real", "real", 5)
    _train(simcam_tree, tmp_path / "mixed", str(noise_run), 5, real_share=1.0)
    real, mixed_run = _weights(tmp_path / "real"), _weights(tmp_path / "mixed")
    assert all(torch.equal(real[k], mixed_run[k]) for k in real if not k.startswith("optimizer"))


def test_mixing_keeps_real_partners_at_the_share_and_never_for_clean_only_images():
    clean = torch.full((400, 3, 4, 4), 100, dtype=torch.uint8)
    noisy = clean + 7
    real = torch.arange(400) % 4 != 0  # every fourth patch is a clean-only image
    batch = PatchBatch(clean, torch.where(real[:, None, None, None], noisy, clean), ["a"] * 400,
                       torch.full((400,), 100.0), real=real)
    synthesized = torch.full((400, 3, 4, 4), 0.5)
    out = mixed(synthesized, batch, 0.5, torch.Generator().manual_seed(0))
    kept = (out == 107 / 255).all(dim=(1, 2, 3))
    assert torch.equal(kept | (out == 0.5).all(dim=(1, 2, 3)), torch.ones(400, dtype=torch.bool))
    assert not kept[~real].any()  # a clean-only patch always gets synthesized noise
    assert 0.4 < kept[real].float().mean() < 0.6
    assert torch.equal(mixed(synthesized, batch, 1.0, torch.Generator()).eq(107 / 255).all(dim=(1, 2, 3)), real)


def test_extra_clean_images_are_trained_on_at_the_pairs_conditions(tmp_path, simcam_tree, noise_run):
    extra = tmp_path / "extra"
    extra.mkdir()
    for index in range(3):
        write_png(extra / f"photo_{index}.png", np.full((64, 64, 3), 60 * index, dtype=np.uint8))
    records = clean_image_records(extra, [("IP", 800.0), ("G4", 100.0), ("IP", 800.0)])
    assert [(r.camera, r.iso, r.clean_only, r.noisy == r.clean) for r in records] == [
        ("G4", 100.0, True, True), ("IP", 800.0, True, True), ("G4", 100.0, True, True)]
    result = _train(simcam_tree, tmp_path / "run", str(noise_run), 4, real_share=0.5, extra_clean=extra)
    assert result.step == 4
    facts = json.loads((tmp_path / "run" / "last" / "training.json").read_text())["info"]
    assert facts["extra_clean"]["images"] == 3 and facts["real_share"] == 0.5
    with pytest.raises(BadInputError, match="not 'real'"):
        _train(simcam_tree, tmp_path / "bad", "real", 2, extra_clean=extra)
    with pytest.raises(BadInputError, match="from 0 to 1"):
        _train(simcam_tree, tmp_path / "bad", str(noise_run), 2, real_share=1.5)
    with pytest.raises(DataError, match="no PNG"):
        clean_image_records(tmp_path / "run", [("IP", 800.0)])


def test_denoising_is_tiled_exactly_and_scored(tmp_path, simcam_tree):
    _train(simcam_tree, tmp_path / "run", "real", 4)
    model = DnCNN.load(tmp_path / "run")
    noisy = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    assert np.array_equal(denoise_image(model, noisy, tile_px=32), denoise_image(model, noisy, tile_px=512))
    scores = evaluate_denoiser(tmp_path / "run", simcam_tree, progress=False)
    assert scores.overall["images"] > 0 and 0 < scores.overall["ssim"] <= 1 and scores.overall["psnr"] > 5
    assert {(r["camera"], r["iso"]) for r in scores.per_condition} <= {("V1", 100), ("V1", 1600), ("V2", 100),
                                                                           ("V2", 1600)}


def test_eval_denoiser_scores_every_block_by_default_and_names_a_subset(tmp_path, simcam_tree, capsys):
    _train(simcam_tree, tmp_path / "run", "real", 2)
    rng = np.random.default_rng(1)
    clean = rng.integers(0, 256, (3, 70, 8, 8, 3), dtype=np.uint8)  # 210 blocks: more than any old default
    noisy = np.clip(clean + rng.normal(0, 10, clean.shape), 0, 255).astype(np.uint8)
    scipy.io.savemat(tmp_path / "ValidationNoisyBlocksSrgb.mat", {"ValidationNoisyBlocksSrgb": noisy})
    scipy.io.savemat(tmp_path / "ValidationGtBlocksSrgb.mat", {"ValidationGtBlocksSrgb": clean})
    every = evaluate_denoiser(tmp_path / "run", tmp_path / "ValidationNoisyBlocksSrgb.mat", progress=False)
    assert every.overall["images"] == 210 and every.subset == "all 210 images"
    args = ["eval-denoiser", "--checkpoint", str(tmp_path / "run"), "--data",
            str(tmp_path / "ValidationNoisyBlocksSrgb.mat"), "--max-images", "4", "--quiet"]
    assert main(args) == 0
    assert "scored 4 of 210 images, evenly spaced" in capsys.readouterr().out
    # blocks 0, 70, 139 and 209: the noisy input's PSNR is the mean of exactly those four
    flat_clean, flat_noisy = clean.reshape(-1, 8, 8, 3), noisy.reshape(-1, 8, 8, 3)
    subset = evaluate_denoiser(tmp_path / "run", tmp_path / "ValidationNoisyBlocksSrgb.mat", max_images=4,
                               progress=False)
    expected = np.mean([psnr(flat_clean[i], flat_noisy[i]) for i in (0, 70, 139, 209)])
    assert subset.overall["noisy_psnr"] == pytest.approx(expected)


def test_eval_denoiser_on_sidd_blocks_and_denoise_cli(tmp_path, simcam_tree, capsys):
    _train(simcam_tree, tmp_path / "run", "real", 2)
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (2, 2, 32, 32, 3), dtype=np.uint8)
    noisy = np.clip(clean + rng.normal(0, 10, clean.shape), 0, 255).astype(np.uint8)
    scipy.io.savemat(tmp_path / "ValidationNoisyBlocksSrgb.mat", {"ValidationNoisyBlocksSrgb": noisy})
    scipy.io.savemat(tmp_path / "ValidationGtBlocksSrgb.mat", {"ValidationGtBlocksSrgb": clean})
    assert main(["eval-denoiser", "--checkpoint", str(tmp_path / "run"), "--data",
                 str(tmp_path / "ValidationNoisyBlocksSrgb.mat"), "--json", "--quiet"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["overall"]["images"] == 4 and scores["per_condition"][0]["camera"] == "SIDD"
    write_png(tmp_path / "in.png", noisy[0, 0])
    assert main(["denoise", "--checkpoint", str(tmp_path / "run"), "--quiet", str(tmp_path / "in.png"),
                 str(tmp_path / "out.png")]) == 0
    assert read_rgb(tmp_path / "out.png").shape == (32, 32, 3)
    assert main(["denoise", "--checkpoint", str(tmp_path / "run"), "--quiet", str(tmp_path / "in.png"),
                 str(tmp_path / "out.png")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="not a denoiser checkpoint"):
        DnCNN.load(tmp_path)


def test_a_denoiser_run_without_validation_says_so_instead_of_printing_nan(tmp_path, simcam_tree, capsys):
    from nmflowgan.config import save_config
    from nmflowgan.data.folders import find_pairs

    folder = tmp_path / "pairs"
    folder.mkdir()
    rows = ["clean,noisy,camera,iso"]
    for k, record in enumerate(find_pairs(simcam_tree, "train")[:4]):
        for kind, path in (("c", record.clean), ("n", record.noisy)):
            (folder / f"{kind}{k}.png").write_bytes(path.read_bytes())
        rows.append(f"c{k}.png,n{k}.png,{record.camera},{record.iso:g}")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")  # no test split: nothing to validate on
    save_config(tiny_config(), tmp_path / "tiny.json")
    assert main(["train-denoiser", "--noise", "real", "--data", str(folder), "--config", str(tmp_path / "tiny.json"),
                 "--steps", "2", "--out", str(tmp_path / "dn"), "--device", "cpu", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "no validation (no test split)" in out and "nan" not in out
