"""``nmflowgan demo``: the whole pipeline on the built-in camera simulator, offline, on a laptop CPU.

Stages, each kept on disk so that an interrupted demo continues where it stopped when run again:

1. simulate a simcam data set (5 cameras x 4 ISOs);
2. train the ``small`` noise model (the flow's NLL and its latent correlation; see docs/realism.md);
3. evaluate it against ``gaussian``, ``nlf``, ``flow-only``, the ``oracle`` and the ``decorrelated oracle``;
4. synthesize example images for every camera at three ISOs, one of them never seen in training;
5. train small denoisers on real and on synthesized pairs, and score them on real test pairs;
6. write ``report.md`` and ``report.html`` with every table and figure, all measured in this run.

Training lengths are sized to the budget from this machine's own speed: before the noise model and before
the denoisers, a few steps are timed, and each stage gets at most its share of the budget (never more than
the reference lengths, 3,000 and 800 steps, which fit 20 minutes on a 2-core CPU with native bf16). The plan
is kept in ``plan.json``, so a continued demo trains to the same lengths, and the report says what it did.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import torch

from nmflowgan import __version__
from nmflowgan.atomic import write_text
from nmflowgan.config import Config, small
from nmflowgan.data.folders import find_pairs
from nmflowgan.data.io import read_rgb
from nmflowgan.data.simcam import builtin_cameras, simulate
from nmflowgan.denoising import evaluate_denoiser
from nmflowgan.metrics.realism import Realism
from nmflowgan.models.noise_model import NoiseModel
from nmflowgan.reporting import plots
from nmflowgan.reporting.report import (
    FIGURES,
    condition_table,
    correlation_table,
    evaluate_to_report,
    markdown_to_html,
    results_table,
    shape_table,
)
from nmflowgan.seeds import checked_seed
from nmflowgan.synthesis import synthesize_image
from nmflowgan.training.checkpoint import read_checkpoint_meta
from nmflowgan.training.denoiser_trainer import DenoiserTrainingOptions, train_denoiser
from nmflowgan.training.loop import TrainResult
from nmflowgan.training.noise_trainer import NoiseTrainingOptions, train_noise_model
from nmflowgan.training.run import StopRequest, read_metrics

log = logging.getLogger(__name__)
T = TypeVar("T")
TRAIN_ISOS = (100, 400, 1600, 3200)
EXAMPLE_ISOS = (100, 800, 3200)  # 800 lies between trained ISOs: the continuous condition interpolates
DENOISER_SOURCES = ("real", "nmflowgan", "flow-only", "nlf", "gaussian")
BASE_MINUTES = 20
# Further captures of every test image, from which evaluation scores the decorrelated oracle and the correlation
# charge (8 leave neighbours an eighth of their correlation).
ORACLE_DRAWS = 8
REFERENCE_STEPS = {"noise model": 3000, "denoiser": 800}
# The share of the budget one training may take. On the reference machine (2-core AMD EPYC with AVX512-BF16)
# the noise model trained 3,000 steps in 340 s and each denoiser 800 steps in 100-130 s, 17 minutes in all
# with simulation, evaluation and examples: these shares keep the reference lengths there and shrink them
# where steps are slower.
SHARES = {"noise model": 0.33, "denoiser": 0.11}
# Steps timed in a scratch run; only the rate of its last 20 counts: the first steps run slower (on the reference
# machine about 6.5 steps/s over steps 1-30 against 8.5 from then on, for the noise model).
CALIBRATION_STEPS, WARMUP_STEPS = 50, 30
# Validation passes in a stage (the first at step 0, then every tenth or quarter of the length): their time comes out
# of the stage's share before its steps are sized.
NOISE_VALIDATIONS, DENOISER_VALIDATIONS = 11, 5
# Kept out of the time left for a stage: the set-up before the demo starts (a fresh clone's pip install took 37-50 s)
# and the report, and the seconds to score each trained denoiser (4 s on a fast 2-core CPU).
SETUP_S, SCORING_S = 60.0, 10.0


def _stage(name: str, progress: bool) -> None:
    if progress:
        print(f"\n== {name}", flush=True)


@dataclass
class DemoRun:
    """One demo folder and what every stage reads: the data, the settings, the stop request, and the two
    records that make a demo resumable: the seconds each stage took (``timings.json``) and the training
    lengths decided for this machine (``plan.json``)."""

    out: Path
    budget_minutes: float
    seed: int
    progress: bool
    stop: StopRequest
    config: Config = field(default_factory=small)
    timings: dict[str, float] = field(default_factory=dict)
    plan: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        for name in ("timings", "plan"):
            path = self.out / f"{name}.json"
            if path.exists():
                setattr(self, name, json.loads(path.read_text()))

    @property
    def data(self) -> Path:
        return self.out / "data"

    @property
    def noise_run(self) -> Path:
        return self.out / "noise-model"

    @property
    def scale(self) -> float:
        """The budget relative to the reference 20 minutes (at least 0.05)."""
        return max(0.05, self.budget_minutes / BASE_MINUTES)

    def timed(self, name: str, function: Callable[[], T]) -> T:
        """Runs ``function`` and adds its seconds to stage ``name`` in ``timings.json``."""
        start = time.perf_counter()
        result = function()
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
        write_text(self.out / "timings.json", json.dumps(self.timings, indent=2) + "\n")
        return result

    def sized(self, stage: str, floor: int, validations: int, calibrate: Callable[[], tuple[float, float]],
              runs: int = 1) -> int:
        """The steps of ``stage``: the reference length scaled by the budget, cut to what fits the stage's share of
        the budget besides its ``validations`` passes, at the speed (steps/s) and the seconds per validation that
        ``calibrate()`` measures on this machine; decided once, kept in plan.json.

        The share is also cut to the time left: what the budget, less :data:`SETUP_S` (scaled), leaves after the
        stages done so far, split between the stage's ``runs`` (each keeping :data:`SCORING_S` to be scored), so that
        stages that ran longer on a slower machine (simulation, evaluation) shorten what follows instead of the demo
        overrunning.
        """
        if stage not in self.plan:
            wanted = max(floor, int(REFERENCE_STEPS[stage] * self.scale))
            speed, validation_s = calibrate() if wanted > 2 * CALIBRATION_STEPS else (None, 0.0)
            if speed is not None and not math.isfinite(speed):  # stopped while timing: decide next time
                return wanted
            left_s = self.budget_minutes * 60 - SETUP_S * self.scale - sum(self.timings.values())
            share_s = min(SHARES[stage] * self.budget_minutes * 60, max(0.0, left_s / runs - SCORING_S))
            fits = int(max(0.0, share_s - validations * validation_s) * speed) if speed else wanted
            self.plan[stage] = {"steps": max(floor, min(wanted, fits)), "wanted": wanted, "steps_per_s": speed,
                                "validation_s": validation_s, "validations": validations, "share_s": share_s}
            write_text(self.out / "plan.json", json.dumps(self.plan, indent=2) + "\n")
        return int(self.plan[stage]["steps"])


def demo(out: str | Path = "nmflowgan-demo", budget_minutes: float = BASE_MINUTES, seed: int = 0,
         progress: bool = True, stop: StopRequest | None = None) -> Path | None:
    """Runs (or continues) the demo in ``out`` and returns the path of ``report.md``.

    ``budget_minutes`` scales the training lengths; the default fits 20 minutes on 2 CPU cores. ``stop``:
    when set, the stage running saves its progress and the demo returns None (run it again to continue).
    """
    run = DemoRun(Path(out), budget_minutes, checked_seed(seed), progress, stop if stop is not None else StopRequest())
    _stage("1/6 simulate a simcam data set", progress)
    simulate_data(run)
    _stage("2/6 train the noise model (small preset)", progress)
    if not train_noise_model_stage(run):
        return None
    _stage("3/6 evaluate against gaussian, nlf, flow-only and the oracles", progress)
    evaluate_noise_model(run)
    _stage("4/6 synthesize examples (ISO 800 was never seen in training)", progress)
    if not (run.out / "examples.png").exists():
        run.timed("synthesize examples", lambda: _examples(run.noise_run, run.data, run.out / "examples.png", seed))
    _stage("5/6 train and score denoisers on real and synthesized pairs", progress)
    scores = train_and_score_denoisers(run)
    if scores is None:
        return None
    _stage("6/6 write the report", progress)
    report = _write_report(run.out, run.noise_run, run.out / "evaluation", scores, run.timings, run.plan)
    if progress:
        print(f"\nreport: {report} (and {report.with_suffix('.html')})")
    return report


def simulate_data(run: DemoRun) -> None:
    """The demo's simcam data set (5 cameras, ``TRAIN_ISOS``, up to 16 scenes of 256 px), unless it exists."""
    if not (run.data / "simcam.json").exists():
        scenes = max(4, round(16 * min(1.0, run.scale)))
        run.timed("simulate", lambda: simulate(run.data, isos=TRAIN_ISOS, scenes=scenes, size_px=256, seed=run.seed,
                                               overwrite=True, progress=run.progress, oracle_draws=ORACLE_DRAWS))


def _train_noise(run: DemoRun, folder: Path, steps: int, resume: bool = False, val_every: int | None = None,
                 log_every: int = 10) -> TrainResult:
    """The ``small`` noise model for ``steps`` steps in ``folder``, its validation (and a game's warm-up, when the
    config has one) scaled to the length."""
    config = run.config
    sized_config = replace(config, train=replace(config.train, val_every=val_every or max(10, steps // 10)))
    if config.gan is not None:
        warmup = max(10, int(config.gan.flow_warmup_steps * min(1.0, steps / REFERENCE_STEPS["noise model"])))
        sized_config = replace(sized_config, gan=replace(config.gan, flow_warmup_steps=warmup))
    return train_noise_model(sized_config, NoiseTrainingOptions(
        data=run.data, out=folder, steps=steps, resume=resume, overwrite=not resume, device="cpu", seed=run.seed,
        quiet=not run.progress, log_every=log_every), run.stop)


def train_noise_model_stage(run: DemoRun) -> bool:
    """Times the noise model's steps, decides its length and trains it (continuing a stopped run); False when a
    stop came first."""
    steps = run.sized("noise model", 20, NOISE_VALIDATIONS, lambda: run.timed("calibrate", lambda: _speed(
        run.out / "calibration-noise-model",
        lambda folder: _train_noise(run, folder, CALIBRATION_STEPS, val_every=CALIBRATION_STEPS, log_every=10),
        run.config.train.batch_size)))
    if run.stop:  # stopped while timing: nothing is decided yet
        return False
    if not _finished(run.noise_run, steps):
        resume = (run.noise_run / "last").exists()  # else a run stopped before its first checkpoint starts again
        run.timed("train noise model", lambda: _train_noise(run, run.noise_run, steps, resume))
    return not run.stop


def evaluate_noise_model(run: DemoRun) -> None:
    """Reports for the run's best checkpoint (lowest validation KLD among the eligible steps) and its last one:
    KLD alone is blind to spatial correlation, so the report shows both."""
    for folder, checkpoint in ((run.out / "evaluation", run.noise_run), (run.out / "evaluation-last",
                                                                          run.noise_run / "last")):
        if not (folder / "results.json").exists():
            run.timed("evaluate", lambda folder=folder, checkpoint=checkpoint: evaluate_to_report(
                checkpoint, run.data, folder, patch_px=64, max_patches=400, seed=run.seed, overwrite=True,
                progress=run.progress, device="cpu"))


def _train_denoiser(run: DemoRun, folder: Path, noise: str, steps: int, flow_only: bool = False,
                    val_every: int | None = None, log_every: int = 10) -> TrainResult:
    resume = (folder / "last").exists()
    return train_denoiser(run.config, DenoiserTrainingOptions(
        data=run.data, out=folder, noise=noise, flow_only=flow_only, steps=steps, resume=resume, overwrite=not resume,
        device="cpu", seed=run.seed, val_every=val_every or max(10, steps // 4), quiet=not run.progress,
        log_every=log_every), run.stop)


def train_and_score_denoisers(run: DemoRun) -> dict | None:
    """A DnCNN per noise source of ``DENOISER_SOURCES``, each scored on 40 real noisy test images (``denoisers.json``
    keeps the scores, so a continued demo skips what is done); None when a stop came first."""
    noise_run = str(run.noise_run)
    # timed on synthesized pairs, the dearest source (the noise model draws every batch)
    steps = run.sized("denoiser", 10, DENOISER_VALIDATIONS, lambda: run.timed("calibrate", lambda: _speed(
        run.out / "calibration-denoiser",
        lambda folder: _train_denoiser(run, folder, noise_run, CALIBRATION_STEPS, val_every=CALIBRATION_STEPS,
                                       log_every=10),
        run.config.denoiser_train.batch_size)), runs=len(DENOISER_SOURCES))
    if run.stop:
        return None
    scores_path = run.out / "denoisers.json"
    scores = json.loads(scores_path.read_text()) if scores_path.exists() else {}
    for source in DENOISER_SOURCES:
        if source in scores:
            continue
        folder = run.out / f"denoiser-{source}"
        noise = noise_run if source in ("nmflowgan", "flow-only") else source
        if not _finished(folder, steps):
            run.timed(f"denoiser {source}", lambda folder=folder, noise=noise, source=source: _train_denoiser(
                run, folder, noise, steps, flow_only=source == "flow-only"))
        if run.stop:
            return None
        result = run.timed(f"score denoiser {source}", lambda folder=folder: evaluate_denoiser(
            folder, run.data, max_images=40, progress=run.progress))
        scores[source] = result.overall
        write_text(scores_path, json.dumps(scores, indent=2) + "\n")
    return scores


def _speed(scratch: Path, train: Callable[[Path], object], batch_size: int) -> tuple[float, float]:
    """Trains ``CALIBRATION_STEPS`` steps into ``scratch`` with ``train(scratch)`` (metric lines every 10 steps,
    validations at the start and the end), removes the scratch run and returns the steady rate in steps/s (the first
    ``WARMUP_STEPS`` steps do not count; nan when stopped first) and the seconds of its last validation (the first
    one warms up)."""
    shutil.rmtree(scratch, ignore_errors=True)  # what a killed calibration left
    try:
        train(scratch)
        metrics = read_metrics(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rates = [m["patches_per_s"] for m in metrics if m.get("step", 0) > WARMUP_STEPS and "patches_per_s" in m]
    validation_s = [m["val_seconds"] for m in metrics if "val_seconds" in m]
    return (sum(rates) / len(rates) / batch_size if rates else float("nan")), (validation_s or [0.0])[-1]


def _finished(run: Path, steps: int) -> bool:
    last = run / "last"
    return last.exists() and int(read_checkpoint_meta(last.resolve())["step"]) >= steps


def _examples(noise_run: Path, data: Path, path: Path, seed: int) -> None:
    """A grid: one test scene, every camera (rows) at three ISOs (columns), next to the real capture."""
    model = NoiseModel.load(noise_run)
    records = find_pairs(data, "test")
    rows = []
    for camera in [c.code for c in builtin_cameras() if c.code in model.cameras]:
        record = next(r for r in records if r.camera == camera and r.iso == max(TRAIN_ISOS))
        clean = read_rgb(record.clean)[:128, :128]
        panels = [("clean", clean), (f"real ISO {max(TRAIN_ISOS)}", read_rgb(record.noisy)[:128, :128])]
        panels += [(f"synth. ISO {iso}" + (" (unseen)" if iso not in TRAIN_ISOS else ""),
                    synthesize_image(model, clean, camera, iso, seed=seed)) for iso in EXAMPLE_ISOS]
        rows.append((camera, panels))
    plots.image_grid(rows, path, panel_inches=2.2)


def _sizing(plan: dict) -> str:
    """One sentence per training stage: how long it trained and why."""
    parts = []
    for stage, entry in plan.items():
        if entry["steps_per_s"] is None:
            parts.append(f"{stage}: {entry['steps']:,} steps (the budget's length; too short to time)")
        else:
            cut = "" if entry["steps"] >= entry["wanted"] else f", cut from {entry['wanted']:,} to fit"
            validations = (f" and {entry['validations']} validations of {entry['validation_s']:.1f} s"
                           if "validations" in entry else "")
            parts.append(f"{stage}: {entry['steps']:,} steps (measured {entry['steps_per_s']:.1f} steps/s"
                         f"{validations}, a share of {entry['share_s']:.0f} s{cut})")
    return "Training lengths, sized to the budget on this machine: " + "; ".join(parts) + "."


def _write_report(out: Path, noise_run: Path, evaluation: Path, scores: dict, timings: dict, plan: dict) -> Path:
    noise_steps, denoiser_steps = plan["noise model"]["steps"], plan["denoiser"]["steps"]
    def load(folder: Path) -> Realism:
        return Realism.from_dict(json.loads((folder / "results.json").read_text()))

    result, last = load(evaluation), load(out / "evaluation-last")
    best_step = read_checkpoint_meta((noise_run / "best").resolve())["step"]
    validation = [m for m in read_metrics(noise_run) if "val_kld" in m]
    best_kld, best_corr = next((m["val_kld"], m["val_corr_error"]) for m in validation if m["step"] == best_step)
    plots.validation_curve(read_metrics(noise_run), out / "training.png")
    machine = (f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
               f"Python {platform.python_version()}, nmflowgan {__version__}")
    denoiser_rows = ["| denoiser trained on | PSNR (dB) | SSIM |", "|---|---|---|"]
    denoiser_rows += [f"| {s} | {v['psnr']:.2f} | {v['ssim']:.4f} |" for s, v in scores.items()]
    if scores:
        first = next(iter(scores.values()))
        denoiser_rows.append(f"| (noisy input) | {first['noisy_psnr']:.2f} | {first['noisy_ssim']:.4f} |")
    timing_rows = ["| stage | seconds |", "|---|---|"] + [f"| {k} | {v:.0f} |" for k, v in timings.items()]
    timing_rows.append(f"| total | {sum(timings.values()):.0f} |")
    lines = [
        "# nmflowgan demo", "",
        f"Measured in this run on {machine}. Noise model: `small` preset, {noise_steps} steps; denoisers: DnCNN "
        f"({denoiser_steps} steps each). Validation KLD: {validation[0]['val_kld']:.4f} at step 0, "
        f"{best_kld:.4f} at the best checkpoint (step {best_step}), {validation[-1]['val_kld']:.4f} at the last; "
        f"validation correlation error {validation[0]['val_corr_error']:.4f}, {best_corr:.4f} and "
        f"{validation[-1]['val_corr_error']:.4f}.", "", _sizing(plan), "",
        f"## Noise realism on the simcam test set (lower is better): best checkpoint, step {best_step}", "",
        results_table(result), "",
        f"## The same for the last checkpoint, step {noise_steps}", "",
        "`best` is chosen by validation KLD alone, which cannot see spatial correlation; the last checkpoint "
        "shows whether the correlation and the histogram kept improving after it.", "",
        results_table(last, with_charge=False), "",
        "## Noise level and shape (best checkpoint)", "", shape_table(result), "",
        "## Spatial and cross-channel correlation (best checkpoint)", "", correlation_table(result), "",
        "## KLD per camera and ISO", "", condition_table(result, "kld"), "",
        "## Correlation error per camera and ISO", "", condition_table(result, "corr_error"), "",
        "## Denoisers trained on each noise source, scored on real noisy test images", "", *denoiser_rows, "",
        "## Synthesized examples", "", "![examples](examples.png)", "",
        "## Training", "", "![training](training.png)", "",
    ]
    for caption, name in FIGURES.items():
        lines += [f"## {caption}", "", f"![{caption}](evaluation/{name})", ""]
    lines += ["## Time per stage", "", *timing_rows, ""]
    text = "\n".join(lines)
    write_text(out / "report.md", text)
    write_text(out / "report.html", markdown_to_html(text, out))
    return out / "report.md"

