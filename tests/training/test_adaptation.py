"""`adapt`: a trained model learns new cameras from a few pairs, and its own cameras stay as they were."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from nmflowgan import api
from nmflowgan.data.io import write_png
from nmflowgan.data.simcam.camera import random_camera
from nmflowgan.data.simcam.scenes import PROCEDURAL, make_scene
from nmflowgan.errors import BadInputError
from nmflowgan.models.adaptation import grown_model, restrict_to_new_cameras
from nmflowgan.models.noise_model import NoiseModel
from nmflowgan.models.sampler import SamplingOptions
from tests.conftest import exit_code


def _perturbed(cameras=("AA", "BB"), seed=0):
    """A small model whose weights are all random, so that every camera draws different noise."""
    model = NoiseModel.from_preset("small", cameras=cameras, isos=(100, 3200))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def _draw(model, camera, iso=800):
    clean = torch.linspace(0.05, 0.95, 3 * 24 * 24).view(1, 3, 24, 24)
    latent = torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    return model.compose(clean, model.encode(camera, iso, 1), latent)


def _nll_per_value(model, noise, clean, cond, **score):
    """The flow's NLL of ``noise`` in nats per value, and its latent."""
    z, log_prob = model.flow.latent_and_log_prob(noise, clean, cond, **score)
    return z, -log_prob.mean() / noise[0].numel()


def test_a_new_camera_copied_from_a_base_camera_draws_exactly_its_noise_and_the_base_cameras_are_unchanged():
    base = _perturbed()
    extended, columns = grown_model(base, ["BB", "AA"], ["CC", "DD"])
    extended.eval()
    assert columns  # the camera is read by several layers (flow conditioning, latent correlation)
    assert torch.allclose(_draw(extended, "CC"), _draw(base, "BB"), atol=1e-5)
    assert torch.allclose(_draw(extended, "DD"), _draw(base, "AA"), atol=1e-5)
    for camera in base.cameras:
        assert torch.allclose(_draw(extended, camera), _draw(base, camera), atol=1e-5)
    assert not torch.allclose(_draw(base, "AA"), _draw(base, "BB"), atol=1e-2)


def test_adapting_the_camera_only_changes_the_new_cameras_columns_and_nothing_else():
    base = _perturbed()
    model, columns = grown_model(base, ["AA"], ["CC"])
    before = {name: value.clone() for name, value in model.state_dict().items()}
    trainable = restrict_to_new_cameras(model, columns)
    optimizer = torch.optim.Adam(trainable, lr=0.05)
    clean = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    noise = (8 * torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))).round()
    for camera in ("CC", "AA", "BB"):  # batches of base cameras must not move their columns either
        optimizer.zero_grad()
        cond = model.encode(camera, 800, 2)
        z, nll = _nll_per_value(model, noise, clean, cond, generator=torch.Generator().manual_seed(4))
        (nll + model.correlation.loss(z, cond)).backward()  # what adapt trains on
        optimizer.step()
    for name, value in model.state_dict().items():
        span = columns.get(name)
        if span is None:
            assert torch.equal(value, before[name]), name
            continue
        assert not torch.equal(value[:, span], before[name][:, span]), name
        others = [i for i in range(value.shape[1]) if not span.start <= i < span.stop]
        assert torch.equal(value[:, others], before[name][:, others]), name
    for camera in base.cameras:
        assert torch.allclose(_draw(model, camera), _draw(base, camera), atol=1e-5)


def test_camera_adapters_start_as_the_identity_and_leave_the_base_cameras_bit_for_bit():
    base = _perturbed()
    model, columns = grown_model(base, ["BB"], ["CC"], adapters=True)
    modulated = [name for name in columns if ".modulations." in name or ".camera_grid." in name]
    assert {name.rsplit(".", 1)[1] for name in modulated} == {"scale", "shift", "table"}  # both kinds, nothing else
    model.eval()
    assert torch.equal(_draw(model, "CC"), _draw(model, "BB"))  # zero tables: the source camera's noise exactly
    trainable = restrict_to_new_cameras(model, columns)
    optimizer = torch.optim.Adam(trainable, lr=0.05)
    clean = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    noise = (8 * torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))).round()
    for _ in range(3):
        optimizer.zero_grad()
        cond = model.encode("CC", 800, 2)
        z, nll = _nll_per_value(model, noise, clean, cond, generator=torch.Generator().manual_seed(4))
        (nll + model.correlation.loss(z, cond)).backward()
        optimizer.step()
    assert all(model.get_parameter(name)[:, columns[name]].abs().sum() > 0 for name in modulated)
    for camera in base.cameras:  # exactly, not approximately: the base's cameras never see the new tables
        assert torch.equal(_draw(model, camera), _draw(base, camera))
        for options in (SamplingOptions.plain(), SamplingOptions()):
            drawn = [m.sample(torch.full((1, 3, 16, 16), 0.4), camera, 800, generator=torch.Generator().manual_seed(7),
                              options=options) for m in (model, base)]
            assert torch.equal(*drawn)
    assert not torch.allclose(_draw(model, "CC"), _draw(model, "BB"), atol=1e-3)


def _new_camera(code="ZZ"):
    return dataclasses.replace(random_camera("A0", np.random.default_rng([99])), code=code)


def _noise_std_against_the_camera(model, camera, iso):
    """``(std of the noise model draws as camera, std of the drawn camera's own noise)`` (8-bit units) on the
    camera's clean image of a 96 px scene it never trained on."""
    clean, noisy = _new_camera().capture(make_scene(PROCEDURAL[0], 777, 96), iso, 1, torch.Generator().manual_seed(3))
    true = noisy[0].astype(np.float64) - clean
    clean01 = torch.from_numpy(clean).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        drawn = model.sample(clean01, camera, iso, generator=torch.Generator().manual_seed(4)) * 255 - clean01 * 255
    return float(drawn.std()), float(true.std())


def _new_camera_pairs(folder, count, seed=0, size=192, isos=(400, 1600), code="ZZ"):
    """``count`` pairs of one drawn camera (named ``code``) as a metadata.csv folder, scenes drawn with ``seed``."""
    camera = _new_camera(code)
    folder.mkdir(parents=True)
    rows = ["clean,noisy,camera,iso"]
    for i in range(count):
        iso = isos[i % len(isos)]
        clean, noisy = camera.capture(make_scene(PROCEDURAL[i % len(PROCEDURAL)], 100 * seed + i, size), iso, 1,
                                      torch.Generator().manual_seed(i))
        write_png(folder / f"c{i}.png", clean)
        write_png(folder / f"n{i}.png", noisy[0])
        rows.append(f"c{i}.png,n{i}.png,{code},{iso}")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    return folder


def _nll(model, folder, camera):
    from nmflowgan.data.folders import find_pairs
    from nmflowgan.data.patches import PatchDataset, collate

    dataset = PatchDataset(find_pairs(folder), 48, 48)
    batch = collate([dataset[(i, 0)] for i in range(len(dataset))])
    clean, noise = batch.clean.float() / 255, batch.noisy.float() - batch.clean.float()
    uniform = torch.rand(noise.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, nll = _nll_per_value(model, noise, clean, model.encode(camera, batch.isos.tolist(), len(noise)),
                                uniform=uniform, censored=True)
    return float(nll)


def _replayed_nll(model, base, camera, iso):
    """NLL (bits per value) under ``model`` of the noise ``base`` draws for ``camera`` at ``iso`` on a ramp."""
    clean = torch.linspace(0.05, 0.95, 8 * 3 * 48 * 48).view(8, 3, 48, 48)
    cond = base.encode(camera, iso, 8)
    noise = base.draw(clean, cond, torch.Generator().manual_seed(5))
    uniform = torch.rand(noise.shape, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        _, nll = _nll_per_value(model, noise, clean, model.encode(camera, iso, 8), uniform=uniform, censored=True)
    return float(nll)


@pytest.fixture(scope="module")
def new_camera(tmp_path_factory):
    root = tmp_path_factory.mktemp("new_camera")
    return _new_camera_pairs(root / "train", 3, seed=0), _new_camera_pairs(root / "held_out", 4, seed=1)


@pytest.mark.parametrize("adapt", ["all", "camera", "adapters"])
def test_adapting_the_builtin_model_to_a_new_simulated_camera_improves_on_the_base(tmp_path, new_camera, adapt):
    base = NoiseModel.load("builtin")
    train, held_out = new_camera
    steps = 120 if adapt == "all" else 40  # every shared weight moves, held back by the base's replayed noise
    options = api.NoiseTrainingOptions(data=train, out=tmp_path / "run", steps=steps, device="cpu", quiet=True)
    result = api.adapt(options, api.AdaptationOptions(base="builtin", adapt=adapt))
    adapted = NoiseModel.load(result.run_dir)
    assert adapted.cameras == base.cameras + ("ZZ",) and adapted.isos == base.isos
    info = json.loads((result.run_dir / "last" / "training.json").read_text())["info"]
    started_from = info["adaptation"]["adapted_from"]["ZZ"]
    assert started_from in base.cameras
    before, after = _nll(base, held_out, started_from), _nll(adapted, held_out, "ZZ")
    # bits per value, on pairs it never saw: the nearest base camera already explains most of this camera, and short
    # runs from the built-in models of 2026-11-30 and 2026-12-07 gained 0.016-0.020
    assert after < before - 0.01, (before, after)
    # an ISO between its two measured ones: nearer the camera's true noise there than the camera it started from
    drawn, true = _noise_std_against_the_camera(adapted, "ZZ", 800)
    started, _ = _noise_std_against_the_camera(base, started_from, 800)
    assert abs(drawn - true) < abs(started - true), (true, drawn, started)
    for camera, iso in (("V2", 1600), ("A5", 100), ("AX", 6400)):
        if adapt == "adapters":  # the base's own cameras draw exactly what they drew, bit for bit
            assert torch.equal(_draw(adapted, camera, iso), _draw(base, camera, iso))
        elif adapt == "camera":  # the base's own cameras draw what they drew
            assert torch.allclose(_draw(adapted, camera, iso), _draw(base, camera, iso), atol=1e-4)
        else:  # trained on the base's own noise beside the new pairs: they keep their likelihood
            kept, was = _replayed_nll(adapted, base, camera, iso), _replayed_nll(base, base, camera, iso)
            assert abs(kept - was) < 0.02 * abs(was), (camera, iso, was, kept)


def test_adapt_refuses_what_it_cannot_use_before_any_work(tmp_path, capsys):
    three = _new_camera_pairs(tmp_path / "three", 3)
    two = _new_camera_pairs(tmp_path / "two", 2)
    known = _new_camera_pairs(tmp_path / "known", 3, code="V1")
    beyond = _new_camera_pairs(tmp_path / "beyond", 3, isos=(1600,))
    (beyond / "metadata.csv").write_text((beyond / "metadata.csv").read_text().replace(",1600", ",25600"))
    mismatched = _new_camera_pairs(tmp_path / "mismatched", 3)
    write_png(mismatched / "n1.png", np.zeros((144, 192, 3), np.uint8))
    cases = [(two, "2 image pair(s); adapting needs at least 3"), (known, "V1 are already in the base model"),
             (beyond, "ISO 25600 outside the base model's range 50-12800"), (mismatched, "n1.png")]
    for data, message in cases:
        out = tmp_path / f"run-{data.name}"
        assert exit_code(["adapt", "--base", "builtin", "--data", str(data), "--out", str(out), "--quiet"]) == 2
        error = capsys.readouterr().err
        assert message in error and len(error.strip().splitlines()) == 1, error
        assert not out.exists()
    onehot = NoiseModel.from_preset("paper", cameras=("V1",), isos=(100, 1600)).save(tmp_path / "onehot")
    with pytest.raises(BadInputError, match="continuous ISO"):
        api.adapt(api.NoiseTrainingOptions(data=three, out=tmp_path / "run-onehot", quiet=True),
                  api.AdaptationOptions(base=onehot))
    assert exit_code(["adapt", "--base", "builtin", "--data", str(three), "--out", str(tmp_path / "r"),
                      "--adapt", "everything"]) == 2


@pytest.mark.parametrize("steps", [30, 400, 901])
def test_adapts_rate_halves_at_each_third_of_the_run_however_long_it_is(steps, tmp_path):
    from nmflowgan.training.adaptation import AdaptationOptions, adaptation_config
    from nmflowgan.training.loop import Schedule

    config = adaptation_config(NoiseModel.load("builtin"), AdaptationOptions(base="builtin"))
    options = api.NoiseTrainingOptions(data=tmp_path, out=tmp_path / "run", steps=steps)
    schedule = Schedule.of(options, config.train, steps_per_epoch=7, val_every=10)
    rates = [schedule.lr_gamma ** (step // schedule.decay_steps) for step in range(steps)]
    assert [rates.count(rate) for rate in (1.0, 0.5, 0.25)] == [schedule.decay_steps] * 2 + [
        steps - 2 * schedule.decay_steps]
    assert min(rates) == 0.25 and abs(schedule.decay_steps - steps / 3) <= 1


def test_a_resumed_adaptation_must_start_from_the_same_base_and_options(tmp_path, new_camera):
    from nmflowgan.errors import TrainingError

    train, _ = new_camera
    options = api.NoiseTrainingOptions(data=train, out=tmp_path / "run", steps=2, device="cpu", quiet=True)
    api.adapt(options, api.AdaptationOptions(base="builtin"))
    resumed = dataclasses.replace(options, steps=4, resume=True)
    differs = r"cannot resume, the checkpoint's adaptation differs in adaptation.replay \(1.0 there, 0 here\)"
    with pytest.raises(TrainingError, match=differs):
        api.adapt(resumed, api.AdaptationOptions(base="builtin", replay=0))
    assert api.adapt(resumed, api.AdaptationOptions(base="builtin")).step == 4
