"""A saved noise model that was tampered with or describes an absurd network is refused, naming the file,
before any network is built or any output written."""

import json
import re
import time

import pytest
import torch
from safetensors.torch import load_file, save_file
from tests.conftest import synthesize_cli, tiny_config, write_image

from nmflowgan.cli import main
from nmflowgan.config import SMALL_REFINER, load_config, to_dict
from nmflowgan.errors import BadInputError, CheckpointError
from nmflowgan.models.noise_model import NoiseModel
from nmflowgan.synthesis import synthesize

# ---- 1 and 8: tiles --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value", "message"), [
    ("width", 200000, "parameters, more than the limit"), ("depth", 2.5, "depth must be an int, got 2.5"),
    ("width", "64", "width must be an int"), ("sees_clean", 1, "sees_clean must be a bool"),
    ("noise_scale", float("nan"), "noise_scale must be a finite number")])
def test_a_model_description_is_validated_before_any_network_is_built(small_model_dir, tmp_path, key, value, message):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((small_model_dir / "model.safetensors").read_bytes())
    meta = json.loads((small_model_dir / "model.json").read_text())
    meta["config"]["refiner"] = {**to_dict(SMALL_REFINER), key: value}
    (folder / "model.json").write_text(json.dumps(meta))
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=f"model.json: invalid model description.*{message}"):
        NoiseModel.load(folder)
    assert time.perf_counter() - start < 5


def test_deeply_nested_json_is_refused_in_one_line(small_model_dir, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(CheckpointError, match="model.json: unreadable checkpoint description .nested too deeply"):
        NoiseModel.load(folder)
    (tmp_path / "config.json").write_text("{\"a\": " * 100000 + "1" + "}" * 100000)
    with pytest.raises(BadInputError, match="config.json: cannot read config JSON .nested too deeply"):
        load_config(tmp_path / "config.json")


def test_a_training_config_over_the_parameter_budget_is_refused(tmp_path, simcam_tree, capsys):
    config = to_dict(tiny_config())
    config["gan"]["critic"]["width"] = 100000
    (tmp_path / "huge.json").write_text(json.dumps(config))
    code = main(["train", "--data", str(simcam_tree), "--config", str(tmp_path / "huge.json"), "--steps", "2",
                 "--out", str(tmp_path / "run"), "--device", "cpu", "--quiet"])
    assert code == 2 and "config 'tiny': describes a network of" in capsys.readouterr().err


def test_non_finite_weights_are_refused_naming_the_file(small_model_dir, tmp_path, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.json").write_text((small_model_dir / "model.json").read_text())
    tensors = load_file(str(small_model_dir / "model.safetensors"))
    tensors = {name: torch.full_like(t, float("nan")) if t.is_floating_point() else t for name, t in tensors.items()}
    save_file(tensors, str(folder / "model.safetensors"))
    assert synthesize_cli(folder, write_image(tmp_path / "in.png"), tmp_path / "out.png") == 2
    assert "model.safetensors: " in capsys.readouterr().err and not (tmp_path / "out.png").exists()
    with pytest.raises(CheckpointError, match="holds non-finite values"):
        NoiseModel.load(folder)


def test_a_model_that_draws_non_finite_noise_writes_nothing(small_model_dir, tmp_path):
    model = NoiseModel.load(small_model_dir)
    with torch.no_grad():  # finite weights whose product overflows
        for parameter in model.flow.parameters():
            parameter.fill_(1e38)
    folder = tmp_path / "overflowing"
    model.save(folder)
    with pytest.raises(CheckpointError, match="non-finite noise"):
        synthesize(folder, write_image(tmp_path / "in.png"), tmp_path / "out.png", ["V1"], [400], progress=False)
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("dtype", [torch.int32, torch.bool])
def test_a_weight_stored_as_integers_or_booleans_is_refused_naming_it(small_model_dir, tmp_path, dtype):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.json").write_text((small_model_dir / "model.json").read_text())
    tensors = load_file(str(small_model_dir / "model.safetensors"))
    name = next(iter(tensors))
    tensors[name] = tensors[name].to(dtype)
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=rf"model.safetensors: {re.escape(name)} is stored as "
                                              rf"{str(dtype).removeprefix('torch.')}, expected float32"):
        NoiseModel.load(folder)
