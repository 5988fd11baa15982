"""Shared fixtures: float64 helpers and small condition spaces."""

import pytest
import torch

from nmflowgan.conditions import ConditionSpace


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
