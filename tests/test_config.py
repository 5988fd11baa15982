import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nmflowgan.config import (
    SMALL_GAN,
    SMALL_REFINER,
    Config,
    FlowConfig,
    from_dict,
    load_config,
    paper,
    save_config,
    small,
    to_dict,
)
from nmflowgan.errors import BadInputError


@pytest.mark.parametrize("make", [paper, small])
def test_presets_round_trip_through_json(make, tmp_path):
    config = make()
    assert from_dict(Config, json.loads(json.dumps(to_dict(config)))) == config
    save_config(config, tmp_path / "c.json")
    assert load_config(tmp_path / "c.json") == config


def test_paper_preset_builds_the_official_networks():
    """What the networks built from ``paper`` are, not the literals typed in config.py: the flow's layers in
    the official order, one-hot ISO tables in CL2, no latent filter, a 5-level UNet from 64 to 1024 channels
    that starts as the identity, a critic that takes the official 96x96 patches only."""
    import torch

    from nmflowgan.flows.affine import ConditionalLinear, SignalAwareAffine, SignalDependentAffine
    from nmflowgan.flows.dequantize import NoiseExtraction, UniformDequantization
    from nmflowgan.models.critic import Critic
    from nmflowgan.models.noise_model import NoiseModel

    config = paper()
    model = NoiseModel(config.model)
    expected = [UniformDequantization, NoiseExtraction] + [SignalAwareAffine, SignalDependentAffine,
                                                           ConditionalLinear] * 2
    assert [type(layer) for layer in model.flow.layers] == expected
    tables = [layer.log_scale for layer in model.flow.layers if isinstance(layer, ConditionalLinear)]
    assert all(t.shape == (len(model.cameras) * len(model.isos), 3) for t in tables)  # a row per camera/ISO
    assert model.correlation is None
    widths = [block[0].out_channels for block in model.refiner.down]
    assert widths == [64, 128, 256, 512, 1024]
    noise, clean = torch.randn(1, 3, 40, 40) * 9, torch.rand(1, 3, 40, 40)
    assert torch.equal(model.refiner(noise, clean, None), noise)
    critic = Critic(config.gan.critic, model.space.feature_dim)
    assert critic(torch.randn(2, 3, 96, 96), torch.rand(2, 3, 96, 96)).shape == (2,)
    with pytest.raises(BadInputError, match="96x96"):
        critic(torch.randn(1, 3, 64, 64), torch.rand(1, 3, 64, 64))


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
    data = to_dict(paper())
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
        refiner=dataclasses.replace(SMALL_REFINER, width=width, depth=depth)))
    assert from_dict(Config, to_dict(config)) == config


def _written_before_gan_config(config: Config) -> dict:
    """``config`` as JSON in the form of versions before GanConfig: a top-level critic and the game's fields (with
    ``weight_gan`` 0 for no game) in ``train``."""
    data = to_dict(config)
    gan = data.pop("gan")
    game = gan or to_dict(SMALL_GAN) | {"weight": 0.0}
    data["critic"] = game["critic"]
    data["train"].update(weight_gan=game["weight"], gp_lambda=game["gp_lambda"],
                         generator_every=game["generator_every"], flow_warmup_steps=game["flow_warmup_steps"],
                         critic_lr=game["critic_lr"], refiner_lr=game["refiner_lr"])
    return data


@pytest.mark.parametrize("make", [paper, small])
def test_a_config_file_from_before_the_gan_section_loads_as_the_same_config(make, tmp_path):
    (tmp_path / "old.json").write_text(json.dumps(_written_before_gan_config(make())))
    assert load_config(tmp_path / "old.json") == make()  # small's weight_gan 0 is no game at all
