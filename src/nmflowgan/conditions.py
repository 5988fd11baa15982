"""Camera/ISO vocabulary and the encoding that conditions every network.

A :class:`ConditionSpace` knows the cameras and ISOs a model was built for and turns the public values
(camera codes as ``str``, ISO as numbers) into a :class:`Condition` of tensors: ``features``, a one-hot camera
followed by the ISO's feature, which every network reads (:mod:`nmflowgan.condition_input`), and ``cell``, the
(camera, ISO) cell where the ISO has one.

The ISO is encoded by one of two encoders, each owning its feature and its range check:

* :class:`OneHotIso` (``iso_mode="onehot"``, the official NM-FlowGAN code): a one-hot over the training ISOs, which
  are the only ISOs it accepts; it gives each (camera, ISO) a cell (the per-condition tables of the paper's CL);
* :class:`ContinuousIso` (``"continuous"``): ``log(iso)`` mapped linearly so that the training range becomes
  [-1, 1]; it accepts any ISO inside the range, and outside it only when asked to extrapolate.

No value is ever silently mapped to another one.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from nmflowgan.errors import BadInputError

SIDD_CAMERAS: tuple[str, ...] = ("IP", "GP", "S6", "N6", "G4")
SIDD_ISOS: tuple[int, ...] = (100, 400, 800, 1600, 3200)
ISO_MODES = ("onehot", "continuous")  # the keys of ISO_ENCODERS, defined below
# How far ``extrapolate`` may take a continuous-ISO model beyond its trained range: one trained span (in log-ISO)
# beyond either end, and at least this factor (for a range of one ISO or a narrow one). The normalized log-ISO
# feature then stays within [-3, 3], not far outside the [-1, 1] the networks were trained on.
MIN_EXTRAPOLATION_FACTOR = 4.0


@dataclass(frozen=True)
class Condition:
    """Encoded conditions of a batch.

    Attributes:
        cell: ``(B,)`` int64 (camera, ISO) cell indices where the ISO encoding has cells (one-hot), else ``-1``.
        features: ``(B, D)`` float features for the condition networks.
        grid: ``(B, 2, H, W)`` int64, each pixel's row and column in the camera's :data:`GRID_PX` x :data:`GRID_PX`
            grid (its full-frame ``y`` and ``x`` modulo :data:`GRID_PX`), carried through crops, flips and rotations
            with the pixel; None: the image starts at the frame's origin, upright (:func:`grid_positions`). Only
            networks that read the grid (``grid_px``) look at it.
    """

    cell: torch.Tensor
    features: torch.Tensor
    grid: torch.Tensor | None = None

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Condition:
        """Returns the condition on ``device`` (features also cast to ``dtype`` when given)."""
        grid = self.grid.to(device) if self.grid is not None else None
        return Condition(self.cell.to(device), self.features.to(device=device, dtype=dtype), grid)

    def __getitem__(self, index: slice | torch.Tensor) -> Condition:
        return Condition(self.cell[index], self.features[index], self.grid[index] if self.grid is not None else None)

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def with_grid(self, grid: torch.Tensor | None) -> Condition:
        """The same condition with ``grid`` (``(B, 2, H, W)`` integers, :attr:`grid`) as its pixels' grid positions."""
        return Condition(self.cell, self.features, None if grid is None else grid.to(self.cell.device, torch.long))

    def grid_like(self, image: torch.Tensor) -> torch.Tensor:
        """:attr:`grid` for ``image`` ``(B, C, H, W)``: the one carried, else the upright grid from the origin."""
        if self.grid is None:
            batch, _, height, width = image.shape
            return grid_positions(batch, height, width, device=image.device)
        if self.grid.shape[0] != image.shape[0] or self.grid.shape[-2:] != image.shape[-2:]:
            raise ValueError(f"grid positions {tuple(self.grid.shape)} do not fit an image of {tuple(image.shape)}")
        return self.grid


# The period of the grids a camera's noise follows: the 2x2 colour-filter array and the 8x8 blocks of JPEG (an 8x8
# position also tells the 2x2 phase).
GRID_PX = 8


def grid_positions(batch: int, height: int, width: int, top: int = 0, left: int = 0,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """``(batch, 2, height, width)`` int64 grid positions (row, column modulo :data:`GRID_PX`) of an upright image
    whose top-left pixel lies at ``(top, left)`` of the camera's frame."""
    rows = (torch.arange(height, device=device) + top) % GRID_PX
    columns = (torch.arange(width, device=device) + left) % GRID_PX
    grid = torch.stack(torch.broadcast_tensors(rows[:, None], columns[None, :]))
    return grid.expand(batch, -1, -1, -1)


def phase_of(grid: torch.Tensor, period: int) -> torch.Tensor:
    """``(B, H, W)`` index ``row * period + column`` of each pixel's position in a ``period`` grid (a divisor of
    :data:`GRID_PX`), from its ``(B, 2, H, W)`` grid positions (:attr:`Condition.grid`)."""
    return (grid[:, 0] % period) * period + grid[:, 1] % period


def check_camera_name(camera: str) -> str:
    """``camera`` if it is printable as itself: no hidden characters (zero-width spaces, control characters) and no
    look-alikes that Unicode's NFKC form maps to other characters (a fullwidth ``V２`` is ``V2``); else
    BadInputError. Two names that only look alike would otherwise become two cameras."""
    shown = unicodedata.normalize("NFKC", camera).strip()
    if not camera or not camera.isprintable() or shown != camera:
        raise BadInputError(f"camera name {camera!r} is not printable as itself (hidden, look-alike or surrounding "
                            f"space characters; it reads as {shown!r})")
    return camera


def check_iso(iso: object) -> float:
    """Returns ``iso`` as a float, or raises if it is not a positive finite number."""
    try:
        value = float(iso)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise BadInputError(f"ISO {iso!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise BadInputError(f"ISO {iso!r} is not a positive finite number")
    return value


class OneHotIso:
    """ISO as a one-hot over the training ISOs (the official code): only those ISOs are accepted, and each
    (camera, ISO) has a cell.

    Args:
        isos: the training ISOs, ascending.
    """

    interpolates = False

    def __init__(self, isos: Sequence[float]) -> None:
        self.isos = tuple(isos)
        self.dim = len(self.isos)

    def index(self, iso: object, extrapolate: bool = False) -> int:
        """The index of ``iso`` among the training ISOs, or BadInputError (``extrapolate`` changes nothing here)."""
        value = check_iso(iso)
        for index, known in enumerate(self.isos):
            if math.isclose(value, float(known), rel_tol=1e-9):
                return index
        raise BadInputError(f"ISO {iso!r} is not one of the ISOs this one-hot model was trained on: "
                            f"{', '.join(str(i) for i in self.isos)}")

    def check(self, iso: object, extrapolate: bool = False) -> None:
        """Raises BadInputError if ``iso`` cannot be encoded."""
        self.index(iso, extrapolate)

    def encode(self, isos: Sequence[object], extrapolate: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features (B, dim), index (B,))`` of per-sample ISOs."""
        index = torch.tensor([self.index(iso) for iso in isos], dtype=torch.long)
        return torch.nn.functional.one_hot(index, self.dim).float(), index


class ContinuousIso:
    """ISO as the normalized log-ISO: ``log(iso)`` mapped linearly so that the training range becomes [-1, 1]. Any
    ISO inside the range is accepted; outside it, only with ``extrapolate`` and at most one trained span (in log-ISO)
    beyond either end, and at least a factor of :data:`MIN_EXTRAPOLATION_FACTOR`.

    Args:
        isos: the training ISOs, ascending (only their range matters).
    """

    interpolates = True
    dim = 1

    def __init__(self, isos: Sequence[float]) -> None:
        self.low, self.high = float(isos[0]), float(isos[-1])

    def feature(self, iso: object, extrapolate: bool = False) -> float:
        """The normalized log-ISO of ``iso``, or BadInputError outside what it may encode."""
        value = check_iso(iso)
        low, high = self.low, self.high
        if not extrapolate and not (low * (1 - 1e-9) <= value <= high * (1 + 1e-9)):
            raise BadInputError(
                f"ISO {iso!r} is outside the trained range {low:g}-{high:g} "
                "(pass extrapolate=True / --extrapolate to allow it)"
            )
        factor = max(high / low, MIN_EXTRAPOLATION_FACTOR)
        if not low / factor * (1 - 1e-9) <= value <= high * factor * (1 + 1e-9):
            raise BadInputError(
                f"ISO {iso!r} is beyond what extrapolation reaches from the trained range {low:g}-{high:g}: "
                f"{low / factor:g}-{high * factor:g} (one trained span, at least a factor of "
                f"{MIN_EXTRAPOLATION_FACTOR:g}, either way)"
            )
        if high == low:
            return 0.0
        return 2.0 * (math.log(value) - math.log(low)) / (math.log(high) - math.log(low)) - 1.0

    def check(self, iso: object, extrapolate: bool = False) -> None:
        """Raises BadInputError if ``iso`` cannot be encoded."""
        self.feature(iso, extrapolate)

    def encode(self, isos: Sequence[object], extrapolate: bool = False) -> tuple[torch.Tensor, None]:
        """``(features (B, 1), None)``: the ISO has no cells."""
        return torch.tensor([[self.feature(iso, extrapolate)] for iso in isos], dtype=torch.float32), None


ISO_ENCODERS = {"onehot": OneHotIso, "continuous": ContinuousIso}


@dataclass(frozen=True)
class ConditionSpace:
    """The cameras and ISOs a model knows, and how ISO is encoded.

    Args:
        cameras: camera codes, e.g. SIDD's ``("IP", "GP", "S6", "N6", "G4")``.
        isos: the training ISOs, ascending. In ``continuous`` mode only their range matters.
        iso_mode: ``"onehot"`` (the paper) or ``"continuous"`` (normalized log-ISO): which of
            :data:`ISO_ENCODERS` encodes the ISO (:attr:`iso`).

    Example:
        >>> space = ConditionSpace(("S6", "N6"), (100, 1600), "continuous")
        >>> space.encode(["S6", "N6"], [100, 400]).features.shape
        torch.Size([2, 3])
    """

    cameras: tuple[str, ...] = SIDD_CAMERAS
    isos: tuple[float, ...] = SIDD_ISOS
    iso_mode: str = "continuous"
    iso: OneHotIso | ContinuousIso = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.iso_mode not in ISO_MODES:
            raise BadInputError(f"iso_mode {self.iso_mode!r} is not one of {ISO_MODES}")
        if not self.cameras:
            raise BadInputError("a condition space needs at least one camera")
        for camera in self.cameras:
            check_camera_name(str(camera))
        if len(set(self.cameras)) != len(self.cameras):
            raise BadInputError(f"duplicate camera codes in {self.cameras}")
        if not self.isos:
            raise BadInputError("a condition space needs at least one ISO")
        isos = tuple(check_iso(iso) for iso in self.isos)
        if list(isos) != sorted(set(isos)):
            raise BadInputError(f"ISOs must be distinct and ascending, got {self.isos}")
        object.__setattr__(self, "cameras", tuple(str(c) for c in self.cameras))
        object.__setattr__(self, "isos", tuple(int(i) if float(i).is_integer() else i for i in isos))
        object.__setattr__(self, "iso", ISO_ENCODERS[self.iso_mode](self.isos))

    @property
    def n_cells(self) -> int:
        """Number of (camera, ISO) cells: the rows of per-condition tables; 0 where the ISO interpolates."""
        return 0 if self.iso.interpolates else len(self.cameras) * len(self.isos)

    @property
    def feature_dim(self) -> int:
        """Length D of :attr:`Condition.features`: the cameras' one-hot, then the ISO's feature."""
        return len(self.cameras) + self.iso.dim

    @property
    def iso_range(self) -> tuple[float, float]:
        return float(self.isos[0]), float(self.isos[-1])

    def camera_index(self, camera: str) -> int:
        """Index of ``camera`` in the vocabulary; raises naming the known cameras otherwise."""
        try:
            return self.cameras.index(camera)
        except ValueError:
            raise BadInputError(
                f"unknown camera {camera!r}; this model knows {', '.join(self.cameras)}"
            ) from None

    def knows(self, camera: str, iso: float) -> bool:
        """Whether ``camera`` is in the vocabulary and ``iso`` encodes without extrapolating."""
        try:
            self.camera_index(camera)
            self.iso.check(iso)
        except BadInputError:
            return False
        return True

    def encode(
        self,
        cameras: str | Sequence[str],
        isos: float | Sequence[float],
        batch_size: int | None = None,
        extrapolate: bool = False,
        grid: torch.Tensor | None = None,
    ) -> Condition:
        """Encodes per-sample cameras and ISOs.

        Args:
            cameras: one camera code for the whole batch, or one per sample.
            isos: one ISO for the whole batch, or one per sample.
            batch_size: B, required when both are scalars.
            extrapolate: accept ``continuous`` ISOs outside the trained range.
            grid: the pixels' grid positions (:attr:`Condition.grid`); None: each image from the frame's origin.

        Returns:
            A :class:`Condition` of batch size B on the CPU.
        """
        camera_list = [cameras] if isinstance(cameras, str) else list(cameras)
        iso_list = list(isos) if isinstance(isos, Sequence) and not isinstance(isos, str) else [isos]
        if isinstance(isos, torch.Tensor):
            iso_list = isos.flatten().tolist()
        size = batch_size or max(len(camera_list), len(iso_list))
        if len(camera_list) not in (1, size) or len(iso_list) not in (1, size):
            raise BadInputError(f"got {len(camera_list)} camera(s) and {len(iso_list)} ISO(s) for a batch of {size} "
                                "(give one for the whole batch, or one per image)")
        camera_list, iso_list = camera_list * (size // len(camera_list)), iso_list * (size // len(iso_list))
        camera = torch.tensor([self.camera_index(c) for c in camera_list], dtype=torch.long)
        iso_features, iso_index = self.iso.encode(iso_list, extrapolate)
        cell = camera * len(self.isos) + iso_index if iso_index is not None else torch.full_like(camera, -1)
        camera_onehot = torch.nn.functional.one_hot(camera, len(self.cameras)).float()
        return Condition(cell=cell, features=torch.cat([camera_onehot, iso_features], dim=1)).with_grid(grid)

    def to_dict(self) -> dict:
        return {"cameras": list(self.cameras), "isos": list(self.isos), "iso_mode": self.iso_mode}

    @classmethod
    def from_dict(cls, data: dict) -> ConditionSpace:
        unknown = set(data) - {"cameras", "isos", "iso_mode"}
        if unknown:
            raise BadInputError(f"unknown condition-space keys: {sorted(unknown)}")
        return cls(tuple(data["cameras"]), tuple(data["isos"]), data["iso_mode"])
