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
