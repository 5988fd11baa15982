import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nmflowgan.config import Config, FlowConfig, from_dict, load_config, paper, save_config, small, to_dict
from nmflowgan.errors import BadInputError


@pytest.mark.parametrize("make", [paper, small])
def test_presets_round_trip_through_json(make, tmp_path):
    config = make()
    assert from_dict(Config, json.loads(json.dumps(to_dict(config)))) == config
    save_config(config, tmp_path / "c.json")
    assert load_config(tmp_path / "c.json") == config


def test_paper_preset_matches_the_official_configuration():
    config = paper()
    assert config.model.flow.spec == "UD|NE|SAL|SDL|CL2|SAL|SDL|CL2"
    assert config.model.flow.conv_features == 16
    assert (config.model.refiner.depth, config.model.refiner.width) == (5, 64)
    assert (config.train.patch_px, config.train.batch_size, config.train.lr) == (96, 128, 1e-4)
    assert (config.train.weight_nll, config.train.weight_gan, config.train.gp_lambda) == (1.0, 1.0, 10.0)
    assert config.train.generator_every == 5
    assert config.model.iso_mode == "onehot" and config.critic.variant == "paper"
    assert (config.denoiser.depth, config.denoiser.width) == (18, 64)


def test_unknown_keys_and_bad_values_are_refused(tmp_path):
    data = to_dict(small())
    data["train"]["learning_rate"] = 1
    with pytest.raises(BadInputError, match="learning_rate"):
        from_dict(Config, data)
    with pytest.raises(BadInputError, match="XYZ"):
        FlowConfig(spec="UD|NE|XYZ")
    with pytest.raises(BadInputError, match="must start"):
        FlowConfig(spec="SAL|NE")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(BadInputError, match="bad.json"):
        load_config(tmp_path / "bad.json")


def test_missing_keys_are_refused_by_name(tmp_path):
    data = to_dict(small())
    del data["model"]["refiner"]["preserve_variance"]
    with pytest.raises(BadInputError, match=r"Config.model.refiner lacks the keys \['preserve_variance'\]"):
        from_dict(Config, data)
    (tmp_path / "old.json").write_text(json.dumps(data))
    with pytest.raises(BadInputError, match="old.json.*preserve_variance"):
        load_config(tmp_path / "old.json")


@given(st.integers(1, 64), st.integers(1, 8), st.sampled_from(["onehot", "continuous"]))
def test_any_valid_config_round_trips(width, depth, iso_mode):
    config = dataclasses.replace(small(), model=dataclasses.replace(
        small().model, iso_mode=iso_mode,
        refiner=dataclasses.replace(small().model.refiner, width=width, depth=depth)))
    assert from_dict(Config, to_dict(config)) == config
