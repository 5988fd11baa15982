"""The study scripts under docs/studies run, and what they measure holds at a tiny size."""

import importlib.util
from pathlib import Path

import torch

STUDY = Path(__file__).resolve().parents[1] / "docs" / "studies" / "kld_and_correlation.py"


def _load_study():
    spec = importlib.util.spec_from_file_location("kld_and_correlation", STUDY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_decorrelated_takes_every_value_from_one_of_the_draws_and_removes_correlation():
    study = _load_study()
    g = torch.Generator().manual_seed(0)
    field = torch.randn(4, 2, 3, 65, 65, generator=g)
    draws = (field[..., 1:, 1:] + field[..., :-1, :-1] + field[..., 1:, :-1]) / 3  # lag-1 correlation ~0.33
    mixed = study.decorrelated(draws, g)
    assert mixed.shape == draws.shape[1:]
    assert ((mixed[None] == draws).any(dim=0)).all()
    assert study.lag1(draws[0]) > 0.25 and abs(study.lag1(mixed)) < 0.15


def test_the_true_correlated_noise_scores_a_higher_kld_than_its_decorrelated_twin():
    rows = _load_study().simulator_part(draws=4, scenes=1)
    assert rows["oracle"][1] > 0.3 and rows["decorrelated oracle"][1] < 0.2  # lag-1 correlations
    assert rows["decorrelated oracle"][0] < rows["oracle"][0]  # KLD
