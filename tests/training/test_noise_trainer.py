"""Noise-model training: resumes exactly, matches across 2 processes, guards its run folder, stops cleanly."""

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from nmflowgan.config import save_config, to_dict
from nmflowgan.data.folders import find_pairs
from nmflowgan.data.training_data import held_out_scenes, validation_patches
from nmflowgan.errors import BadInputError, CheckpointError, OutputExistsError, TrainingError
from nmflowgan.models.noise_model import NoiseModel
from nmflowgan.training.noise_trainer import NoiseTrainingOptions, train_noise_model, validation_scores
from nmflowgan.training.run import read_metrics
from tests.conftest import tiny_config


def _train(data, out, steps, **kwargs):
    options = NoiseTrainingOptions(data=data, out=out, steps=steps, device="cpu", quiet=True, log_every=1, **kwargs)
    return train_noise_model(tiny_config(), options)


def _weights(run_dir):
    folder = (run_dir / "last").resolve()
    tensors = load_file(str(folder / "model.safetensors"))
    tensors.update(load_file(str(folder / "training.safetensors")))
    return tensors


def test_training_writes_a_complete_run(tmp_path, simcam_tree):
    result = _train(simcam_tree, tmp_path / "run", 8)
    run = tmp_path / "run"
    assert result.step == 8 and result.interrupted is None
    assert (run / "last").is_symlink() and (run / "best").is_symlink() and not (run / "config.json").exists()
    info = json.loads(((run / "last").resolve() / "training.json").read_text())["info"]
    assert info["config"] == to_dict(tiny_config()) and info["options"]["steps"] == 8  # the one record of the run
    lines = read_metrics(run)
    steps = [m["step"] for m in lines if "lr" in m]
    assert steps == list(range(1, 9))
    assert {"critic", "wasserstein", "gp", "gan", "nll"} <= {key for m in lines for key in m}
    validations = [m for m in lines if "val_kld" in m]
    assert [v["step"] for v in validations] == [0, 4, 8]
    model = NoiseModel.load(run)
    assert model.cameras == ("V1", "V2") and model.isos == (100, 1600)
    # the logged best score is the score of the saved best model, recomputed from scratch
    config = tiny_config()
    _, held_out = held_out_scenes(find_pairs(simcam_tree, "train"))  # validation: scenes held out of train
    patches = validation_patches(held_out, config.train.patch_px, config.train.val_patches)
    rescored = validation_scores(model, patches, 0, config.train.batch_size)
    eligible = [v for v in validations if v["step"] > config.gan.flow_warmup_steps]
    assert rescored["val_kld"] == pytest.approx(min(v["val_kld"] for v in eligible), rel=1e-6)


def test_latent_correlation_trains_saves_and_loads(tmp_path, simcam_tree):
    import dataclasses

    config = tiny_config()
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, correlation_px=3))
    options = NoiseTrainingOptions(data=simcam_tree, out=tmp_path / "run", steps=6, device="cpu", quiet=True,
                                   log_every=1)
    train_noise_model(config, options)
    losses = [m["correlation"] for m in read_metrics(tmp_path / "run") if "correlation" in m]
    assert len(losses) >= 3 and all(0 < v < 1 for v in losses)
    model = NoiseModel.load(tmp_path / "run" / "last")
    assert model.correlation is not None and model.config.correlation_px == 3
    untrained = NoiseModel(config.model, model.cameras, model.isos)
    assert not torch.equal(model.correlation.net[-1].bias, untrained.correlation.net[-1].bias)


@pytest.mark.parametrize(("augment", "content"), [("none", False), ("all", False), ("all", True)])
def test_a_model_of_the_grid_trains_its_grid_values_and_resumes_exactly(tmp_path, simcam_tree, augment, content):
    import dataclasses

    config = tiny_config()
    model_config = dataclasses.replace(config.model, flow=dataclasses.replace(config.model.flow, grid_px=8),
                                       correlation_px=3, correlation_grid_px=2, correlation_content=content)
    config = dataclasses.replace(config, model=model_config, gan=None,
                                 train=dataclasses.replace(config.train, augment=augment))

    def train(out, steps, **kwargs):
        options = NoiseTrainingOptions(data=simcam_tree, out=out, steps=steps, device="cpu", quiet=True, **kwargs)
        return train_noise_model(config, options)

    train(tmp_path / "straight", 6)
    train(tmp_path / "resumed", 3)
    train(tmp_path / "resumed", 6, resume=True)
    straight, resumed = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    tables = [k for k in straight if k.endswith("grid.table")]
    assert len(tables) == 4 and all(straight[k].abs().max() > 0 for k in tables)  # SAL x2, SDL x2 (no RQS here)
    model = NoiseModel.load(tmp_path / "straight")
    assert model.config.flow.grid_px == 8 and model.correlation.phases == (12 if content else 4)
    assert model.config.correlation_content == content
    clean = torch.rand(2, 3, 24, 24)
    noise = model.draw(clean, model.encode(model.cameras[0], [800.0, 800.0], 2), torch.Generator().manual_seed(0))
    assert torch.isfinite(noise).all() and noise.std() > 0


def test_resumed_training_equals_uninterrupted_training(tmp_path, simcam_tree):
    _train(simcam_tree, tmp_path / "straight", 12)
    _train(simcam_tree, tmp_path / "resumed", 5)
    assert _weights(tmp_path / "resumed").keys() == _weights(tmp_path / "straight").keys()
    _train(simcam_tree, tmp_path / "resumed", 12, resume=True)
    straight, resumed = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    different = [k for k in straight if not torch.equal(straight[k], resumed[k])]
    assert not different, different[:5]
    # the metrics log holds each step once
    steps = [m["step"] for m in read_metrics(tmp_path / "resumed") if "lr" in m]
    assert steps == list(range(1, 13))


def test_each_checkpoint_step_is_written_once(tmp_path, simcam_tree, monkeypatch):
    from nmflowgan.training import checkpoint

    written = []
    real_save_file = checkpoint.save_file
    monkeypatch.setattr(checkpoint, "save_file", lambda tensors, path: (written.append(path),
                                                                         real_save_file(tensors, path)))
    result = _train(simcam_tree, tmp_path / "run", 8)  # validation (and best) at 4 and 8, checkpoints there too
    folders = [os.path.basename(os.path.dirname(p)).lstrip(".").removesuffix(".partial") for p in written]
    assert len(folders) == len(set(folders)) and {"step-00000004", "step-00000008"} <= set(folders), folders
    assert (tmp_path / "run" / "last").resolve().name == "step-00000008" and result.step == 8


def test_resume_refuses_a_run_whose_checkpoint_is_gone(tmp_path, simcam_tree):
    run = tmp_path / "run"
    _train(simcam_tree, run, 4)
    for folder in (run / "checkpoints").iterdir():  # a crash that lost the checkpoint but kept the metrics
        shutil.rmtree(folder)
    with pytest.raises(TrainingError, match=rf"{run}: cannot resume.*--overwrite"):
        _train(simcam_tree, run, 8, resume=True)
    assert [m["step"] for m in read_metrics(run) if "lr" in m] == [1, 2, 3, 4]  # nothing was discarded


def test_a_run_folder_is_kept_unless_resumed_with_the_same_seed_or_overwritten(tmp_path, simcam_tree):
    _train(simcam_tree, tmp_path / "run", 2)
    with pytest.raises(OutputExistsError, match="--resume.*--overwrite"):
        _train(simcam_tree, tmp_path / "run", 2)
    assert _train(simcam_tree, tmp_path / "run", 3, overwrite=True).step == 3
    with pytest.raises(TrainingError, match="seed"):
        _train(simcam_tree, tmp_path / "run", 4, resume=True, seed=5)


def test_a_folder_holding_a_run_is_refused_before_the_data_is_read(tmp_path, simcam_tree, monkeypatch):
    import nmflowgan.training.noise_trainer as trainer

    _train(simcam_tree, tmp_path / "run", 2)
    monkeypatch.setattr(trainer, "training_data", lambda *args: pytest.fail("the data was scanned first"))
    with pytest.raises(OutputExistsError, match="holds another run"):
        _train(simcam_tree, tmp_path / "run", 2)
    (tmp_path / "run" / "last").unlink()
    with pytest.raises(TrainingError, match="no readable 'last'"):
        _train(simcam_tree, tmp_path / "run", 2, resume=True)


def test_flow_stage_trains_no_critic(tmp_path, simcam_tree):
    _train(simcam_tree, tmp_path / "flow", 6, stage="flow")
    lines = [m for m in read_metrics(tmp_path / "flow") if "lr" in m]
    assert lines and not any("critic" in m for m in lines)


@pytest.mark.parametrize("how", [{"stage": "flow"}, {"gan": None}])
def test_a_run_without_an_adversarial_game_builds_saves_and_draws_no_refiner_or_critic(tmp_path, simcam_tree, how):
    config = tiny_config()
    if "gan" in how:
        config = dataclasses.replace(config, gan=None)
    options = NoiseTrainingOptions(data=simcam_tree, out=tmp_path / "run", steps=3, device="cpu", quiet=True,
                                   stage=how.get("stage", "joint"))
    train_noise_model(config, options)
    tensors = _weights(tmp_path / "run")
    assert not any("refiner" in name or "critic" in name for name in tensors)
    model = NoiseModel.load(tmp_path / "run")
    assert model.refiner is None and model.config.refiner is None
    assert model.sampler().refiner is None


def test_an_adversarial_game_without_a_refiner_is_refused(tmp_path, simcam_tree):
    config = tiny_config()
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, refiner=None))
    with pytest.raises(BadInputError, match=r"has an adversarial game \(gan\) but no refiner"):
        train_noise_model(config, NoiseTrainingOptions(data=simcam_tree, out=tmp_path / "run", steps=2,
                                                       device="cpu", quiet=True))
    assert not (tmp_path / "run").exists()


def test_non_finite_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(tmp_path, simcam_tree, monkeypatch):
    _train(simcam_tree, tmp_path / "run", 4, checkpoint_every=2)
    before = _weights(tmp_path / "run")
    original = torch.nn.Module.__call__

    def poisoned(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if type(self).__name__ == "GeneratorObjective":
            return (out[0] * float("nan"), *out[1:])
        return out

    monkeypatch.setattr(torch.nn.Module, "__call__", poisoned)
    with pytest.raises(TrainingError, match=r"step 6: the nll loss is nan.*last"):
        _train(simcam_tree, tmp_path / "run", 8, resume=True)
    after = _weights(tmp_path / "run")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_corrupt_checkpoint_is_refused_on_resume(tmp_path, simcam_tree):
    _train(simcam_tree, tmp_path / "run", 2)
    weights = (tmp_path / "run" / "last").resolve() / "training.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="training.safetensors.*corrupt or truncated"):
        _train(simcam_tree, tmp_path / "run", 4, resume=True)


def _cli(*args):
    return [sys.executable, "-m", "nmflowgan", *map(str, args)]


def test_sigint_saves_a_checkpoint_and_exits_with_status_130(tmp_path, simcam_tree):
    config = tmp_path / "tiny.json"
    save_config(tiny_config(), config)
    run = tmp_path / "run"
    process = subprocess.Popen(_cli("train", "--data", simcam_tree, "--config", config, "--steps", 100000, "--out",
                                    run, "--device", "cpu", "--quiet"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.time() + 60
    while not (run / "metrics.jsonl").exists() or len(read_metrics(run)) < 5:
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err  # the shell's status for SIGINT, after the checkpoint is saved
    assert "stopped by SIGINT" in out and "--resume" in out
    meta = json.loads(((run / "last").resolve() / "training.json").read_text())
    assert meta["complete"] and 0 < meta["step"] < 100000


@pytest.mark.distributed
def test_two_gloo_processes_match_one_process(tmp_path, simcam_tree):
    config = tmp_path / "tiny.json"
    save_config(tiny_config(), config)
    common = ["--data", simcam_tree, "--config", config, "--steps", 6, "--device", "cpu", "--quiet", "--log-every", 1]
    single = subprocess.run(_cli("train", *common, "--out", tmp_path / "one"), capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    env = dict(os.environ, OMP_NUM_THREADS="1")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    double = subprocess.run([*launcher, "-m", "nmflowgan", *map(str, ["train", *common, "--out", tmp_path / "two"])],
                            capture_output=True, text=True, env=env, timeout=300)
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert one.keys() == two.keys()
    # gloo sums the two halves' gradients in another order than one process does. Adam's first steps are
    # about lr * sign(g), so an element whose gradient is ~0 may step the other way, which puts the two runs
    # 2 * lr apart there. The tiny critic sits at a gradient penalty of ~1 (its gradients are ~0, their signs
    # round-off) and the refiner learns from it, so there such elements are common: any of the 6 steps may have
    # gone the other way (on an AVX2-only CPU 0.0011 apart after 6 critic steps of 2e-4, measured). The flow
    # learns from the NLL, whose gradients are not ~0: nearly every element must
    # agree to float32 round-off.
    train, gan = tiny_config().train, tiny_config().gan
    critic_step, generator_step = gan.critic_lr, max(train.lr, gan.refiner_lr or train.lr)
    close = total = 0
    for key in one:
        a, b = one[key].double(), two[key].double()
        if key.startswith("optimizer.critic."):
            continue  # the critic's gradient moments are averages of round-off-signed ~0 gradients: no lr bound
        if key.startswith("module.critic."):
            assert (a - b).abs().max() <= 2 * 6 * critic_step, key
        else:
            assert (a - b).abs().max() <= 2 * 2 * generator_step, key
        if key.startswith(("flow.", "correlation.")):
            close += int(torch.isclose(a, b, rtol=1e-4, atol=1e-5).sum())
            total += a.numel()
    assert total > 0 and close / total > 0.999
    single, double = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert [m["step"] for m in single] == [m["step"] for m in double]
    for a, b in zip(single, double):
        for key in ("nll", "critic", "gp"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), (a["step"], key)


def test_unknown_precision_is_refused_before_any_work(tmp_path, simcam_tree):
    with pytest.raises(BadInputError, match="training precision 'fp16'"):
        NoiseTrainingOptions(data=simcam_tree, out=tmp_path / "run", precision="fp16")
    assert not (tmp_path / "run").exists()


def test_bf16_autocast_trains_on_cpu(tmp_path, simcam_tree):
    result = _train(simcam_tree, tmp_path / "bf16", 4, precision="bf16")
    assert result.step == 4 and all(math.isfinite(v["val_kld"]) for v in result.validation)


def test_resuming_with_another_config_is_refused_naming_what_differs(tmp_path, simcam_tree):
    import dataclasses

    _train(simcam_tree, tmp_path / "run", 4)
    config = tiny_config()
    changed = dataclasses.replace(config, train=dataclasses.replace(config.train, val_every=5))
    options = NoiseTrainingOptions(data=simcam_tree, out=tmp_path / "run", steps=8, device="cpu", quiet=True,
                                   resume=True)
    with pytest.raises(TrainingError, match=r"cannot resume, the checkpoint's config differs in "
                                            r"config.train.val_every \(4 there, 5 here\)"):
        train_noise_model(changed, options)


def test_loading_a_run_folder_says_which_checkpoint_it_took(tmp_path, simcam_tree, caplog):
    import logging

    _train(simcam_tree, tmp_path / "run", 4)
    with caplog.at_level(logging.INFO):
        NoiseModel.load(tmp_path / "run")
    best = (tmp_path / "run" / "best").resolve().name
    assert f"{tmp_path / 'run'}: loading its best checkpoint, checkpoints/{best}" in caplog.text


def test_a_redirected_log_gets_a_progress_line_every_few_seconds_not_every_step(tmp_path, simcam_tree, capsys):
    options = NoiseTrainingOptions(data=simcam_tree, out=tmp_path / "run", steps=12, device="cpu", log_every=1)
    train_noise_model(tiny_config(), options)  # not quiet: the bar is on, and stderr is captured (not a terminal)
    drawn = [line for line in capsys.readouterr().err.split("\r") if "train (NLL + GAN)" in line]
    assert 1 <= len(drawn) <= 3, drawn  # opened, maybe once more, closed: 12 steps well within 30 seconds


def test_a_training_validates_on_scenes_held_out_of_its_training_split_and_never_reads_the_test_split(
        tmp_path, simcam_tree, monkeypatch):
    import nmflowgan.data.training_data as training_data

    monkeypatch.setattr(training_data, "MIN_SCENES_PER_CAMERA", 1)  # enough scenes to hold whole ones out
    asked, real_find_pairs = [], training_data.find_pairs
    monkeypatch.setattr(training_data, "find_pairs", lambda data, split=None, *rest: (asked.append(split),
                                                                                       real_find_pairs(data, split,
                                                                                                       *rest))[1])
    data = training_data.training_data(simcam_tree, None, None, 32, 32, 4)
    assert asked == ["train"]
    trained, held = {r.scene for r in data.patches.records}, {r.scene for r in data.validation}
    assert held and trained and not trained & held  # whole scenes, disjoint
    assert len(held) == max(1, round(0.1 * len(trained | held)))
    (simcam_tree / "val").mkdir()  # a val/ folder, when there is one, is the validation split
    try:
        assert training_data.validation_split(simcam_tree, "train", None) == "val"
    finally:
        (simcam_tree / "val").rmdir()
    assert training_data.validation_split(simcam_tree, "train", "test") == "test"  # only when named


def test_a_training_with_few_scenes_per_camera_validates_on_the_bottom_rows_of_every_pair(tmp_path, simcam_tree):
    """Below MIN_SCENES_PER_CAMERA scenes per camera, every training pair gives its bottom rows (8-aligned, at
    least a patch) to validation and trains on the rest: every pair and condition is validated on, no pixel is in
    both, the test split is never read, and validation patches keep their full-frame places in the 8x8 grid."""
    from nmflowgan.data.io import image_size
    from nmflowgan.data.patches import PatchDataset
    from nmflowgan.data.training_data import (
        MIN_SCENES_PER_CAMERA,
        held_out_strips,
        scenes_by_camera,
        training_data,
        validation_patches,
    )

    pairs = find_pairs(simcam_tree, "train")
    assert scenes_by_camera(pairs) < MIN_SCENES_PER_CAMERA
    data = training_data(simcam_tree, None, None, 16, 16, 4)
    trained, held = data.patches.records, data.validation
    assert len(trained) == len(held) == len(pairs)
    assert {(r.camera, r.iso) for r in held} == {(r.camera, r.iso) for r in pairs}
    for train, validation in zip(trained, held):
        height = image_size(train.clean)[0]
        assert train.clean == validation.clean and train.rows[0] == 0 and validation.rows[1] == height
        assert train.rows[1] == validation.rows[0] and validation.rows[0] % 8 == 0
        assert validation.rows[1] - validation.rows[0] >= 16 and train.rows[1] >= 16
    assert all(r.clean.parent.parent.name == "train" for r in trained + held)
    for index in range(len(data.patches)):  # no training patch reaches into a validation band
        record, y, _ = data.patches.locate(index)
        assert y + 16 <= record.rows[1]
    bands = PatchDataset(held, 16, 16)
    for index in range(len(bands)):  # each validation patch lies in its band, at its full-frame grid rows
        record, y, _ = bands.locate(index)
        assert record.rows[0] <= y and y + 16 <= record.rows[1]
        assert bands[index]["grid"][0, :, 0].tolist() == [(y + i) % 8 for i in range(16)]
    assert validation_patches(held, 16, 8).clean.shape == (8, 3, 16, 16)
    short = pairs[:1]  # 64 rows: a 24-row band would take over a quarter of them, so it is trained on whole
    assert held_out_strips(short, 24) == (short, [])
