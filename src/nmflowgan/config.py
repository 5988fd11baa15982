"""Typed configuration: one frozen dataclass per component, two named presets, JSON as the only disk form.

``paper()`` holds the architecture and hyper-parameters of the official NM-FlowGAN code (Han & Yu,
arXiv 2312.10112); ``small()`` fits a 2-core CPU in minutes. Override fields with
``dataclasses.replace``. ``from_dict(to_dict(c)) == c`` for every config, and unknown or missing keys are refused.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from nmflowgan.conditions import GRID_PX, ISO_MODES
from nmflowgan.errors import BadInputError

FLOW_LAYER_NAMES = ("UD", "NE", "SAL", "SDL", "CL2", "RQS")
LR_DECAY_UNITS = ("epoch", "step", "run")


AUGMENTATIONS = ("all", "flips", "none")  # what nmflowgan.data.patches.PatchDataset applies


def _check_grid(config: object, name: str) -> None:
    """Raises unless the field ``name`` of ``config`` is 0 (no grid) or a period (> 1) that divides the grid that
    pixels carry (:data:`~nmflowgan.conditions.GRID_PX`)."""
    value = getattr(config, name)
    periods = [p for p in range(2, GRID_PX + 1) if GRID_PX % p == 0]
    if value != 0 and value not in periods:
        raise BadInputError(f"{name} must be 0 (none) or a grid period of {', '.join(map(str, periods))} pixels, "
                            f"got {value}")


def _check_positive(owner: object, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        if not value > 0:
            raise BadInputError(f"{type(owner).__name__}.{name} must be > 0, got {value!r}")


@dataclass(frozen=True)
class FlowConfig:
    """The pixel-wise conditional flow.

    Attributes:
        spec: layer names joined by ``|``, applied noisy -> z: ``UD`` uniform dequantization, ``NE``
            noise extraction, ``SAL`` signal-aware affine, ``SDL`` signal-dependent affine, ``CL2``
            conditional linear, ``RQS`` conditional monotone rational-quadratic spline (non-affine).
        conv_features: width of the convolutional scale/bias networks of SAL and SDL.
        receptive_field_px: receptive field of SAL's spatial convolutions (odd, >= 3).
        meta_hidden: width of the residual MLP that embeds the condition.
        meta_blocks: residual blocks of that MLP.
        sdl_embedding: channels of the condition embedding that SDL concatenates to the clean image.
        grid_px: the period of the camera's grid that SAL, SDL and RQS read (a learned value per grid position added
            to their first hidden layer, :class:`~nmflowgan.condition_input.GridPosition`): 2 the colour-filter
            array, 8 the JPEG blocks (which also tells the 2x2 phase); 0: none, the noise is the same at every
            place of the frame (the paper's model).
        camera_adapters: every hidden layer of SAL, SDL and RQS also gets a scale and a shift per camera
            (:class:`~nmflowgan.condition_input.CameraModulation`, zero at start): what ``adapt --adapt adapters``
            trains for a new camera, so that the base's cameras keep their noise exactly.
        camera_grid_px: SAL, SDL and RQS also add a learned value per camera and per position in a grid of this period
            to their first hidden layer (:class:`~nmflowgan.condition_input.CameraGrid`, zero at start): what ``adapt
            --adapt adapters`` gives a new camera so that its noise can follow its own grid; 0: none.
    """

    spec: str = "UD|NE|SAL|SDL|CL2|SAL|SDL|CL2"
    conv_features: int = 16
    receptive_field_px: int = 9
    meta_hidden: int = 5
    meta_blocks: int = 3
    sdl_embedding: int = 3
    grid_px: int = 0
    camera_adapters: bool = False
    camera_grid_px: int = 0

    def __post_init__(self) -> None:
        names = self.layer_names
        unknown = [n for n in names if n not in FLOW_LAYER_NAMES]
        if unknown:
            raise BadInputError(
                f"unknown flow layer(s) {unknown} in spec {self.spec!r}; known: {', '.join(FLOW_LAYER_NAMES)}"
            )
        prefix = tuple(n for n in names if n in ("UD", "NE"))
        if "NE" not in names or names[: len(prefix)] != prefix:
            raise BadInputError(f"flow spec {self.spec!r} must start with [UD|]NE before the affine layers")
        if self.receptive_field_px < 3 or self.receptive_field_px % 2 == 0:
            raise BadInputError(f"receptive_field_px must be odd and >= 3, got {self.receptive_field_px}")
        _check_positive(self, "conv_features", "meta_hidden", "meta_blocks", "sdl_embedding")
        _check_grid(self, "grid_px")
        _check_grid(self, "camera_grid_px")

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.spec.split("|"))


@dataclass(frozen=True)
class RefinerConfig:
    """The UNet that turns pixel-wise noise into spatially correlated noise (residual).

    Attributes:
        depth: resolution levels (``depth - 1`` poolings).
        width: channels of the first level, doubled at every level.
        sees_clean: also feed the clean image (the official code feeds the noise alone).
        sees_condition: also feed the camera/ISO features as constant channels, so the correlation it
            adds can differ by camera and ISO (the official code's refiner is unconditional).
        preserve_variance: rescale the refined noise so that its local second moment (7x7 Gaussian
            window) equals that of the flow's sample: the flow's NLL already fits the per-pixel
            distribution, and the refiner then only redistributes it in space instead of inflating it.
        noise_scale: noise enters as ``noise / noise_scale`` and the residual leaves times it (8-bit
            units). 256 (the official code) maps the full 8-bit range to [-1, 1]; a scale near the noise's
            own size (16) gives a freshly initialized UNet inputs of unit size, which short runs need.
    """

    depth: int = 5
    width: int = 64
    sees_clean: bool = False
    sees_condition: bool = False
    preserve_variance: bool = False
    noise_scale: float = 256.0

    def __post_init__(self) -> None:
        _check_positive(self, "depth", "width", "noise_scale")


@dataclass(frozen=True)
class CriticConfig:
    """The WGAN critic on (noise, clean).

    Attributes:
        variant: ``"paper"`` (fixed 96x96 input, instance norm, flatten) or ``"any"`` (any patch of at
            least 32x32, global average pooling, no normalization as WGAN-GP recommends).
        width: channels of the first convolution.
        noise_scale: the critic reads ``noise / noise_scale`` (8-bit units), and the gradient penalty is
            measured in those units.
        sees_condition: also read the camera/ISO features (a conditional critic can tell one camera's
            noise from another's; the official critic sees noise and clean image only).
    """

    variant: str = "any"
    width: int = 64
    noise_scale: float = 256.0
    sees_condition: bool = False

    def __post_init__(self) -> None:
        if self.variant not in ("paper", "any"):
            raise BadInputError(f"critic variant {self.variant!r} is not 'paper' or 'any'")
        _check_positive(self, "width", "noise_scale")


@dataclass(frozen=True)
class DenoiserConfig:
    """DnCNN: ``depth`` convolutions of ``width`` features predicting the noise (residual learning)."""

    depth: int = 18
    width: int = 64
    batch_norm: bool = True

    def __post_init__(self) -> None:
        if self.depth < 2:
            raise BadInputError(f"DnCNN depth must be >= 2, got {self.depth}")
        _check_positive(self, "width")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a :class:`~nmflowgan.models.noise_model.NoiseModel`.

    Attributes:
        flow: the pixel-wise flow.
        refiner: the UNet refiner that the adversarial game trains; None: a model without one (nothing to
            train it with ``weight_gan=0``).
        iso_mode: ``onehot`` (the paper) or ``continuous`` (normalized log-ISO, interpolates).
        correlation_px: side of the latent correlation filter (:mod:`nmflowgan.models.correlation`), which
            gives the flow's sample the real noise's spatial and cross-channel correlation without changing
            its per-pixel distribution; 0: none (the paper's model).
        correlation_grid_px: one latent filter per position in a grid of this period (2: one per colour-filter
            phase); 0: one filter everywhere.
        correlation_content: one latent filter per content class of the clean image as well (flat, or which way
            its gradient runs; :func:`~nmflowgan.models.correlation.content_classes`), so that the noise's
            correlation may differ on edges and in flat areas.
    """

    flow: FlowConfig = field(default_factory=FlowConfig)
    refiner: RefinerConfig | None = field(default_factory=RefinerConfig)
    iso_mode: str = "continuous"
    correlation_px: int = 0
    correlation_grid_px: int = 0
    correlation_content: bool = False

    def __post_init__(self) -> None:
        if self.iso_mode not in ISO_MODES:
            raise BadInputError(f"iso_mode {self.iso_mode!r} is not one of {ISO_MODES}")
        if self.correlation_px < 0 or (self.correlation_px and self.correlation_px % 2 == 0):
            raise BadInputError(f"correlation_px must be 0 or odd, got {self.correlation_px}")
        _check_grid(self, "correlation_grid_px")
        if self.correlation_grid_px and not self.correlation_px:
            raise BadInputError("correlation_grid_px needs a latent filter (correlation_px)")
        if self.correlation_content and not self.correlation_px:
            raise BadInputError("correlation_content needs a latent filter (correlation_px)")


@dataclass(frozen=True)
class ScheduleConfig:
    """What every training shares: patches, batch, learning rate and its step decay, default length.

    Attributes:
        patch_px: square patch side; stride_px: patch grid stride.
        batch_size: global batch (split across ranks).
        lr: Adam learning rate.
        lr_decay_every: learning rate is multiplied by ``lr_gamma`` every this many ``lr_decay_unit``
            (``epoch`` or ``step``); with ``run``, the run is cut into this many equal parts and the rate is
            multiplied at the start of each part after the first (a decay that follows the run's own length).
        epochs: default length when neither ``--steps`` nor ``--epochs`` is given.
    """

    patch_px: int = 96
    stride_px: int = 48
    batch_size: int = 128
    lr: float = 1e-4
    lr_decay_every: int = 10
    lr_decay_unit: str = "epoch"
    lr_gamma: float = 0.5
    epochs: int = 40

    def __post_init__(self) -> None:
        _check_positive(self, "patch_px", "stride_px", "batch_size", "lr", "lr_decay_every", "epochs")
        if self.lr_decay_unit not in LR_DECAY_UNITS:
            raise BadInputError(f"lr_decay_unit {self.lr_decay_unit!r} is not one of {', '.join(LR_DECAY_UNITS)}")


@dataclass(frozen=True)
class TrainConfig(ScheduleConfig):
    """Noise-model training by the NLL of the real noise (the schedule fields as in :class:`ScheduleConfig`; the
    adversarial game, when there is one, is :class:`GanConfig`).

    Attributes:
        betas: Adam betas.
        weight_nll: weight of the NLL loss; weight_correlation: weight of the latent-correlation loss (models with
            ``correlation_px``).
        val_every: steps between validation passes; val_patches: patches per validation.
        censor_ends: score noisy values of 0 and 255 as clipped (the probability of every value beyond, see
            :meth:`~nmflowgan.flows.flow.NoiseFlow.latent_and_log_prob`) instead of as a density (the paper's NLL).
        augment: the symmetries a training patch may be given: ``all`` (flips and quarter turns), ``flips`` (only
            those that keep rows as rows), ``none``. The latent correlation is fitted on each patch turned back to
            the camera's orientation whatever it was given, so a correlation per grid phase may still differ to the
            left and to the right (as it does where demosaicing or JPEG's chroma pairs pixels); the symmetries only
            change what the flow sees.
    """

    betas: tuple[float, float] = (0.9, 0.999)
    weight_nll: float = 1.0
    weight_correlation: float = 1.0
    val_every: int = 1000
    val_patches: int = 256
    censor_ends: bool = False
    augment: str = "all"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(self, "val_every", "val_patches")
        if self.augment not in AUGMENTATIONS:
            raise BadInputError(f"augment {self.augment!r} is not one of {', '.join(AUGMENTATIONS)}")


@dataclass(frozen=True)
class GanConfig:
    """The adversarial game that trains the refiner (WGAN-GP, as NM-FlowGAN): a config without one trains the
    flow (and latent correlation) by their own losses alone, and its model needs no refiner.

    Attributes:
        critic: the critic's architecture.
        weight: weight of the adversarial loss beside the NLL; gp_lambda: gradient-penalty weight.
        generator_every: the flow and refiner are updated every this many critic steps.
        flow_warmup_steps: steps of NLL-only training of the flow before the game starts (0 in the paper; a
            short CPU run starts the game on a flow that already fits).
        critic_lr / refiner_lr: the critic's and the refiner's rates (None: the training's ``lr``). The refiner's
            output is scaled into 8-bit units, so a short high-rate CPU run needs a lower rate there than the flow.
    """

    critic: CriticConfig = field(default_factory=CriticConfig)
    weight: float = 1.0
    gp_lambda: float = 10.0
    generator_every: int = 5
    flow_warmup_steps: int = 0
    critic_lr: float | None = None
    refiner_lr: float | None = None

    def __post_init__(self) -> None:
        _check_positive(self, "weight", "generator_every")
        if self.flow_warmup_steps < 0:
            raise BadInputError(f"flow_warmup_steps must be >= 0, got {self.flow_warmup_steps}")


@dataclass(frozen=True)
class DenoiserTrainConfig(ScheduleConfig):
    """Denoiser training: L2 on clean patches with synthesized noisy partners (fields of :class:`ScheduleConfig`;
    the paper halves the rate every 5 epochs)."""

    lr_decay_every: int = 5


@dataclass(frozen=True)
class Config:
    """A whole preset: noise model and its training (with its adversarial game, or None), denoiser and its
    training."""

    name: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    gan: GanConfig | None = field(default_factory=GanConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    denoiser_train: DenoiserTrainConfig = field(default_factory=DenoiserTrainConfig)


def paper() -> Config:
    """The official NM-FlowGAN configuration (flow ``UD|NE|SAL|SDL|CL2|SAL|SDL|CL2`` with 16 conv
    features, UNet depth 5 / width 64, 96x96 patches, batch 128, Adam 1e-4 halved every 10 epochs,
    1*NLL + 1*WGAN-GP with lambda 10, generator every 5th step, one-hot ISO; DnCNN 18x64, Adam 1e-4
    halved every 5 epochs)."""
    return Config(
        name="paper",
        model=ModelConfig(FlowConfig(), RefinerConfig(depth=5, width=64, sees_clean=False), "onehot"),
        train=TrainConfig(),
        gan=GanConfig(critic=CriticConfig(variant="paper", width=64)),
        denoiser=DenoiserConfig(depth=18, width=64, batch_norm=True),
        denoiser_train=DenoiserTrainConfig(),
    )


# The refiner and the game that the ``small`` preset would train with an adversarial game: a run turns it on by
# setting ``model.refiner`` to SMALL_REFINER and ``gan`` to SMALL_GAN.
SMALL_REFINER = RefinerConfig(depth=3, width=16, sees_clean=True, preserve_variance=True, noise_scale=16.0)
SMALL_GAN = GanConfig(critic=CriticConfig(variant="any", width=16, noise_scale=16.0), generator_every=5,
                      flow_warmup_steps=300, critic_lr=2e-4, refiner_lr=3e-4)


def small() -> Config:
    """A configuration that trains on a 2-core CPU in minutes: the paper's flow layers and a conditional spline
    (``RQS``, which gives the noise the skew and tails of real sRGB noise: on simcam it took validation KLD from
    0.022 to 0.015, docs/realism.md), on latents correlated by a 5x5 latent-correlation filter (learned from the
    real noise's latents), continuous log-ISO, 48x48 patches in batches of 16, flow rate 1e-3; noisy values of 0
    and 255 scored as clipped (``censor_ends``: on simcam the flow's KLD 0.0101 -> 0.0096 and its skewness matched
    the real noise's in 76% of the intensity cells instead of 66%). Every pixel knows its place in the camera's
    8x8 grid (``grid_px=8``) and the latent filter is one per 2x2 colour-filter phase (``correlation_grid_px=2``),
    fitted on training patches turned back upright; patches are only flipped (``augment="flips"``), so rows stay
    rows. On simcam this took the per-phase std error 0.19 -> 0.03, the 8x8 spread's error 0.16 -> 0.01 and the
    neighbour KLD 0.084 -> 0.028; on polyu the JPEG grid's 0.061 -> 0.017 and KLD 0.0607 -> 0.0543 (one seed,
    docs/realism.md "Round four").

    No adversarial refiner (``refiner=None``, ``gan=None``): at this training length it cost KLD without adding
    correlation that the latent filter had not already added (docs/realism.md). The settings for runs that turn it
    on stay: :data:`SMALL_REFINER` (a 3-level UNet of width 16 that sees the clean image and preserves the flow's
    local variance) and :data:`SMALL_GAN` (a width-16 critic, noise read at scale 16 by both, 300 steps of flow
    warm-up, a gentler critic (2e-4) and refiner (3e-4) than flow); Adam betas (0.5, 0.9) as usual for WGAN-GP."""
    return Config(
        name="small",
        model=ModelConfig(FlowConfig(spec="UD|NE|SAL|SDL|CL2|SAL|SDL|CL2|RQS", conv_features=16, meta_hidden=16,
                                     meta_blocks=1, grid_px=8), None, "continuous", correlation_px=5,
                          correlation_grid_px=2),
        train=TrainConfig(
            patch_px=48, stride_px=48, batch_size=16, lr=1e-3, betas=(0.5, 0.9), lr_decay_every=2000,
            lr_decay_unit="step", lr_gamma=0.5, epochs=1, val_every=100, val_patches=64, censor_ends=True,
            augment="flips",
        ),
        gan=None,
        denoiser=DenoiserConfig(depth=8, width=32, batch_norm=True),
        denoiser_train=DenoiserTrainConfig(
            patch_px=48, stride_px=48, batch_size=16, lr=1e-3, lr_decay_every=500, lr_decay_unit="step",
            epochs=1,
        ),
    )


PRESETS = {"paper": paper, "small": small}


def preset(name: str) -> Config:
    """Returns the preset called ``name`` (``paper`` or ``small``)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise BadInputError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None


def to_dict(config: object) -> dict:
    """Plain-JSON form of any config dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


# Keys added to a config class after configs were written without them, with the value that such a config meant
# (the behaviour before the key existed): a built-in model or a saved config from before loads as what it was.
ADDED_LATER: dict[tuple[str, str], object] = {
    ("FlowConfig", "grid_px"): 0,
    ("FlowConfig", "camera_adapters"): False,
    ("FlowConfig", "camera_grid_px"): 0,
    ("ModelConfig", "correlation_grid_px"): 0,
    ("ModelConfig", "correlation_content"): False,
    ("TrainConfig", "augment"): "all",
}


def from_dict(cls: type, data: dict, where: str = "") -> object:
    """Rebuilds a config dataclass from :func:`to_dict`'s output, refusing unknown or missing keys.

    A config written by another version that lacks a key is refused, naming it, rather than silently
    taking today's default: the model it describes would not be the one that was trained. The exceptions are the
    keys of :data:`ADDED_LATER`, whose absence says what the config meant before they existed.
    """
    where = where or cls.__name__
    if not isinstance(data, dict):
        raise BadInputError(f"{where} must be a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise BadInputError(f"unknown {where} keys: {sorted(unknown)}; known: {sorted(fields)}")
    data = {**{name: value for (owner, name), value in ADDED_LATER.items() if owner == cls.__name__}, **data}
    missing = [name for name in fields if name not in data]
    if missing:
        raise BadInputError(f"{where} lacks the keys {missing} (a config from another nmflowgan version?); "
                            "every key must be given")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        nested = next((o for o in options if dataclasses.is_dataclass(o)), None)
        if nested is not None and not (value is None and type(None) in options):
            kwargs[name] = from_dict(nested, value, f"{where}.{name}")
        else:
            kwargs[name] = _typed(value, hint, f"{where}.{name}")
    return cls(**kwargs)


def _typed(value: object, hint: object, where: str) -> object:
    """``value`` checked against a field's type (``int``, ``float``, ``bool``, ``str``, ``X | None``,
    ``tuple[...]``) before any network is built from it: ``depth=2.5`` or ``width="64"`` is refused, naming
    the key, instead of failing (or allocating) somewhere inside PyTorch. Floats must be finite."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    kind = next(o for o in options if o is not type(None))
    if typing.get_origin(kind) is tuple:
        items = typing.get_args(kind)
        if not isinstance(value, list | tuple) or len(value) != len(items):
            raise BadInputError(f"{where} must be a list of {len(items)} values, got {value!r}")
        return tuple(_typed(v, t, f"{where}[{i}]") for i, (v, t) in enumerate(zip(value, items)))
    accepted = {int: (int,), float: (int, float), bool: (bool,), str: (str,)}[kind]
    if isinstance(value, bool) is not (kind is bool) or not isinstance(value, accepted):
        raise BadInputError(f"{where} must be {'an' if kind is int else 'a'} {kind.__name__}, got {value!r}")
    if kind is float:
        value = float(value)
        if not math.isfinite(value):
            raise BadInputError(f"{where} must be a finite number, got {value!r}")
    return value


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_dict(config), indent=2) + "\n")


def load_config(path: str | Path) -> Config:
    """Reads a config JSON file, naming the file in any error."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadInputError(f"{path}: cannot read config JSON ({error})") from None
    except RecursionError:
        raise BadInputError(f"{path}: cannot read config JSON (nested too deeply)") from None
    try:
        return from_dict(Config, upgraded(data))  # type: ignore[return-value]
    except BadInputError as error:
        raise BadInputError(f"{path}: {error}") from None


# The adversarial game's fields as configs before GanConfig held them: the key in ``train`` -> GanConfig's.
_LEGACY_GAN_FIELDS = {"weight_gan": "weight", "gp_lambda": "gp_lambda", "generator_every": "generator_every",
                      "flow_warmup_steps": "flow_warmup_steps", "critic_lr": "critic_lr", "refiner_lr": "refiner_lr"}


def upgraded(data: object) -> object:
    """A whole config's JSON as this version reads it: a config written before :class:`GanConfig` (a top-level
    ``critic`` and the game's fields in ``train``) gets a ``gan`` section built from them, or ``None`` where its
    ``weight_gan`` was 0. Anything else is returned as it is (and checked by :func:`from_dict`)."""
    if not isinstance(data, dict) or "gan" in data or "critic" not in data or not isinstance(data.get("train"), dict):
        return data
    data, train = dict(data), dict(data["train"])
    gan = {new: train.pop(old) for old, new in _LEGACY_GAN_FIELDS.items() if old in train}
    gan["critic"] = data.pop("critic")
    data["train"] = train
    data["gan"] = gan if gan.get("weight", 1.0) else None
    return data
