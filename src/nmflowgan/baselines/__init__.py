"""Noise models with no learning: closed-form fits to the training noise, for comparison."""

from nmflowgan.baselines.gaussian import GaussianNoise
from nmflowgan.baselines.nlf import HeteroscedasticNoise

__all__ = ["GaussianNoise", "HeteroscedasticNoise"]
