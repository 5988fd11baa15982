"""The one realism scorer: how close named noise sources come to real noise, per (camera, ISO) and overall.

``evaluate``, training validation (which picks the ``best`` checkpoint) and the demo all score through
:class:`RealismScorer`, so their numbers mean the same thing. For each source it gives

* ``kld``: the per-patch histogram KLD (:mod:`.kld`), averaged over all patches;
* ``akld``: the per-patch AKLD (:mod:`.akld`), averaged over all patches;
* ``corr_error``: the correlation error (:mod:`.noise_stats`) of the statistics pooled per (camera, ISO),
  averaged over conditions;
* ``neighbour_kld``: the KLD of the histograms of neighbour differences ``x(p + 1) - x(p)`` (horizontal and
  vertical averaged), per patch, averaged over patches: it sees spatial correlation where the per-pixel KLD
  cannot (correlated noise has smaller neighbour differences than white noise of the same level);
* the shape of the noise: per channel, the standard deviation pooled over all pixels (8-bit units) and the
  kurtosis ``E[x^4] / E[x^2]^2`` of each patch's mean-removed noise, averaged over patches (3 for Gaussian
  noise, more for heavier tails);
* where the noise lies in the camera's grids (:mod:`.grid_stats`): the errors of its std and lag-1 correlation by
  2x2 colour-filter phase and of the spread of its std over the 8x8 JPEG grid, per (camera, ISO) and averaged,
  and the real noise's own grid statistics pooled over all patches;
* what the noise lies on (:mod:`.content_stats`): the errors of its std and lag-1 correlation on flat areas and on
  edges per clean-intensity bin, per (camera, ISO) and averaged, and the real noise's own pooled over all patches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from nmflowgan.metrics.akld import akld_per_patch
from nmflowgan.metrics.content_stats import ContentStatsAccumulator, content_errors
from nmflowgan.metrics.grid_stats import GridStatsAccumulator, grid_errors
from nmflowgan.metrics.kld import histograms, kld_per_patch
from nmflowgan.metrics.moments import IntensityMoments, IntensityMomentsAccumulator, skew_agreement
from nmflowgan.metrics.noise_stats import NoiseStats, NoiseStatsAccumulator, corr_error

Condition = tuple[str, float]
REAL = "real"


def _number(value: float | None) -> float:
    """A statistic read back from JSON, where a NaN (a constant patch has no kurtosis) is written as null."""
    return float("nan") if value is None else float(value)


def _numbers(values: list) -> tuple[float, ...]:
    return tuple(_number(v) for v in values)


@dataclass(frozen=True)
class NoiseShape:
    """Per channel (R, G, B): ``std`` in 8-bit units and ``kurtosis`` (3 for Gaussian noise)."""

    std: tuple[float, float, float]
    kurtosis: tuple[float, float, float]

    def to_dict(self) -> dict:
        return {"std": list(self.std), "kurtosis": list(self.kurtosis)}

    @classmethod
    def from_dict(cls, data: dict) -> NoiseShape:
        return cls(_numbers(data["std"]), _numbers(data["kurtosis"]))  # type: ignore[arg-type]


@dataclass(frozen=True)
class RealismScores:
    """How close one noise source comes to the real noise (lower is better for the first four)."""

    kld: float
    akld: float
    corr_error: float
    neighbour_kld: float
    shape: NoiseShape
    skew_match: float = float("nan")  # higher is better: see metrics.moments.skew_agreement

    def to_dict(self) -> dict:
        return {"kld": self.kld, "akld": self.akld, "corr_error": self.corr_error,
                "neighbour_kld": self.neighbour_kld, "skew_match": self.skew_match, **self.shape.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> RealismScores:
        return cls(*(_number(data[key]) for key in ("kld", "akld", "corr_error", "neighbour_kld")),
                   NoiseShape.from_dict(data), _number(data.get("skew_match")))


@dataclass(frozen=True)
class Correlation:
    """Pooled correlations of one noise: ``spatial`` ``[channel][distance 0..6]`` (horizontal and vertical
    averaged) and ``cross`` R-G, G-B, R-B."""

    spatial: tuple[tuple[float, ...], ...]
    cross: tuple[float, float, float]

    def to_dict(self) -> dict:
        return {"spatial": [list(row) for row in self.spatial], "cross": list(self.cross)}

    @classmethod
    def from_dict(cls, data: dict) -> Correlation:
        return cls(tuple(_numbers(row) for row in data["spatial"]), _numbers(data["cross"]))  # type: ignore[arg-type]

    @classmethod
    def of(cls, stats: NoiseStats) -> Correlation:
        return cls(tuple(tuple(row) for row in stats.corr.tolist()), tuple(stats.cross.tolist()))  # type: ignore[arg-type]


@dataclass(frozen=True)
class ConditionRealism:
    """The scores of every source at one (camera, ISO), the real noise's shape there, and the correlations of
    the real noise and of every source (``correlation``, keyed ``real`` and by source)."""

    camera: str
    iso: float
    n_patches: int
    real: NoiseShape
    models: dict[str, RealismScores]
    correlation: dict[str, Correlation]
    moments: dict[str, IntensityMoments] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"camera": self.camera, "iso": self.iso, "n_patches": self.n_patches, "real": self.real.to_dict(),
                "models": {name: scores.to_dict() for name, scores in self.models.items()},
                "correlation": {name: c.to_dict() for name, c in self.correlation.items()},
                "moments": {name: m.to_dict() for name, m in self.moments.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> ConditionRealism:
        return cls(data["camera"], float(data["iso"]), int(data["n_patches"]), NoiseShape.from_dict(data["real"]),
                   {name: RealismScores.from_dict(s) for name, s in data["models"].items()},
                   {name: Correlation.from_dict(c) for name, c in data["correlation"].items()},
                   {name: IntensityMoments.from_dict(m) for name, m in data.get("moments", {}).items()})


@dataclass(frozen=True)
class Realism:
    """Overall and per-condition scores (JSON round-trip with :meth:`to_dict` / :meth:`from_dict`).

    Attributes:
        models: ``{source: RealismScores}`` over all patches, in the order the sources were named.
        real: the shape of the real noise over all patches.
        per_condition: one :class:`ConditionRealism` per (camera, ISO), sorted.
        n_patches: patches scored.
        grid_errors: ``{source: {phase_std_error, phase_r1_error, block_cv_error}}``, each the mean over (camera,
            ISO) of :func:`~nmflowgan.metrics.grid_stats.grid_errors` there (a result written before they were
            measured reads back without them).
        grid_real: the real noise's :class:`~nmflowgan.metrics.grid_stats.GridStats` pooled over all patches, as a dict.
        grid_sources: each source's pooled the same way, ``{source: dict}`` (what the grid figure draws).
        content_errors: ``{source: {content_r1_error, content_std_error}}``, each the mean over (camera, ISO) of
            :func:`~nmflowgan.metrics.content_stats.content_errors` there (conditions without a cell to compare left
            out; NaN where none has one).
        content_real: the real noise's :class:`~nmflowgan.metrics.content_stats.ContentStats` pooled over all
            patches, as a dict.
    """

    models: dict[str, RealismScores]
    real: NoiseShape
    per_condition: list[ConditionRealism]
    n_patches: int
    grid_errors: dict[str, dict[str, float]] = field(default_factory=dict)
    grid_real: dict = field(default_factory=dict)
    content_errors: dict[str, dict[str, float]] = field(default_factory=dict)
    content_real: dict = field(default_factory=dict)
    grid_sources: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"n_patches": self.n_patches, "real": self.real.to_dict(),
                "models": {name: scores.to_dict() for name, scores in self.models.items()},
                "per_condition": [row.to_dict() for row in self.per_condition],
                "grid": {"errors": self.grid_errors, "real": self.grid_real, "sources": self.grid_sources},
                "content": {"errors": self.content_errors, "real": self.content_real}}

    @classmethod
    def from_dict(cls, data: dict) -> Realism:
        def errors(section: dict) -> dict[str, dict[str, float]]:
            return {name: {key: _number(value) for key, value in values.items()}
                    for name, values in section.get("errors", {}).items()}

        grid, content = data.get("grid", {}), data.get("content", {})
        return cls({name: RealismScores.from_dict(s) for name, s in data["models"].items()},
                   NoiseShape.from_dict(data["real"]),
                   [ConditionRealism.from_dict(row) for row in data["per_condition"]], int(data["n_patches"]),
                   errors(grid), grid.get("real", {}), errors(content), content.get("real", {}),
                   grid.get("sources", {}))


class _ShapeAccumulator:
    """Pooled per-channel sums for the std, and the per-patch kurtosis of each channel."""

    def __init__(self) -> None:
        self.count = 0.0
        self.sum = torch.zeros(3, dtype=torch.float64)
        self.sum_sq = torch.zeros(3, dtype=torch.float64)
        self.kurtosis: list[torch.Tensor] = []  # (B, 3) per update

    def update(self, noise: torch.Tensor) -> None:
        values = noise.double().flatten(2)  # (B, 3, N)
        self.count += values.shape[0] * values.shape[2]
        self.sum += values.sum(dim=(0, 2))
        self.sum_sq += values.square().sum(dim=(0, 2))
        centred = values - values.mean(2, keepdim=True)
        second = centred.square().mean(2)
        fourth = centred.pow(4).mean(2)
        self.kurtosis.append(torch.where(second > 0, fourth / second.square().clamp_min(1e-300),
                                         torch.full_like(second, float("nan"))))

    def merge(self, other: _ShapeAccumulator) -> None:
        self.count += other.count
        self.sum += other.sum
        self.sum_sq += other.sum_sq
        self.kurtosis += other.kurtosis

    def result(self) -> NoiseShape:
        mean = self.sum / max(self.count, 1.0)
        std = (self.sum_sq / max(self.count, 1.0) - mean.square()).clamp_min(0).sqrt()
        kurtosis = torch.cat(self.kurtosis).nanmean(0) if self.kurtosis else torch.full((3,), float("nan"))
        return NoiseShape(tuple(std.tolist()), tuple(kurtosis.tolist()))  # type: ignore[arg-type]


@dataclass
class _ConditionState:
    kld: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    akld: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    neighbour_kld: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    stats: dict[str, NoiseStatsAccumulator] = field(default_factory=dict)
    shape: dict[str, _ShapeAccumulator] = field(default_factory=dict)
    moments: dict[str, IntensityMomentsAccumulator] = field(default_factory=dict)
    histogram: dict[str, torch.Tensor] = field(default_factory=dict)
    grid: dict[str, GridStatsAccumulator] = field(default_factory=dict)
    content: dict[str, ContentStatsAccumulator] = field(default_factory=dict)
    n_patches: int = 0


class RealismScorer:
    """Accumulates the scores of named noise sources against the real noise, batch by batch.

    Args:
        names: the sources, in the order results list them.

    Example:
        >>> scorer = RealismScorer(["model"])
        >>> clean, real = torch.rand(2, 3, 16, 16), torch.randn(2, 3, 16, 16) * 5
        >>> scorer.update(clean, real, {"model": real.clone()}, [("S6", 800.0)] * 2)
        >>> scorer.result().models["model"].kld
        0.0
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.conditions: dict[Condition, _ConditionState] = {}

    def update(self, clean: torch.Tensor, real: torch.Tensor, generated: dict[str, torch.Tensor],
               conditions: Sequence[Condition]) -> None:
        """Adds a batch.

        Args:
            clean: ``(B, 3, H, W)`` in [0, 1]; real: ``(B, 3, H, W)`` real noise in 8-bit units.
            generated: ``{source: (B, 3, H, W)}`` noise in 8-bit units, one entry per name.
            conditions: ``(camera, iso)`` of each patch.
        """
        clean, real = clean.detach().double().cpu(), real.detach().double().cpu()
        noises = {REAL: real} | {name: generated[name].detach().double().cpu() for name in self.names}
        klds = {n: kld_per_patch(real, noises[n]) for n in self.names}
        aklds = {n: akld_per_patch(real / 255.0, noises[n] / 255.0) for n in self.names}
        neighbours = {n: neighbour_kld_per_patch(real, noises[n]) for n in self.names}
        keys = [(str(camera), float(iso)) for camera, iso in conditions]
        for key in dict.fromkeys(keys):
            rows = torch.tensor([k == key for k in keys])
            state = self.conditions.setdefault(key, _ConditionState())
            state.n_patches += int(rows.sum())
            for name, noise in noises.items():
                selected = noise[rows]
                state.stats.setdefault(name, NoiseStatsAccumulator()).update(clean[rows], selected)
                state.shape.setdefault(name, _ShapeAccumulator()).update(selected)
                state.moments.setdefault(name, IntensityMomentsAccumulator()).update(clean[rows], selected)
                state.grid.setdefault(name, GridStatsAccumulator()).update(selected)
                state.content.setdefault(name, ContentStatsAccumulator()).update(clean[rows], selected)
                counts = histograms(selected).sum(0)
                state.histogram[name] = state.histogram.get(name, torch.zeros_like(counts)) + counts
                if name != REAL:
                    state.kld.setdefault(name, []).append(klds[name][rows])
                    state.akld.setdefault(name, []).append(aklds[name][rows])
                    state.neighbour_kld.setdefault(name, []).append(neighbours[name][rows])

    def result(self) -> Realism:
        """The scores so far (see :class:`Realism`)."""
        metrics = ("kld", "akld", "corr_error", "neighbour_kld")
        rows, totals = [], {n: {m: [] for m in metrics} for n in self.names}
        overall_shape = {n: _ShapeAccumulator() for n in [REAL, *self.names]}
        grid = {n: {} for n in self.names}  # {source: {error: [per condition]}}
        content = {n: {} for n in self.names}
        pooled_grid = {n: GridStatsAccumulator() for n in [REAL, *self.names]}
        real_content = ContentStatsAccumulator()
        for key in sorted(self.conditions):
            state = self.conditions[key]
            stats = {name: acc.result() for name, acc in state.stats.items()}
            moments = {name: acc.result() for name, acc in state.moments.items()}
            models = {}
            for name in self.names:
                kld, akld = torch.cat(state.kld[name]), torch.cat(state.akld[name])
                neighbour = torch.cat(state.neighbour_kld[name])
                error = corr_error(stats[REAL], stats[name])
                models[name] = RealismScores(float(kld.mean()), float(akld.mean()), error, float(neighbour.mean()),
                                             state.shape[name].result(),
                                             skew_agreement([moments[REAL]], [moments[name]]))
                totals[name]["kld"].append(kld)
                totals[name]["akld"].append(akld)
                totals[name]["corr_error"].append(torch.tensor([error], dtype=torch.float64))
                totals[name]["neighbour_kld"].append(neighbour)
            for name, accumulator in state.shape.items():
                overall_shape[name].merge(accumulator)
            for name, accumulator in state.grid.items():
                pooled_grid[name].merge(accumulator)
            real_content.merge(state.content[REAL])
            for name in self.names:
                for error, value in grid_errors(state.grid[REAL].result(), state.grid[name].result()).items():
                    grid[name].setdefault(error, []).append(value)
                for error, value in content_errors(state.content[REAL].result(),
                                                   state.content[name].result()).items():
                    content[name].setdefault(error, []).append(value)
            rows.append(ConditionRealism(key[0], key[1], state.n_patches, state.shape[REAL].result(), models,
                                         {name: Correlation.of(value) for name, value in stats.items()}, moments))
        models = {name: RealismScores(*(_mean(totals[name][m]) for m in metrics), overall_shape[name].result(),
                                      skew_agreement([r.moments[REAL] for r in rows], [r.moments[name] for r in rows]))
                  for name in self.names}
        return Realism(models, overall_shape[REAL].result(), rows, sum(s.n_patches for s in self.conditions.values()),
                       {name: {error: sum(values) / len(values) for error, values in errors.items()}
                        for name, errors in grid.items()},
                       pooled_grid[REAL].result().to_dict() if self.conditions else {},
                       {name: {error: _nanmean(values) for error, values in errors.items()}
                        for name, errors in content.items()},
                       real_content.result().to_dict() if self.conditions else {},
                       {name: pooled_grid[name].result().to_dict() for name in self.names} if self.conditions else {})

    def stats(self) -> dict[Condition, dict[str, NoiseStats]]:
        """``{(camera, iso): {"real" or source: NoiseStats}}``: what the noise-level and correlation plots draw."""
        return {key: {name: acc.result() for name, acc in self.conditions[key].stats.items()}
                for key in sorted(self.conditions)}

    def histograms(self) -> dict[Condition, dict[str, torch.Tensor]]:
        """``{(camera, iso): {"real" or source: (130,) counts}}`` of the KLD bins, pooled over patches."""
        return {key: dict(self.conditions[key].histogram) for key in sorted(self.conditions)}


def neighbour_kld_per_patch(real_255: torch.Tensor, generated_255: torch.Tensor) -> torch.Tensor:
    """Per-sample KLD of the histograms of horizontal and of vertical neighbour differences (8-bit units,
    the KLD bins), averaged: ``(B, C, H, W)`` twice -> ``(B,)``; needs H, W >= 2."""
    horizontal = kld_per_patch(real_255.diff(dim=-1), generated_255.diff(dim=-1))
    vertical = kld_per_patch(real_255.diff(dim=-2), generated_255.diff(dim=-2))
    return (horizontal + vertical) / 2


def _nanmean(values: list[float]) -> float:
    """The mean of the values that are numbers; NaN when none is."""
    numbers = [v for v in values if v == v]
    return sum(numbers) / len(numbers) if numbers else float("nan")


def _mean(parts: list[torch.Tensor]) -> float:
    return float(torch.cat(parts).mean()) if parts else float("nan")
