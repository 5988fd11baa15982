"""nmflowgan: realistic camera-noise synthesis with NM-FlowGAN (Han & Yu, arXiv 2312.10112).

Public API: :class:`NoiseModel`, :class:`SamplingOptions`, :class:`SynthesizedPairs` (noisy/clean pairs on the
fly for any PyTorch training), the configuration dataclasses and the ``paper`` / ``small`` presets.
"""

__version__ = "0.1.0"

from nmflowgan.config import Config, paper, preset, small  # noqa: E402
from nmflowgan.models.noise_model import NoiseModel  # noqa: E402
from nmflowgan.models.sampler import SamplingOptions  # noqa: E402
from nmflowgan.synthesis import SynthesizedPairs  # noqa: E402

__all__ = ["Config", "NoiseModel", "SamplingOptions", "SynthesizedPairs", "__version__", "paper", "preset", "small"]
