"""The figures of an evaluation: noise level versus intensity, correlation versus distance, histograms,
and a grid of example patches. Each function writes one PNG and returns its path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nmflowgan.metrics.kld import BIN_WIDTH, EDGE_LOW, N_BINS

COLOURS = {"real": "black", "gaussian": "tab:gray", "nlf": "tab:orange", "flow-only": "tab:blue",
           "nmflowgan": "tab:red", "oracle": "tab:green", "decorrelated oracle": "tab:olive"}
CHANNELS = ("R", "G", "B")


def _subplots(rows: int, columns: int, figsize: tuple[float, float], **options: object) -> tuple[object, object]:
    """A figure and its ``rows x columns`` axes (always 2-D). Built from ``matplotlib.figure.Figure`` directly,
    without pyplot, so the library never selects a backend or touches the process's other figures."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize)
    return figure, figure.subplots(rows, columns, squeeze=False, **options)


def _condition_panels(keys: list[tuple[str, float]], **options: object) -> tuple[object, dict]:
    """A figure with one titled panel per (camera, ISO): cameras in rows, ISOs in columns.

    Returns the figure and ``{(camera, iso): axis}``.
    """
    cameras, isos = sorted({c for c, _ in keys}), sorted({i for _, i in keys})
    figure, axes = _subplots(len(cameras), len(isos), (2.6 * len(isos), 2.2 * len(cameras)), **options)
    panels = {}
    for key in keys:
        axis = axes[cameras.index(key[0])][isos.index(key[1])]
        axis.set_title(f"{key[0]} ISO {key[1]:g}", fontsize=8)
        axis.tick_params(labelsize=7)
        panels[key] = axis
    return figure, panels


def _save(figure: object, path: Path) -> Path:
    figure.tight_layout()  # type: ignore[attr-defined]
    figure.savefig(path, dpi=80)  # type: ignore[attr-defined]
    return path


def _intensity_lines(lines: dict, ylabel: str, path: Path, zero_line: bool = False) -> Path:
    """Rows: camera/ISO conditions; columns: R, G, B; one line per source against clean intensity.

    Args:
        lines: ``{(camera, iso): {"real" or source: [(x, y) for R, G, B]}}``.
    """
    keys = sorted(lines)
    figure, axes = _subplots(len(keys), 3, (10, 2.2 * len(keys)), sharex=True)
    for row, key in enumerate(keys):
        for channel in range(3):
            axis = axes[row][channel]
            for name, curves in lines[key].items():
                axis.plot(*curves[channel], marker="o" if zero_line else None, ms=3, color=COLOURS.get(name),
                          lw=2.2 if name == "real" else 1.2, label=name)
            if zero_line:
                axis.axhline(0, color="lightgray", lw=0.8)
            axis.set_title(f"{key[0]} ISO {key[1]:g} - {CHANNELS[channel]}", fontsize=8)
            axis.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    for axis in axes[-1]:
        axis.set_xlabel("clean intensity (0-255)", fontsize=8)
    figure.supylabel(ylabel)
    return _save(figure, path)


def std_vs_intensity(stats: dict, path: Path) -> Path:
    """Rows: camera/ISO conditions; columns: R, G, B; lines: real and each model (Fig. 2 of the paper)."""
    lines = {key: {name: [(value.intensity.numpy(), value.std[c].numpy()) for c in range(3)]
                   for name, value in sources.items()} for key, sources in stats.items()}
    return _intensity_lines(lines, "noise std (8-bit units)", path)


def skewness_vs_intensity(moments: dict, path: Path) -> Path:
    """Rows: camera/ISO conditions; columns: R, G, B; lines: the noise's skewness in each clean-intensity bin,
    real and each model (0 for Gaussian noise; bins with fewer than ``MIN_PIXELS`` real pixels left out).

    Args:
        moments: ``{(camera, iso): {"real" or source: IntensityMoments}}``.
    """
    from nmflowgan.metrics.moments import BIN_EDGES, MIN_PIXELS

    centres = (np.array(BIN_EDGES[:-1]) + np.array(BIN_EDGES[1:])) / 2
    lines = {}
    for key, sources in moments.items():
        enough = sources["real"].count.numpy() >= MIN_PIXELS
        lines[key] = {name: [(centres, np.where(enough[c], value.skewness[c].numpy(), np.nan)) for c in range(3)]
                      for name, value in sources.items()}
    return _intensity_lines(lines, "noise skewness", path, zero_line=True)


def correlation_vs_distance(stats: dict, path: Path) -> Path:
    """Rows: camera/ISO conditions; columns: R, G, B; lines: the correlation of the noise at pixel distance
    d for real noise and each model (Fig. 3 of the paper, per channel)."""
    keys = sorted(stats)
    figure, axes = _subplots(len(keys), 3, (10, 2.2 * len(keys)), sharex=True, sharey=True)
    for row, key in enumerate(keys):
        for channel in range(3):
            axis = axes[row][channel]
            for name, value in stats[key].items():
                curve = value.corr[channel].numpy()
                axis.plot(range(len(curve)), curve, marker="o", ms=3, color=COLOURS.get(name),
                          lw=2.2 if name == "real" else 1.2, label=name)
            axis.axhline(0, color="lightgray", lw=0.8)
            axis.set_title(f"{key[0]} ISO {key[1]:g} - {CHANNELS[channel]}", fontsize=8)
            axis.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    figure.supxlabel("pixel distance")
    figure.supylabel("noise correlation")
    return _save(figure, path)


def noise_histograms(hists: dict, path: Path) -> Path:
    """One panel per camera/ISO: the 130-bin noise histograms (log scale) of real noise and each model."""
    centres = EDGE_LOW + BIN_WIDTH * (np.arange(N_BINS) + 0.5)
    figure, panels = _condition_panels(list(hists))
    for key, by_model in hists.items():
        for name, counts in by_model.items():
            density = (counts / counts.sum()).numpy()
            panels[key].semilogy(centres, np.where(density > 0, density, np.nan), color=COLOURS.get(name),
                                 lw=2.2 if name == "real" else 1.0, label=name)
        panels[key].set_xlim(-80, 80)
    next(iter(panels.values())).legend(fontsize=7)
    figure.supxlabel("noise (8-bit units)")
    return _save(figure, path)


def image_grid(rows: list[tuple[str, list[tuple[str, np.ndarray]]]], path: Path, panel_inches: float = 2.1) -> Path:
    """A grid of ``uint8 (H, W, 3)`` images: ``rows`` is ``[(row label, [(column title, image), ...]), ...]``;
    the first row's titles head the columns."""
    columns = len(rows[0][1])
    figure, axes = _subplots(len(rows), columns, (panel_inches * columns, panel_inches * len(rows)))
    for row, (label, panels) in enumerate(rows):
        for column, (title, image) in enumerate(panels):
            axes[row][column].imshow(image, interpolation="nearest")
            axes[row][column].set_xticks([])
            axes[row][column].set_yticks([])
            if row == 0:
                axes[row][column].set_title(title, fontsize=8)
        axes[row][0].set_ylabel(label, fontsize=8)
    return _save(figure, path)


def grid_std(pooled: dict[str, dict], path: Path) -> Path:
    """Rows: the real noise and each source; columns: R, G, B; each panel the noise std at each position of the 8x8
    grid (``[y % 8][x % 8]``, the 2x2 colour-filter phases repeating inside it) relative to its mean, in percent, on
    one colour scale.

    Args:
        pooled: ``{"real" or source: GridStats.to_dict()}``.
    """
    names = list(pooled)
    relative = {n: np.asarray(pooled[n]["block_std"], dtype=float) for n in names}  # (3, 8, 8)
    relative = {n: 100 * (v / v.mean(axis=(1, 2), keepdims=True).clip(1e-12) - 1) for n, v in relative.items()}
    limit = max(1.0, max(float(np.abs(v).max()) for v in relative.values()))
    figure, axes = _subplots(len(names), 3, (7.5, 2.3 * len(names)))
    for row, name in enumerate(names):
        for channel in range(3):
            axis = axes[row][channel]
            image = axis.imshow(relative[name][channel], cmap="coolwarm", vmin=-limit, vmax=limit)
            axis.set_title(f"{name} {CHANNELS[channel]}: cv {pooled[name]['block_cv'][channel]:.3f}", fontsize=8)
            axis.set_xticks(range(8))
            axis.set_yticks(range(8))
            axis.tick_params(labelsize=6)
    figure.colorbar(image, ax=[a for r in axes for a in r], shrink=0.6, label="std relative to its mean (%)")
    figure.savefig(path, dpi=80)
    return path


def sample_grid(examples: dict, path: Path, model: str = "nmflowgan", max_rows: int = 8, gain: float = 4.0) -> Path:
    """Rows: conditions; columns: clean, real noisy, synthesized noisy, real noise and synthesized noise
    (amplified ``gain`` times around mid-grey)."""
    titles = ("clean", "real noisy", f"{model} noisy", f"real noise x{gain:g}", f"{model} noise x{gain:g}")
    rows = []
    for key in sorted(examples)[:max_rows]:
        example = examples[key]
        clean = example["clean"].double()
        panels = (clean, clean + example["real"], clean + example[model],
                  128 + gain * example["real"], 128 + gain * example[model])
        images = [panel.clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy() for panel in panels]
        rows.append((f"{key[0]} ISO {key[1]:g}", list(zip(titles, images))))
    return image_grid(rows, path)


def validation_curve(records: list[dict], path: Path) -> Path:
    """Validation KLD (log scale) against the training step, from ``metrics.jsonl`` records."""
    validation = [m for m in records if "val_kld" in m]
    figure, axes = _subplots(1, 1, (5, 3))
    axis = axes[0][0]
    axis.plot([m["step"] for m in validation], [m["val_kld"] for m in validation], marker="o")
    axis.set_xlabel("step")
    axis.set_ylabel("validation KLD")
    axis.set_yscale("log")
    return _save(figure, path)
