"""Shared fixtures: float64 helpers and small condition spaces."""

import numpy as np
import pytest
import torch

from nmflowgan.conditions import GRID_PX, ConditionSpace
from nmflowgan.data.io import write_png
from nmflowgan.data.pairs import PairRecord


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(params=["onehot", "continuous"])
def space(request) -> ConditionSpace:
    return ConditionSpace(("IP", "S6", "N6"), (100, 800, 3200), request.param)


@pytest.fixture(scope="session")
def simcam_tree(tmp_path_factory):
    """A small simcam data set shared by the data, training and evaluation tests:
    6 scenes of 64 px, cameras V1 and V2, ISOs 100 and 1600 (both captures of every pair)."""
    from nmflowgan.data.simcam import simulate

    root = tmp_path_factory.mktemp("simcam") / "data"
    return simulate(root, cameras=["V1", "V2"], isos=[100, 1600], scenes=6, size_px=64, seed=3, progress=False)


def tiny_config():
    """The ``small`` preset shrunk further so that a training step takes milliseconds, with the adversarial
    game on (``small`` turns it off) so that every training path is exercised."""
    import dataclasses

    from nmflowgan.config import SMALL_GAN, CriticConfig, DenoiserConfig, FlowConfig, ModelConfig, RefinerConfig, small

    config = small()
    return dataclasses.replace(
        config, name="tiny",
        model=ModelConfig(FlowConfig(conv_features=4, receptive_field_px=3, meta_hidden=4, meta_blocks=1),
                          RefinerConfig(depth=2, width=4, sees_clean=True), "continuous"),
        train=dataclasses.replace(config.train, patch_px=32, stride_px=32, batch_size=4, val_every=4,
                                  val_patches=8, lr_decay_every=6),
        gan=dataclasses.replace(SMALL_GAN, critic=CriticConfig(variant="any", width=4), flow_warmup_steps=2,
                                generator_every=2),
        denoiser=DenoiserConfig(depth=3, width=8),
        denoiser_train=dataclasses.replace(config.denoiser_train, patch_px=32, stride_px=32, batch_size=4,
                                           lr_decay_every=6),
    )


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory):
    """An untrained ``small`` model of camera V1 at ISO 100-1600, saved."""
    from nmflowgan.models.noise_model import NoiseModel

    return NoiseModel.from_preset("small", cameras=("V1",), isos=(100, 1600)).save(
        tmp_path_factory.mktemp("model") / "model")


def write_image(path, value=90, size=16):
    """A flat ``size`` x ``size`` RGB PNG of ``value`` at ``path``."""
    import numpy as np

    from nmflowgan.data.io import write_png

    write_png(path, np.full((size, size, 3), value, np.uint8))
    return path


def synthesize_cli(model_dir, source, out, *extra):
    """``nmflowgan synthesize`` at camera V1, ISO 400: its exit status."""
    from nmflowgan.cli import main

    return main(["synthesize", "--checkpoint", str(model_dir), "--camera", "V1", "--iso", "400", "--quiet", *extra,
                 str(source), str(out)])


def exit_code(arguments):
    """``nmflowgan``'s status for ``arguments``, including argparse's refusals (SystemExit 2)."""
    from nmflowgan.cli import main

    try:
        return main(arguments)
    except SystemExit as exit_:
        return exit_.code


@pytest.fixture
def coordinate_pair(tmp_path):
    """A 40 x 56 pair whose noisy image records each pixel's frame position modulo 8 (red the row, green the column)."""
    rows, columns = np.meshgrid(np.arange(40) % GRID_PX, np.arange(56) % GRID_PX, indexing="ij")
    noisy = np.stack([rows, columns, np.zeros_like(rows)], axis=-1).astype(np.uint8)
    write_png(tmp_path / "clean.png", np.full_like(noisy, 100))
    write_png(tmp_path / "noisy.png", noisy)
    return PairRecord(tmp_path / "clean.png", tmp_path / "noisy.png", "V1", 100.0)
