"""NoiseModel = pixel-wise flow, on latents correlated by a :class:`LatentCorrelation` (when configured), and a
UNet refiner (when configured): the public face of a trained noise model."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nmflowgan.conditions import SIDD_CAMERAS, SIDD_ISOS, Condition, ConditionSpace
from nmflowgan.config import ModelConfig, from_dict, preset, to_dict
from nmflowgan.errors import BadInputError, CheckpointError
from nmflowgan.flows import NoiseFlow
from nmflowgan.flows.flow import latent_like
from nmflowgan.models.composition import ComposedNoise
from nmflowgan.models.correlation import LatentCorrelation
from nmflowgan.models.files import built_within_budget, load_weights, read_meta, resolve_checkpoint_dir, save_module
from nmflowgan.models.image_inputs import as_nchw, to_unit_float
from nmflowgan.models.sampler import Sampler, SamplingOptions
from nmflowgan.models.unet import UNetRefiner

log = logging.getLogger(__name__)
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
FORMAT = "nmflowgan-noise-model"
# The name of the model that ships inside the package (docs/models.md says what it knows and how it was made).
BUILTIN = "builtin"
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "builtin"


class NoiseModel(ComposedNoise):
    """Synthesizes camera noise for a clean image, a camera and an ISO.

    It holds only the parts its config names: the flow always, the latent correlation when
    ``correlation_px`` is set, the refiner when ``refiner`` is set (composed in :class:`ComposedNoise`).

    Args:
        config: architecture (flow, latent correlation, refiner, ISO encoding).
        cameras, isos: the vocabulary the model knows.

    Example:
        >>> model = NoiseModel.from_preset("small")
        >>> clean = torch.full((1, 3, 37, 53), 0.5)
        >>> model.sample(clean, camera="S6", iso=800, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([1, 3, 37, 53])
    """

    def __init__(self, config: ModelConfig, cameras: Sequence[str] = SIDD_CAMERAS,
                 isos: Sequence[float] = SIDD_ISOS) -> None:
        super().__init__()
        self.config = config
        self.space = ConditionSpace(tuple(cameras), tuple(isos), config.iso_mode)
        self.flow = NoiseFlow(config.flow, self.space)
        self.correlation = (LatentCorrelation(config.correlation_px, self.space.feature_dim,
                                              grid_px=config.correlation_grid_px,
                                              content=config.correlation_content)
                            if config.correlation_px else None)
        self.refiner = UNetRefiner(config.refiner, self.space.feature_dim) if config.refiner is not None else None

    @property
    def flow_layers(self) -> nn.ModuleList:
        return self.flow.layers

    @classmethod
    def from_preset(cls, name: str, cameras: Sequence[str] = SIDD_CAMERAS,
                    isos: Sequence[float] = SIDD_ISOS) -> NoiseModel:
        """An untrained model of preset ``name``; the vocabulary defaults to SIDD's cameras and ISOs."""
        return cls(preset(name).model, cameras, isos)

    @property
    def cameras(self) -> tuple[str, ...]:
        return self.space.cameras

    @property
    def isos(self) -> tuple[float, ...]:
        return self.space.isos

    def encode(self, camera: str | Sequence[str], iso: float | Sequence[float], batch_size: int,
               extrapolate: bool = False, grid: torch.Tensor | None = None) -> Condition:
        """Encodes public camera/ISO values (and the pixels' grid positions, :attr:`Condition.grid`) for a batch, on
        the model's device."""
        return self.space.encode(camera, iso, batch_size, extrapolate, grid).to(self._device())

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def draw(self, clean: torch.Tensor, cond: Condition, generator: torch.Generator | None = None,
             temperature: float = 1.0, refine: bool = True, latent: torch.Tensor | None = None,
             options: SamplingOptions | None = None, rounded: bool = True) -> torch.Tensor:
        """The one draw path: noise as a camera records it, ``round(clip(clean * 255 + noise)) - clean * 255``
        (8-bit units), drawn without a graph through the sampling path ``options`` (default: the optimized one;
        ``SamplingOptions.plain()``: the model's own eager float32 :meth:`compose`).

        Args:
            clean: ``(B, 3, H, W)`` in [0, 1]; cond: its encoded condition.
            temperature: the latent's standard deviation; refine: False gives the flow alone on white latents
                (the ``flow-only`` ablation), True the whole model (latent correlation and refiner, those it has).
            latent: a pre-drawn standard-normal latent (then ``generator`` and ``temperature`` are unused).
            rounded: False leaves the clipped noisy value unrounded (the official protocol's scoring).
        """
        if latent is None:
            latent = latent_like(clean, generator) * checked_temperature(temperature)
        options = options or SamplingOptions()
        if options.is_plain:
            noise = self.compose(clean, cond, latent, correlate=refine, refine=refine)
        else:
            noise = self.sampler(options).noise(clean, cond, latent, refine)
        return quantize(clean, noise) if rounded else clip_to_8bit(clean, noise)

    def sampler(self, options: SamplingOptions | None = None) -> Sampler:
        """The model's :class:`Sampler` for ``options``, kept while the weights stay the same.

        A sampler is a folded copy of the weights; it is rebuilt when the options or any weight changed since:
        an optimizer step, ``load_state_dict`` and any edit in place bump a tensor's version counter, and
        ``to()`` gives new tensors. Reading the counters costs microseconds, not a pass over the weights.
        """
        key = (options or SamplingOptions(), weight_versions(self))
        cached = self.__dict__.get("_sampler_cache")
        if cached is None or cached[0] != key:
            cached = (key, Sampler(self, key[0]))
            self.__dict__["_sampler_cache"] = cached  # a plain attribute: not a submodule, not saved
        return cached[1]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_sampler_cache", None)  # rebuilt on demand (a compiled sampler cannot be pickled)
        return state

    @torch.no_grad()
    def sample(self, clean: torch.Tensor | np.ndarray, camera: str | Sequence[str],
               iso: float | Sequence[float], generator: torch.Generator | None = None,
               temperature: float = 1.0, refine: bool = True, extrapolate: bool = False,
               options: SamplingOptions | None = None) -> torch.Tensor | np.ndarray:
        """Returns a noisy version of ``clean``, quantized to 8 bits, in the type and range it came in.

        Args:
            clean: a float tensor ``(B, 3, H, W)`` or ``(3, H, W)`` in [0, 1], a uint8 tensor of those
                shapes (0-255), or a uint8 array ``(H, W, 3)`` / ``(B, H, W, 3)``.
            camera: a camera code for the whole batch, or one per image.
            iso: an ISO for the whole batch, or one per image.
            generator: makes the draw reproducible (same seed, same output on the same device).
            temperature: latent standard deviation; refine: apply the refiner (False: flow only).
            extrapolate: allow a continuous-ISO model to go outside its trained ISO range.
            options: the sampling path (default: optimized; ``SamplingOptions.plain()`` for the reference).

        Returns:
            The noisy image, same shape, dtype and range as ``clean``.
        """
        was_numpy = isinstance(clean, np.ndarray)
        tensor = as_nchw(clean)
        squeeze = tensor.dim() == 3
        if squeeze:
            tensor = tensor.unsqueeze(0)
        is_uint8 = tensor.dtype == torch.uint8
        if tensor.shape[-1] == 0 or tensor.shape[-2] == 0:
            height, width = tensor.shape[-2:]
            raise BadInputError(f"an image of {height}x{width} pixels has no pixel to draw noise on")
        clean01 = to_unit_float(tensor).to(self._device())
        cond = self.encode(camera, iso, clean01.shape[0], extrapolate)
        noisy_255 = clean01 * 255.0 + self.draw(clean01, cond, generator, temperature, refine, options=options)
        # The sum lands on an integer only up to float rounding: round before the cast, which truncates.
        out = noisy_255.round().to(torch.uint8) if is_uint8 else (noisy_255 / 255.0).to(tensor.dtype)
        out = out.to(tensor.device)
        if squeeze:
            out = out.squeeze(0)
        if was_numpy:
            return out.permute(*range(out.dim() - 3), -2, -1, -3).numpy()
        return out

    # ---- persistence: safetensors weights + JSON, never pickle -------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Writes ``model.safetensors`` and ``model.json`` into ``directory`` (atomically)."""
        meta = {"format": FORMAT, "config": to_dict(self.config), "space": self.space.to_dict()}
        return save_module(self, directory, WEIGHTS_FILE, META_FILE, meta)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> NoiseModel:
        """Loads a model saved by :meth:`save`, or the ``best`` (else ``last``) model of a run folder, or the model
        that ships in the package when ``path`` is ``"builtin"`` (docs/models.md).

        Raises:
            CheckpointError: naming the file, when it is missing, corrupt, truncated or of another kind.
        """
        if not isinstance(map_location, str | torch.device):
            raise BadInputError(f"map_location must be a device (a str such as 'cpu' or a torch.device), got "
                                f"{map_location!r}: a noise model's weights hold no device mapping")
        directory = resolve_model_dir(path)
        meta = read_meta(directory / META_FILE, FORMAT)
        try:
            config = from_dict(ModelConfig, meta["config"])
            space = ConditionSpace.from_dict(meta["space"])
            model = built_within_budget(lambda: cls(config, space.cameras, space.isos), str(directory / META_FILE))
        except (KeyError, TypeError, BadInputError) as error:
            raise CheckpointError(f"{directory / META_FILE}: invalid model description ({error})") from None
        load_weights(model, directory / WEIGHTS_FILE)
        return model.to(map_location).eval()


def saved_config(path: str | Path) -> ModelConfig:
    """The architecture of the saved model at ``path`` (as :meth:`NoiseModel.load` finds it), without its weights."""
    directory = resolve_model_dir(path)
    try:
        return from_dict(ModelConfig, read_meta(directory / META_FILE, FORMAT)["config"])
    except (KeyError, TypeError, BadInputError) as error:
        raise CheckpointError(f"{directory / META_FILE}: invalid model description ({error})") from None


def weight_versions(module: nn.Module) -> tuple:
    """What identifies the current weights of ``module``: each tensor's storage, device and version counter
    (which every in-place change bumps). An inference-mode tensor has no counter: its values stand in."""
    return tuple((t.data_ptr(), t.device, t.detach().sum().item() if t.is_inference() else t._version)
                 for t in module.parameters())


def checked_temperature(temperature: float) -> float:
    """``temperature`` (the latent's standard deviation) if it is a finite number >= 0, else BadInputError."""
    if not (isinstance(temperature, int | float) and math.isfinite(temperature) and temperature >= 0):
        raise BadInputError(f"temperature must be a finite number >= 0, got {temperature!r}")
    return float(temperature)


def clip_to_8bit(clean: torch.Tensor, noise_255: torch.Tensor) -> torch.Tensor:
    """The noise left when ``clean * 255 + noise`` is clipped to [0, 255] but not rounded (8-bit units)."""
    noisy = clean * 255.0 + noise_255
    return noisy.clamp(0, 255) - clean * 255.0


def quantize(clean: torch.Tensor, noise_255: torch.Tensor) -> torch.Tensor:
    """Rounds and clips ``clean * 255 + noise`` to 8-bit values and returns the noise that remains.

    The gradient passes straight through, so adversarial training sees the noise a camera would record
    (integer, clipped at 0 and 255) while still reaching the generator's parameters.
    """
    noisy = clean * 255.0 + noise_255
    recorded = noisy.round().clamp(0, 255)
    return noise_255 + (recorded - noisy).detach()


def exact_8bit_noise(noise_255: torch.Tensor, clean_8bit: torch.Tensor, rounded: bool = True) -> torch.Tensor:
    """Noise drawn on an 8-bit clean image, made exactly what a camera records on it, in float64: ``clean + noise``
    clipped to [0, 255] and, where ``rounded``, an integer, minus ``clean``.

    A noise source draws on the clean image as float32 in [0, 1], and :func:`quantize` takes ``clean * 255 + noise``
    from the rounded value in float32, whose round-off reaches 1.5e-5 near 255: a recorded noise of 0 can come out as
    -1e-5. The KLD's bin edges are whole levels (:mod:`nmflowgan.metrics.kld`), so such a value lands a bin too low;
    every score that bins drawn noise against real noise takes it through here first. It moves no value by more
    than that round-off.

    Args:
        noise_255: ``(B, 3, H, W)`` noise in 8-bit units; clean_8bit: the clean image it was drawn on, integer
            values 0-255 (any dtype), same shape.
    """
    clean = clean_8bit.to(noise_255.device, torch.float64)
    noisy = (clean + noise_255.double()).clamp(0, 255)
    return (noisy.round() if rounded else noisy) - clean


def resolve_model_dir(path: str | Path) -> Path:
    """The package's own model for the bare word ``"builtin"`` (a ``str``); else ``path`` itself if it holds a saved
    noise model, else its ``best/`` or ``last/`` sub-folder. A path that exists is that path: ``./builtin``,
    ``builtin/`` or ``Path("builtin")`` name a folder, and where the bare word meets a folder called ``builtin`` in
    the current folder, a warning says which one is used."""
    if isinstance(path, str) and path == BUILTIN:
        if Path(BUILTIN).exists():
            log.warning("'builtin' is the model that ships in the package; the folder ./builtin here is not used "
                        "(write ./builtin to use it)")
        if not (BUILTIN_DIR / META_FILE).is_file():
            raise CheckpointError(f"{BUILTIN_DIR}: the built-in model is missing from this installation of nmflowgan "
                                  "(reinstall the package)")
        return BUILTIN_DIR
    return resolve_checkpoint_dir(path, META_FILE, "noise-model")
