"""The layers through which a network reads the camera/ISO condition, and how a model grows by new cameras.

Every network of a noise model reads the condition features (:attr:`~nmflowgan.conditions.Condition.features`,
a camera one-hot followed by the ISO feature) through one of two layers, and through nothing else:

* :class:`ConditionInput`: a linear map of the features, the first layer of every condition network (the flow
  layers' condition MLPs, CL, the latent correlation);
* :class:`ConditionPlanes`: a convolution of an image's channels followed by the features as constant planes (a
  refiner or critic that sees the condition);

and, in a model that gives cameras parameters of their own (an adapted model, ``FlowConfig.camera_adapters``),
through :class:`CameraModulation`: a scale and a shift per camera of each hidden channel of the flow's networks,
and :class:`CameraGrid`: a value per camera and grid position (``FlowConfig.camera_grid_px``).

In all of them, column ``first_feature + c`` of the weight (axis 1) reads camera ``c``. :func:`grow_cameras` relies
on that alone: it copies a base model into the same architecture over more cameras, starts each new camera's
column as a copy of a base camera's (so the new camera draws exactly that camera's noise), and refuses any other
parameter whose shape changed, so a layer that read the features another way could not be grown wrongly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nmflowgan.conditions import phase_of
from nmflowgan.errors import BadInputError


class ConditionInput(nn.Linear):
    """``(B, D)`` condition features -> ``(B, out_features)``: a linear layer whose every input is a feature."""

    first_feature = 0

    def __init__(self, feature_dim: int, out_features: int) -> None:
        super().__init__(feature_dim, out_features)


class ConditionPlanes(nn.Conv2d):
    """A convolution of ``(B, image_channels + D, H, W)``: an image's channels, then the ``D`` condition features
    as constant planes (:func:`condition_channels`)."""

    def __init__(self, image_channels: int, feature_dim: int, out_channels: int, kernel_size: int, **conv: object
                 ) -> None:
        super().__init__(image_channels + feature_dim, out_channels, kernel_size, **conv)
        self.first_feature = image_channels


class CameraModulation(nn.Module):
    """A scale and a shift per camera of each channel of a hidden layer: ``(B, C, H, W)`` hidden values and ``(B, D)``
    condition features -> ``hidden * (1 + scale[camera]) + shift[camera]``.

    Both tables are zero at start, and a camera whose columns stay zero gets its hidden values back exactly (times 1,
    plus 0): an adaptation that trains only the new cameras' columns leaves every base camera's noise bit for bit as
    it was, while a new camera reshapes what each shared layer computes for it, not only what it is fed.

    Args:
        cameras: the vocabulary's cameras (the first ``cameras`` features are their one-hot); channels: C.
    """

    first_feature = 0
    camera_tables = ("scale", "shift")

    def __init__(self, cameras: int, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(channels, cameras))  # cameras on axis 1, as every reader's weight
        self.shift = nn.Parameter(torch.zeros(channels, cameras))

    def forward(self, hidden: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        cameras = features[:, : self.scale.shape[1]].float()  # one-hot: each product picks one column exactly
        scale = nn.functional.linear(cameras, self.scale).to(hidden.dtype)[:, :, None, None]
        shift = nn.functional.linear(cameras, self.shift).to(hidden.dtype)[:, :, None, None]
        return hidden * (1 + scale) + shift


def modulated(layers: nn.Sequential, x: torch.Tensor, modulations: nn.ModuleDict | None,
              features: torch.Tensor | None, start: int = 0) -> torch.Tensor:
    """``layers(x)``, each output of ``layers[i]`` passed through ``modulations[str(start + i)]`` where there is one
    (``start``: the index of ``layers[0]`` in the network the keys count in, for a slice of it)."""
    if modulations is None:
        return layers(x)
    for index, layer in enumerate(layers, start):
        x = layer(x)
        if str(index) in modulations:
            x = modulations[str(index)](x, features)
    return x


def hidden_modulations(layers: nn.Sequential, cameras: int) -> nn.ModuleDict:
    """A :class:`CameraModulation` after every activation of ``layers`` that a convolution follows (its hidden
    layers), keyed by the activation's index; the channels are those of the convolution before it."""
    modulations, channels = {}, 0
    for index, layer in enumerate(layers):
        if isinstance(layer, nn.Conv2d):
            channels = layer.out_channels
        elif index + 1 < len(layers) and isinstance(layers[index + 1], nn.Conv2d):
            modulations[str(index)] = CameraModulation(cameras, channels)
    return nn.ModuleDict(modulations)


class GridPosition(nn.Module):
    """A learned value per position in a ``period`` x ``period`` grid of the camera's frame (the 2x2 colour-filter
    array, the 8x8 JPEG blocks), added to a layer's output at each pixel: ``(B, 2, H, W)`` grid positions
    (:attr:`~nmflowgan.conditions.Condition.grid`) -> ``(B, out_channels, H, W)``. It is a 1x1 convolution of one-hot
    planes of the pixel's position, computed as a lookup. It starts at zero, so a layer with it starts as the same
    layer without it.

    Args:
        out_channels: channels of the output it is added to; period: a divisor of the grid positions' period.
    """

    def __init__(self, out_channels: int, period: int) -> None:
        super().__init__()
        self.period = period
        self.table = nn.Parameter(torch.zeros(out_channels, period, period))

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        position = phase_of(grid, self.period)  # (B, H, W)
        # rows of a (positions, out) table, gathered as (B, H, W, out): channels-last in memory, as the sampler's
        # convolutions run, so the sum it joins needs no reordering
        values = nn.functional.embedding(position, self.table.flatten(1).t().contiguous())  # contiguous: 10x faster
        return values.permute(0, 3, 1, 2)


class CameraGrid(nn.Module):
    """A learned value per camera and per position in a ``period`` x ``period`` grid of its frame, added to a layer's
    output at each pixel: ``(B, 2, H, W)`` grid positions and ``(B, D)`` condition features -> ``(B, out_channels, H,
    W)``. What :class:`GridPosition` is for every camera, one per camera: a new camera's noise can follow its own
    colour-filter phases and JPEG blocks while the base's cameras, whose columns stay zero, get exactly 0 added.

    Args:
        out_channels: channels of the output it is added to; cameras: the vocabulary's cameras (the first
            ``cameras`` features are their one-hot); period: a divisor of the grid positions' period.
    """

    first_feature = 0
    camera_tables = ("table",)

    def __init__(self, out_channels: int, cameras: int, period: int) -> None:
        super().__init__()
        self.period = period
        self.table = nn.Parameter(torch.zeros(out_channels * period * period, cameras))  # cameras on axis 1

    def forward(self, grid: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = grid.shape
        cameras = features[:, : self.table.shape[1]].to(self.table.dtype)  # one-hot: picks one column exactly
        tables = nn.functional.linear(cameras, self.table).view(batch, -1, self.period * self.period)
        position = phase_of(grid, self.period).view(batch, 1, height * width)
        values = tables.gather(2, position.expand(-1, tables.shape[1], -1))  # (B, out, H * W)
        return values.view(batch, -1, height, width)


def condition_channels(features: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """``(B, D)`` features -> ``(B, D, H, W)`` constant channels shaped like ``like`` ``(B, C, H, W)``, in its dtype."""
    if features is None:
        raise ValueError("this network sees the camera/ISO condition: pass its (B, D) features")
    return features.to(like.dtype)[:, :, None, None].expand(-1, -1, *like.shape[-2:])


def grow_cameras(base: nn.Module, grown: nn.Module, base_cameras: int, sources: Sequence[int]) -> dict[str, slice]:
    """Copies ``base``'s weights into ``grown`` (the same architecture over the base's ``base_cameras`` cameras
    followed by ``len(sources)`` new ones) and starts new camera ``i`` as a copy of base camera ``sources[i]``.

    Returns:
        For each weight that reads the camera, the new cameras' columns (along axis 1).

    A :class:`CameraModulation` or :class:`CameraGrid` the base does not have starts at zero for every camera (the
    base's cameras draw what they drew; new cameras start as their source camera).

    Raises:
        BadInputError: a parameter whose shape changed is not the weight of a :class:`ConditionInput` or
            :class:`ConditionPlanes` or a table of a :class:`CameraModulation` or :class:`CameraGrid` (it reads the
            condition some other way, e.g. a table per (camera, ISO) cell).
    """
    readers = {f"{name}.weight": module for name, module in grown.named_modules()
               if isinstance(module, ConditionInput | ConditionPlanes)}
    readers |= {f"{name}.{table}": module for name, module in grown.named_modules()
                if isinstance(module, CameraModulation | CameraGrid) for table in module.camera_tables}
    base_state = base.state_dict()
    columns: dict[str, slice] = {}
    with torch.no_grad():
        for name, target in grown.state_dict().items():
            reader = readers.get(name)
            old = base_state.get(name)
            if old is None and isinstance(reader, CameraModulation | CameraGrid):  # a table the base does not have
                old = torch.zeros(target.shape[0], base_cameras, dtype=target.dtype)
            elif old is None:
                raise BadInputError(f"cannot grow {name}: the base model has no such parameter")
            if reader is None:
                if old.shape != target.shape:
                    raise BadInputError(f"cannot grow {name} from {tuple(old.shape)} to {tuple(target.shape)}: only "
                                        "ConditionInput and ConditionPlanes weights read the camera")
                target.copy_(old)
                continue
            cut = reader.first_feature + base_cameras  # the first column after the base's cameras
            copies = old[:, [reader.first_feature + source for source in sources]]
            target.copy_(torch.cat([old[:, :cut], copies, old[:, cut:]], dim=1))
            columns[name] = slice(cut, cut + len(sources))
    return columns
