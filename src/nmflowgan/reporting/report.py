"""The evaluation report: ``results.json``, ``report.md`` and a self-contained ``report.html``."""

from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from nmflowgan.atomic import write_text
from nmflowgan.data.io import MAX_PIXELS
from nmflowgan.evaluation import DECORRELATED, EvalResult, correlation_charge, evaluate
from nmflowgan.evaluation import protocol as evaluation_protocol
from nmflowgan.metrics.moments import BIN_EDGES, MIN_PIXELS, N_BINS
from nmflowgan.metrics.realism import REAL, Realism
from nmflowgan.models.noise_model import BUILTIN
from nmflowgan.models.sampler import SamplingOptions
from nmflowgan.outputs import check_output_folder
from nmflowgan.reporting import plots

# The figures of an evaluation report: caption -> file name in the report's folder.
FIGURES = {"Noise level versus clean intensity": "std_vs_intensity.png",
           "Noise skewness versus clean intensity": "skewness_vs_intensity.png",
           "Correlation versus pixel distance": "correlation.png", "Noise histograms": "histograms.png",
           "Noise std by position in the 8x8 grid": "grid_std.png",
           "Examples": "samples.png"}
MOMENTS_NOTE = (
    "Each cell is `mean / std / skewness / kurtosis` of the noise (8-bit units; 0 and 3 for Gaussian noise) of "
    "the pixels whose clean value lies in the bin, pooled over the condition's patches. `skew match` in the "
    "overall table is the fraction of these cells where a source's skewness is within 0.3 of the real noise's."
)
AKLD_NOTE = (
    "AKLD compares local noise-variance estimates, and spatially correlated noise makes those estimates "
    "noisier: a second real draw of the same image (the `oracle`) scores well above zero, and white noise "
    "of the right variance can score below it. Read AKLD next to the oracle's, never alone, and let the "
    "correlation error speak for spatial structure."
)
CORR_NOTE = (
    "`corr_error` is the mean absolute difference between real and synthesized noise correlations at pixel "
    "distances 1-3 (per channel) and across channels (R-G, G-B, R-B), averaged over camera/ISO conditions."
)
NEIGHBOUR_NOTE = (
    "Correlations are pooled per camera/ISO and averaged over conditions; the curves per channel are in the "
    "figure below and every value is in results.json. `neighbour KLD` scores the histograms of the differences "
    "between horizontal and vertical neighbours: correlated noise has smaller differences than white noise of "
    "the same level, so it sees spatial correlation that the per-pixel KLD cannot."
)
SHAPE_NOTE = (
    "std: the noise standard deviation over all scored pixels (8-bit units); kurtosis: that of each patch's "
    "mean-removed noise, averaged over patches (3 for Gaussian noise; heavier tails score higher)."
)


def results_table(realism: Realism, with_charge: bool = True) -> str:
    """The overall table in Markdown, with each source's KLD above the oracle's when there is one, and below it the
    correlation charge when the decorrelated oracle was scored (unless ``with_charge`` is False: a second table of
    the same test patches, whose charge is the same)."""
    oracle = realism.models["oracle"].kld if "oracle" in realism.models else None
    header = ("| model | KLD | AKLD | corr_error | neighbour KLD | skew match |"
              + (" KLD above oracle |" if oracle is not None else ""))
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for name, scores in realism.models.items():
        line = (f"| {name} | {scores.kld:.4f} | {scores.akld:.4f} | {scores.corr_error:.4f} | "
                f"{scores.neighbour_kld:.4f} | {scores.skew_match:.2f} |")
        if oracle is not None:
            line += f" {scores.kld - oracle:+.4f} |"
        lines.append(line)
    charge = correlation_charge(realism.models)
    if charge is not None and with_charge:
        lines += ["", f"Correlation charge: {charge:+.4f}, the oracle's KLD minus the {DECORRELATED}'s (the same "
                  "real noise, each value from one of several further captures, so neighbours no longer correlate): "
                  "what the per-patch KLD charges the true noise for its spatial correlation. A model whose noise is "
                  "as correlated as the real noise pays it too."]
    return "\n".join(lines)


GRID_NOTE = (
    "Per (camera, ISO), averaged: phase std error, the mean of |std / real std - 1| over channels and the four "
    "pixels of the 2x2 colour-filter grid; phase r1 error, the mean |r1 - real r1| of the horizontal lag-1 "
    "correlation there; 8x8 CV error, the mean over channels of the difference in the coefficient of variation of "
    "the std over the 64 positions of the 8x8 JPEG grid. Positions count from each patch's top-left pixel."
)


def grid_table(realism: Realism) -> str:
    """The real noise's grid statistics (per channel) and each source's grid errors (:mod:`.grid_stats`)."""
    if not realism.grid_real:
        return "(not measured by the version that wrote these results)"
    real = realism.grid_real
    def grid(values: list[list[float]]) -> str:  # a 2x2 grid as "top-left top-right / bottom-left bottom-right"
        return " / ".join(" ".join(f"{v:.2f}" for v in row) for row in values)

    channels = [f"{channel}: std {grid(real['phase_std'][c])}, r1 {grid(real['phase_r1'][c])}, "
                f"8x8 CV {real['block_cv'][c]:.3f}" for c, channel in enumerate("RGB")]
    lines = ["Real noise by 2x2 phase (rows y % 2; columns x % 2), pooled: " + "; ".join(channels) + ".", "",
             "| model | phase std error | phase r1 error | 8x8 CV error |", "|---|---|---|---|"]
    for name, errors in realism.grid_errors.items():
        lines.append(f"| {name} | {errors['phase_std_error']:.3f} | {errors['phase_r1_error']:.3f} | "
                     f"{errors['block_cv_error']:.3f} |")
    return "\n".join(lines)


CONTENT_NOTE = (
    "Per (camera, ISO), averaged: the mean |r1 - real r1| of the horizontal lag-1 correlation and the mean "
    "|std / real std - 1|, over channels, eight clean-intensity bins and two classes of pixels: flat (horizontal "
    "clean gradient below 2) and edges (12 or more), in the cells with at least 500 pixels of each."
)


def content_table(realism: Realism) -> str:
    """The real noise's lag-1 correlation on flat areas and edges, and each source's errors there
    (:mod:`.content_stats`)."""
    if not realism.content_real:
        return "(not measured by the version that wrote these results)"
    real = realism.content_real
    count = torch.tensor(real["count"], dtype=torch.float64)  # [class][channel][bin]
    r1 = torch.tensor(real["r1"], dtype=torch.float64)
    pooled = (r1 * count).sum(dim=(1, 2)) / count.sum(dim=(1, 2)).clamp_min(1)
    lines = [f"Real noise, horizontal lag-1 correlation pooled over channels and intensities: flat {pooled[0]:.2f}, "
             f"edges {pooled[1]:.2f}.", "", "| model | flat/edge r1 error | flat/edge std error |", "|---|---|---|"]
    for name, errors in realism.content_errors.items():
        lines.append(f"| {name} | {errors['content_r1_error']:.3f} | {errors['content_std_error']:.3f} |")
    return "\n".join(lines)


def shape_table(realism: Realism) -> str:
    """Per channel noise std (8-bit units) and kurtosis of the real noise and of each source."""
    lines = ["| noise | std R / G / B | kurtosis R / G / B |", "|---|---|---|"]
    rows = [("real", realism.real)] + [(name, scores.shape) for name, scores in realism.models.items()]
    for name, shape in rows:
        lines.append(f"| {name} | {' / '.join(f'{v:.2f}' for v in shape.std)} | "
                     f"{' / '.join(f'{v:.2f}' for v in shape.kurtosis)} |")
    return "\n".join(lines)


def moments_table(realism: Realism) -> str:
    """Per camera/ISO, channel and clean-intensity bin with at least ``MIN_PIXELS`` real pixels: the noise's
    mean, std, skewness and kurtosis for the real noise and each source (``mean / std / skew / kurt``)."""
    names = [REAL, *realism.models]
    lines = ["| condition | channel | clean | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    for row in realism.per_condition:
        if REAL not in row.moments:
            continue
        real = row.moments[REAL]
        for channel, letter in enumerate("RGB"):
            for index in range(N_BINS):
                if real.count[channel, index] < MIN_PIXELS:
                    continue
                cells = []
                for name in names:
                    m = row.moments[name]
                    cells.append(" / ".join(f"{float(v[channel, index]):+.2f}" if v is m.mean or v is m.skewness
                                            else f"{float(v[channel, index]):.2f}"
                                            for v in (m.mean, m.std, m.skewness, m.kurtosis)))
                low, high = BIN_EDGES[index], BIN_EDGES[index + 1]
                lines.append(f"| {row.camera} ISO {row.iso:g} | {letter} | [{low},{high}) | {' | '.join(cells)} |")
    return "\n".join(lines)


def correlation_table(realism: Realism) -> str:
    """Per channel the correlation at distance 1 and 2, and the cross-channel correlations, of the real noise
    and of each source, averaged over camera/ISO conditions."""
    names = ["real", *realism.models]
    lines = ["| noise | distance 1, R / G / B | distance 2, R / G / B | R-G / G-B / R-B |", "|---|---|---|---|"]
    for name in names:
        rows = [row.correlation[name] for row in realism.per_condition if name in row.correlation]
        if not rows:
            continue
        spatial = [[sum(r.spatial[c][d] for r in rows) / len(rows) for c in range(3)] for d in (1, 2)]
        cross = [sum(r.cross[k] for r in rows) / len(rows) for k in range(3)]
        cells = [" / ".join(f"{v:.2f}" for v in values) for values in (*spatial, cross)]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines)


def condition_table(realism: Realism, metric: str) -> str:
    """One row per (camera, ISO), one column per source, of ``metric`` (``kld``, ``akld`` or ``corr_error``)."""
    names = list(realism.models)
    lines = ["| camera | ISO | patches | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 3)]
    for row in realism.per_condition:
        values = " | ".join(f"{getattr(row.models[n], metric):.4f}" for n in names)
        lines.append(f"| {row.camera} | {row.iso:g} | {row.n_patches} | {values} |")
    return "\n".join(lines)


def protocol_line(result: EvalResult) -> str:
    """One sentence naming the protocol, the patches and the sampling path."""
    protocol = result.protocol
    count = "every" if protocol.max_patches is None else f"at most {protocol.max_patches} evenly spread"
    recorded = "rounded and clipped to 8 bits" if protocol.rounded else "clipped to the 8-bit range, not rounded"
    line = (f"Protocol `{protocol.name}`: {count} {protocol.patch_px}x{protocol.patch_px} test patches at stride "
            f"{protocol.stride_px} ({result.realism.n_patches} scored), generated noise {recorded}; model sampled "
            f"through the {result.sampling} path; seed {result.seed}.")
    if result.skipped:
        line += (f" Not scored: {sum(result.skipped.values())} test pairs of conditions the model does not know "
                 f"({', '.join(result.skipped)}).")
    return line


def write_report(result: EvalResult, out: Path, title: str = "nmflowgan evaluation", intro: str = "") -> Path:
    """Writes ``results.json``, the figures, ``report.md`` and ``report.html`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "results.json", json.dumps(_finite(result.to_dict()), indent=2) + "\n")
    drawn = {"std_vs_intensity.png": lambda path: plots.std_vs_intensity(result.stats, path),
             "skewness_vs_intensity.png": lambda path: plots.skewness_vs_intensity(
                 {(row.camera, row.iso): row.moments for row in result.realism.per_condition}, path),
             "correlation.png": lambda path: plots.correlation_vs_distance(result.stats, path),
             "histograms.png": lambda path: plots.noise_histograms(result.histograms, path),
             "grid_std.png": lambda path: plots.grid_std({REAL: result.realism.grid_real}
                                                        | result.realism.grid_sources, path),
             "samples.png": lambda path: plots.sample_grid(result.examples, path)}
    figures = {caption: drawn[name](out / name) for caption, name in FIGURES.items()}
    realism = result.realism
    markdown = [f"# {title}", "", intro, "", protocol_line(result),
                "Lower is better in every column but skew match (higher is better).", "",
                results_table(realism), "", CORR_NOTE, "", AKLD_NOTE, "",
                "## Noise level and shape", "", shape_table(realism), "", SHAPE_NOTE, "",
                "## Spatial and cross-channel correlation", "", correlation_table(realism), "", NEIGHBOUR_NOTE, "",
                "## Noise by place in the 2x2 and 8x8 grids", "", grid_table(realism), "", GRID_NOTE, "",
                "## Noise on flat areas and on edges", "", content_table(realism), "", CONTENT_NOTE, "",
                "## Noise shape per clean intensity", "", MOMENTS_NOTE, "", moments_table(realism), "",
                "## KLD per camera and ISO", "", condition_table(realism, "kld"), "",
                "## Correlation error per camera and ISO", "", condition_table(realism, "corr_error"), ""]
    for caption, path in figures.items():
        markdown += [f"## {caption}", "", f"![{caption}]({path.name})", ""]
    text = "\n".join(markdown)
    write_text(out / "report.md", text)
    write_text(out / "report.html", markdown_to_html(text, out))
    return out / "report.md"


def markdown_to_html(text: str, folder: Path) -> str:
    """The small Markdown subset the reports use (headings, tables, images, paragraphs, code) as one
    self-contained HTML page with the images inline."""
    body, table = [], []

    def flush_table() -> None:
        if table:
            rows = [[c.strip() for c in line.strip("|").split("|")] for line in table if not set(line) <= set("|-: ")]
            cells = ["<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in rows[0]) + "</tr>"]
            cells += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rows[1:]]
            body.append("<table>" + "".join(cells) + "</table>")
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        image = re.fullmatch(r"!\[(.*)\]\((.*)\)", line.strip())
        if image:
            data = base64.b64encode((folder / image.group(2)).read_bytes()).decode()
            body.append(f'<p><img alt="{html.escape(image.group(1))}" src="data:image/png;base64,{data}"></p>')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    flush_table()
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "img{max-width:100%}")
    head = f"<head><meta charset='utf-8'><style>{style}</style></head>"
    return f"<!doctype html><html>{head}<body>{''.join(body)}</body></html>\n"


def _inline(text: str) -> str:
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", escaped)


def _finite(value: object) -> object:
    """JSON has no NaN: non-finite floats become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# Every file an evaluation writes into its folder.
REPORT_FILES = ("results.json", "report.md", "report.html", *FIGURES.values())


def is_evaluation(folder: Path) -> bool:
    """Whether ``folder`` holds an evaluation this project wrote: its results.json and nothing but report files."""
    return (folder / "results.json").is_file() and {p.name for p in folder.iterdir()} <= set(REPORT_FILES)


@dataclass(frozen=True)
class Report:
    """Where an evaluation report was written, and its overall table (Markdown)."""

    path: Path
    table: str


def evaluate_to_report(checkpoint: str | Path, data: str | Path, out: str | Path, split: str | None = None,
                       train_split: str | None = None, protocol: str = "default", patch_px: int | None = None,
                       max_patches: int | None = None, fit_patches: int = 2000, seed: int = 0,
                       overwrite: bool = False, progress: bool = True, title: str = "nmflowgan evaluation",
                       options: SamplingOptions | None = None, device: str = "auto",
                       max_pixels: int = MAX_PIXELS, known_only: bool = False) -> Report:
    """Runs :func:`nmflowgan.evaluation.evaluate` and writes ``results.json``, ``report.md``, ``report.html``.

    ``protocol`` is ``default`` (``patch_px`` and ``max_patches`` may change it) or ``official``; ``options``
    defaults to the plain float32 path; ``device`` is ``auto``, ``cpu``, ``cuda`` or ``mps``; ``max_pixels``
    is the largest image accepted.
    """
    out = Path(out)
    inputs = [Path(data)] + ([Path(checkpoint)] if checkpoint != BUILTIN else [])
    check_output_folder(out, "an evaluation", is_evaluation, overwrite, inputs)
    chosen = evaluation_protocol(protocol, patch_px, max_patches)
    result = evaluate(checkpoint, data, split, train_split, chosen, fit_patches, seed, progress=progress,
                      options=options, device=device, max_pixels=max_pixels, known_only=known_only)
    path = write_report(result, out, title=title, intro=f"Checkpoint `{checkpoint}`, data `{data}`.")
    return Report(path, results_table(result.realism))

