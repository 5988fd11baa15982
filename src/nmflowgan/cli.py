"""``nmflowgan <subcommand>``: parse, validate, call one function of :mod:`nmflowgan.api`, print, set the exit code."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from nmflowgan import __version__, api
from nmflowgan.config import PRESETS, Config, load_config, preset
from nmflowgan.data.bursts import MAX_SHIFT_PX, MIN_FRAMES
from nmflowgan.data.io import MAX_PIXELS
from nmflowgan.devices import DEVICE_CHOICES
from nmflowgan.errors import NmflowganError
from nmflowgan.matching import MATCHED_PATCHES
from nmflowgan.models.adaptation import ADAPTED_PARAMETERS
from nmflowgan.models.sampler import PRECISIONS, SamplingOptions
from nmflowgan.seeds import SEED_RULE, checked_seed
from nmflowgan.training.adaptation import ADAPT_LR, ADAPT_STEPS
from nmflowgan.training.loop import TrainResult
from nmflowgan.training.noise_trainer import STAGES
from nmflowgan.training.run import TRAINING_PRECISIONS, StopRequest


def build_parser() -> argparse.ArgumentParser:
    """The ``nmflowgan`` parser: one sub-parser per command, each made by its own builder below."""
    parser = argparse.ArgumentParser(
        prog="nmflowgan", description="Learn and synthesize realistic camera noise (NM-FlowGAN)."
    )
    parser.add_argument("--version", action="version", version=f"nmflowgan {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in (_info_command, _simulate_command, _burst_pairs_command, _train_command, _adapt_command,
                        _match_command, _evaluate_command, _synthesize_command, _train_denoiser_command,
                        _eval_denoiser_command, _denoise_command, _demo_command):
        add_command(sub)
    return parser


def _default(options: type, name: str) -> object:
    """The default of field ``name`` of an options dataclass: the parser states no default of its own."""
    return next(f.default for f in dataclasses.fields(options) if f.name == name)


def _info_command(sub: argparse._SubParsersAction) -> None:
    info = sub.add_parser("info", help="parameter counts of a preset's networks")
    info.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(handler=_info)


def _simulate_command(sub: argparse._SubParsersAction) -> None:
    simulate = sub.add_parser("simulate", help="write a simcam data set (SIDD layout, train/, val/ and test/)")
    simulate.add_argument("--out", required=True, help="folder to create")
    simulate.add_argument("--cameras", nargs="*", default=None,
                          help="built-in camera codes (default: all five; none named: only the --population)")
    simulate.add_argument("--population", type=_non_negative_int, default=0,
                          help="also draw this many cameras across the simulator's parameter space (codes A0, A1, ...)")
    simulate.add_argument("--isos", nargs="+", type=float, default=[100, 400, 1600, 3200])
    simulate.add_argument("--scenes", type=_positive_int, default=20, help="scenes (about a quarter go to test/)")
    simulate.add_argument("--size", type=_positive_int, default=512, help="side of each square scene in pixels")
    simulate.add_argument("--burst", type=_non_negative_int, default=0, metavar="N",
                          help="also write a burst of N noisy frames of every train/ folder into bursts/ (for "
                               "burst-pairs; frames 0 and 1 are the folder's two noisy captures)")
    simulate.add_argument("--oracle-draws", type=_non_negative_int, default=0, metavar="K",
                          help="also write K further noisy captures of every test/ folder, from which evaluate "
                               "scores the decorrelated oracle and the correlation charge")
    _seed_argument(simulate)
    _common_output(simulate)
    simulate.set_defaults(handler=_simulate)


def _match_command(sub: argparse._SubParsersAction) -> None:
    match = sub.add_parser("match", help="which camera and ISO of a model (e.g. builtin) explain your pairs best")
    match.add_argument("--data", required=True, type=Path, help="your pairs (any layout train and adapt read)")
    match.add_argument("--model", default="builtin", help="the model searched: a run or model folder, or builtin")
    match.add_argument("--split", default=None, help="split of --data (default: the training one)")
    match.add_argument("--patches", type=_positive_int, default=MATCHED_PATCHES,
                       help="48 px patches scored per camera/ISO of the pairs")
    match.add_argument("--json", action="store_true", help="machine-readable output")
    match.add_argument("--quiet", action="store_true", help="no progress bar")
    _device_argument(match)
    _seed_argument(match)
    match.set_defaults(handler=_match)


def _burst_pairs_command(sub: argparse._SubParsersAction) -> None:
    pairs = sub.add_parser("burst-pairs",
                           help="turn bursts of a still scene into clean/noisy pairs (a metadata.csv data set)")
    pairs.add_argument("bursts", type=Path,
                       help="a folder of burst folders (each: N aligned noisy frames), or one burst folder")
    pairs.add_argument("--out", required=True, type=Path, help="folder to create (metadata.csv, a folder per burst)")
    pairs.add_argument("--camera", default=None,
                       help="camera name for every burst (default: each frame's EXIF Model)")
    pairs.add_argument("--iso", type=_positive_finite, default=None,
                       help="ISO of every burst (default: each frame's EXIF)")
    pairs.add_argument("--min-frames", type=_positive_int, default=MIN_FRAMES,
                       help="refuse shorter bursts (at least 3)")
    pairs.add_argument("--max-shift", type=_positive_finite, default=MAX_SHIFT_PX, metavar="PX",
                       help="refuse a burst in which a frame moved further than this against the others")
    _common_output(pairs)
    pairs.set_defaults(handler=_burst_pairs)


def _run_arguments(parser: argparse.ArgumentParser, options: type, workers: bool = True) -> None:
    """The arguments of a training run folder (``--out``, ``--resume``) and of its process (device, seed, workers),
    with the defaults of ``options``."""
    parser.add_argument("--out", required=True, type=Path, help="run folder")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last checkpoint (refused unless its data, config, "
                             "seed and options are the ones it started with)")
    _device_argument(parser)
    _seed_argument(parser, _default(options, "seed"))
    if workers:
        parser.add_argument("--workers", type=_non_negative_int, default=_default(options, "workers"),
                            help="DataLoader worker processes")


def _length_arguments(parser: argparse.ArgumentParser) -> None:
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=_positive_int, default=None)
    length.add_argument("--epochs", type=_positive_int, default=None)


def _train_command(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a noise model (NLL + WGAN-GP); resumable, torchrun-ready")
    train.add_argument("--data", required=True, type=Path, help="simcam folder, SIDD tree or metadata.csv folder")
    train.add_argument("--split", default=None,
                       help="train | sidd-train (default: train/ of a folder with train/ and test/; every pair of a "
                            "metadata.csv folder or of a tree in SIDD's layout, whose standard split applies only "
                            "when named)")
    train.add_argument("--val-split", default=None,
                       help="the split to pick the best step on (default: val/ beside train/, else whole scenes held "
                            "out of the training split, or below 10 scenes per camera the bottom eighth of every "
                            "pair's rows; the test split only when named, as it is evaluate's)")
    _preset_arguments(train)
    train.add_argument("--stage", choices=STAGES, default=_default(api.NoiseTrainingOptions, "stage"),
                       help="joint: NLL (+ latent correlation) + GAN (the paper; a config without a gan section "
                            "skips the GAN); flow: no GAN whatever the preset (ablation)")
    _length_arguments(train)
    _run_arguments(train, api.NoiseTrainingOptions)
    _precision_argument(train)
    train.add_argument("--channels-last", action="store_true", help="NHWC memory for refiner and critic")
    train.add_argument("--log-every", type=_positive_int, default=_default(api.NoiseTrainingOptions, "log_every"),
                       help="steps between metrics.jsonl lines")
    train.add_argument("--checkpoint-every", type=_positive_int, default=None, help="steps between checkpoints")
    train.add_argument("--skip-bad", action="store_true", help="log and skip unusable image pairs")
    _max_pixels_argument(train)
    _common_output(train)
    train.set_defaults(handler=_train)


def _adapt_command(sub: argparse._SubParsersAction) -> None:
    adapt = sub.add_parser("adapt", help="teach a trained model (e.g. builtin) new cameras from a few image pairs")
    adapt.add_argument("--base", required=True, help="the model to adapt: builtin, a model folder or a run folder")
    adapt.add_argument("--data", required=True, type=Path,
                       help="pairs of the new camera(s): a metadata.csv folder (camera and ISO per pair), or one "
                            "with train/ and test/")
    adapt.add_argument("--split", default=None, help="training split (default: as train)")
    adapt.add_argument("--val-split", default=None, help="validation split (default: as train: never the test split)")
    adapt.add_argument("--adapt", choices=ADAPTED_PARAMETERS, default=_default(api.AdaptationOptions, "adapt"),
                       help="adapters: the new cameras' weights, a scale and shift per new camera of every hidden "
                            "layer and a value per new camera of each place in its 8x8 grid (the base's cameras draw "
                            "exactly what they drew); camera: only the new cameras' "
                            "weights (the same guarantee, less room); all: every weight, on the new pairs and on the "
                            "base's own noise for its cameras")
    adapt.add_argument("--replay", type=float, default=_default(api.AdaptationOptions, "replay"),
                       help="--adapt all: weight of the base's own noise beside the new pairs (0: none; the base's "
                            "cameras then drift)")
    adapt.add_argument("--steps", type=_positive_int, default=None,
                       help=f"default {ADAPT_STEPS} (minutes on a 2-core CPU)")
    adapt.add_argument("--lr", type=float, default=None,
                       help="default " + " or ".join(f"{rate:g} ({what})" for what, rate in ADAPT_LR.items()))
    _run_arguments(adapt, api.NoiseTrainingOptions, workers=False)
    adapt.add_argument("--skip-bad", action="store_true", help="log and skip unusable image pairs")
    _max_pixels_argument(adapt)
    _common_output(adapt)
    adapt.set_defaults(handler=_adapt)


def _evaluate_command(sub: argparse._SubParsersAction) -> None:
    evaluate = sub.add_parser("evaluate", help="KLD/AKLD/correlation of a model next to the baselines, with a report")
    evaluate.add_argument("--checkpoint", required=True,
                          help="run folder or saved model folder, or builtin (the model in the package)")
    evaluate.add_argument("--data", required=True, type=Path)
    evaluate.add_argument("--split", default=None, help="test split (default: the data set's)")
    evaluate.add_argument("--train-split", default=None, help="split the baselines are fitted on")
    evaluate.add_argument("--known-only", action="store_true",
                          help="score only the test pairs whose camera/ISO the model knows (the others are named in "
                               "the report and results.json); without it such pairs are refused")
    evaluate.add_argument("--out", required=True, type=Path, help="folder for results.json and the report")
    evaluate.add_argument("--protocol", choices=["default", "official"], default="default",
                          help="default: 64x64 patches (at most 512), noise rounded to 8 bits; official: every 96x96 "
                               "patch at stride 48, noise clipped but not rounded (the paper's code)")
    evaluate.add_argument("--patch-px", type=_positive_int, default=None, help="default protocol: patch side (64)")
    evaluate.add_argument("--max-patches", type=_positive_int, default=None,
                          help="default protocol: at most this many (512)")
    _seed_argument(evaluate)
    _device_argument(evaluate)
    _sampling_argument(evaluate, default="plain")
    _max_pixels_argument(evaluate)
    _common_output(evaluate)
    evaluate.set_defaults(handler=_evaluate)


def _synthesize_command(sub: argparse._SubParsersAction) -> None:
    synthesize = sub.add_parser("synthesize", help="draw realistic noise onto clean images (file or folder)")
    synthesize.add_argument("--checkpoint", required=True,
                            help="run folder or saved model folder, or builtin (the model in the package)")
    synthesize.add_argument("--camera", required=True, action="extend", type=_list,
                            help="camera code(s), comma-separated or repeated; every combination is drawn")
    synthesize.add_argument("--iso", required=True, action="extend", type=_iso_list,
                            help="ISO(s) within the trained range (comma-separated or repeated), or 'exif' to "
                                 "read each image's ISO")
    synthesize.add_argument("--extrapolate", action="store_true",
                            help="allow ISOs outside the trained range, up to one trained span (log-ISO) beyond it")
    _seed_argument(synthesize)
    synthesize.add_argument("--tile", type=_positive_int, default=512, help="tile side in pixels (bounds the memory)")
    synthesize.add_argument("--origin", type=_non_negative_int, nargs=2, default=(0, 0), metavar=("Y", "X"),
                            help="where the inputs' top-left pixel lies in the camera's frame, for crops (default "
                                 "0 0): a model of the colour-filter and JPEG grids counts them from the frame's "
                                 "origin")
    _device_argument(synthesize)
    _sampling_argument(synthesize)
    synthesize.add_argument("--compile", action="store_true",
                            help="torch.compile the refiner (pays back its compile time on long jobs only)")
    _max_pixels_argument(synthesize)
    synthesize.add_argument("input", type=Path, metavar="IN",
                            help="an image or a folder (searched recursively); an EXIF orientation is applied as "
                                 "viewers apply it")
    synthesize.add_argument("output", type=Path, metavar="OUT", help="a PNG file or a folder mirroring IN")
    _common_output(synthesize)
    synthesize.set_defaults(handler=_synthesize)


def _train_denoiser_command(sub: argparse._SubParsersAction) -> None:
    denoiser = sub.add_parser("train-denoiser", help="train DnCNN on pairs synthesized on the fly (or real pairs)")
    denoiser.add_argument("--noise", required=True,
                          help="a noise-model checkpoint, or gaussian | nlf | real (the data set's own noisy images)")
    denoiser.add_argument("--flow-only", action="store_true", help="use the checkpoint's flow without its refiner")
    denoiser.add_argument("--real-share", type=float, default=_default(api.DenoiserTrainingOptions, "real_share"),
                          metavar="F", help="with a synthetic --noise: each patch keeps its real noisy partner with "
                                            "probability F (0: all synthesized; 0.5: half real, half synthesized)")
    denoiser.add_argument("--extra-clean", type=Path, default=None, metavar="DIR",
                          help="with a synthetic --noise: clean images without partners to train on as well, their "
                               "noise drawn at the training pairs' camera/ISO conditions in turn")
    denoiser.add_argument("--data", required=True, type=Path)
    denoiser.add_argument("--split", default=None)
    denoiser.add_argument("--val-split", default=None, help="as train's (never the test split unless named)")
    _preset_arguments(denoiser)
    _length_arguments(denoiser)
    _run_arguments(denoiser, api.DenoiserTrainingOptions)
    denoiser.add_argument("--val-every", type=_positive_int, default=_default(api.DenoiserTrainingOptions, "val_every"))
    _precision_argument(denoiser)
    _sampling_argument(denoiser)
    denoiser.add_argument("--skip-bad", action="store_true")
    _max_pixels_argument(denoiser)
    _common_output(denoiser)
    denoiser.set_defaults(handler=_train_denoiser)


def _eval_denoiser_command(sub: argparse._SubParsersAction) -> None:
    score = sub.add_parser("eval-denoiser", help="PSNR/SSIM of a denoiser, overall and per camera/ISO")
    score.add_argument("--checkpoint", required=True, type=Path)
    score.add_argument("--data", required=True, type=Path, help="data set folder, or SIDD's noisy blocks .mat")
    score.add_argument("--split", default=None)
    score.add_argument("--max-images", type=_positive_int, default=None,
                       help="score at most this many images, evenly spaced (default: all)")
    _device_argument(score)
    score.add_argument("--json", action="store_true", help="machine-readable output")
    _max_pixels_argument(score)
    score.add_argument("--quiet", action="store_true")
    score.set_defaults(handler=_eval_denoiser)


def _denoise_command(sub: argparse._SubParsersAction) -> None:
    denoise = sub.add_parser("denoise", help="denoise an image or a folder with a trained denoiser")
    denoise.add_argument("--checkpoint", required=True, type=Path)
    _device_argument(denoise)
    _max_pixels_argument(denoise)
    denoise.add_argument("input", type=Path, metavar="IN",
                         help="an image or a folder; an EXIF orientation is applied as viewers apply it")
    denoise.add_argument("output", type=Path, metavar="OUT")
    _common_output(denoise)
    denoise.set_defaults(handler=_denoise)


def _demo_command(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="the whole pipeline on the built-in simulator, offline, with a report")
    demo.add_argument("--out", type=Path, default=Path("nmflowgan-demo"), help="folder (re-run to continue)")
    demo.add_argument("--budget-minutes", type=_positive_finite, default=20.0, help="scales the training lengths")
    _seed_argument(demo)
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(handler=_demo)


def _common_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an output nmflowgan wrote (never a folder of other files, an input, a link or "
                             "the current folder)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _max_pixels_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-pixels", type=_positive_int, default=MAX_PIXELS,
                        help="refuse images with more pixels than this, from the header, before decoding "
                             f"(default {MAX_PIXELS:,}; Pillow's own limit of about 179 million still applies)")


def _positive_finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}")
    return value


def _seed_argument(parser: argparse.ArgumentParser, default: int = 0) -> None:
    parser.add_argument("--seed", type=_seed, default=default, help=f"every random draw derives from it: {SEED_RULE}")


def _seed(text: str) -> int:
    try:
        return checked_seed(int(text))
    except (ValueError, NmflowganError):
        raise argparse.ArgumentTypeError(f"must be {SEED_RULE}, got {text!r}") from None


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text!r}")
    return value


def _precision_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=TRAINING_PRECISIONS, default="fp32",
                        help="bf16: autocast (GPUs, and CPUs with native bf16)")


def _device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                        help="auto: a CUDA GPU, else Apple MPS, else the CPU")


def _sampling_argument(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    parser.add_argument("--sampling", default=default, choices=[*PRECISIONS, "plain"],
                        help="how noise is computed: the optimized path in a precision (auto: bf16 where the "
                             "device has native bf16, else fp32), or plain (the eager float32 reference)")


def _preset_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS),
                        help="paper: the official configuration (GPU); small: minutes on a CPU")
    parser.add_argument("--config", type=Path, default=None, help="a full config JSON (overrides --preset)")


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config) if args.config is not None else preset(args.preset)


def _list(text: str) -> list[str]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected at least one value, got {text!r}")
    return parts


def _iso_list(text: str) -> list[float | str]:
    isos: list[float | str] = []
    for part in _list(text):
        try:
            isos.append(part if part == "exif" else float(part))
        except ValueError:
            raise argparse.ArgumentTypeError(f"ISO {part!r} is not a number or 'exif'") from None
    return isos


def _options(cls: type, args: argparse.Namespace, **given: object) -> object:
    """An options dataclass from the parsed arguments of the same names (``given`` overrides), so that a new
    option is declared once in the parser and once in the dataclass, never copied field by field."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{name: value for name, value in vars(args).items() if name in names} | given)


def _info(args: argparse.Namespace) -> None:
    summary = api.model_summary(args.preset).to_dict()
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"preset {summary.pop('preset')} (SIDD vocabulary: 5 cameras x 5 ISOs)")
    for name, count in summary.items():
        print(f"  {name:<12} {count:>12,d} parameters")


def _simulate(args: argparse.Namespace) -> None:
    out = api.simulate(args.out, args.cameras, args.isos, args.scenes, args.size, args.seed,
                       overwrite=args.overwrite, progress=not args.quiet, population=args.population,
                       burst_frames=args.burst, oracle_draws=args.oracle_draws)
    splits = ", ".join(f"{split}/" for split in ("train", "val", "test", "bursts") if (out / split).is_dir())
    print(f"simcam data set written to {out} ({splits}, simcam.json)")


def _match(args: argparse.Namespace) -> None:
    found = api.match_pairs(args.model, args.data, args.split, args.patches, args.seed, args.device, not args.quiet)
    if args.json:
        print(json.dumps([m.to_dict() for m in found], indent=2))
        return
    print("| your camera | ISO | patches | nearest camera | at ISO | NLL (nats/value) | KLD there | runner-up |")
    print("|---|---|---|---|---|---|---|---|")
    for m in found:
        second = sorted((v, c) for c, v in m.by_camera.items() if c != m.model_camera)[:1]
        runner = f"{second[0][1]} ({second[0][0]:.4f})" if second else "-"
        print(f"| {m.camera} | {m.iso:g} | {m.patches} | {m.model_camera} | {m.model_iso:g} | {m.nll:.4f} | "
              f"{m.kld:.4f} | {runner} |")
    print(f"draw it with: nmflowgan synthesize --checkpoint {args.model} --camera NEAREST --iso AT_ISO; or adapt, "
          "which starts each new camera from its nearest")


def _burst_pairs(args: argparse.Namespace) -> None:
    out = api.burst_pairs(args.bursts, args.out, args.camera, args.iso, args.min_frames, args.max_shift,
                          overwrite=args.overwrite, progress=not args.quiet)
    summary = json.loads((out / "bursts.json").read_text())["bursts"]
    frames = sum(len(b["frames"]) for b in summary)
    largest = max(max(abs(v) for shift in b["shifts_px"] for v in shift) for b in summary)
    print(f"{frames} pairs from {len(summary)} bursts written to {out} (largest frame shift {largest:.3f} px); train "
          f"or adapt with --data {out}")


def _train(args: argparse.Namespace) -> int:
    with stop_on_signals() as stop:
        result = api.train_noise_model(_config(args), _options(api.NoiseTrainingOptions, args), stop)
    return _report_training(result)


def _report_training(result: TrainResult) -> int:
    """Prints how a noise-model run ended (train and adapt); returns the exit code."""
    if not result.is_main:  # one rank of a distributed run speaks
        return _signal_exit_code(result.interrupted) if result.interrupted else 0
    if result.interrupted:
        print(f"stopped by {result.interrupted} at step {result.step}/{result.total_steps}; the checkpoint is "
              f"{result.run_dir / 'last'}. Continue with the same command plus --resume.")
        return _signal_exit_code(result.interrupted)
    scores = ", ".join(f"step {v['step']}: {v['val_kld']:.4f}" for v in result.validation[:1] + result.validation[-1:])
    if scores:
        print(f"trained to step {result.step}; validation KLD {scores}; best {result.best_kld:.4f}")
    else:
        print(f"trained to step {result.step} (no validation split, so no validation KLD)")
    best = result.run_dir / "best"
    if best.exists():
        why = f" and {best}"
    elif not result.validation:
        why = " (no 'best': the data set has no validation split)"
    else:
        why = " (no 'best': no validation step was eligible: training ended within the flow warm-up)"
    print(f"checkpoints: {result.run_dir / 'last'}{why}")
    return 0


def _adapt(args: argparse.Namespace) -> int:
    with stop_on_signals() as stop:
        result = api.adapt(_options(api.NoiseTrainingOptions, args), _options(api.AdaptationOptions, args), stop)
    return _report_training(result)


def _evaluate(args: argparse.Namespace) -> None:
    report = api.evaluate_to_report(args.checkpoint, args.data, args.out, split=args.split,
                                    train_split=args.train_split, protocol=args.protocol, patch_px=args.patch_px,
                                    max_patches=args.max_patches, seed=args.seed, overwrite=args.overwrite,
                                    progress=not args.quiet, options=SamplingOptions.named(args.sampling),
                                    device=args.device, max_pixels=args.max_pixels, known_only=args.known_only)
    print(report.table)
    print(f"report: {report.path} (and report.html, results.json)")


def _synthesize(args: argparse.Namespace) -> None:
    written = api.synthesize(args.checkpoint, args.input, args.output, args.camera, args.iso, seed=args.seed,
                             overwrite=args.overwrite, extrapolate=args.extrapolate, tile_px=args.tile,
                             device=args.device, progress=not args.quiet,
                             options=SamplingOptions.named(args.sampling, args.compile), max_pixels=args.max_pixels,
                             origin=tuple(args.origin))
    print(f"wrote {len(written)} noisy image(s) with JSON sidecars under {args.output}")


def _train_denoiser(args: argparse.Namespace) -> int:
    options = _options(api.DenoiserTrainingOptions, args, sampling=SamplingOptions.named(args.sampling))
    with stop_on_signals() as stop:
        result = api.train_denoiser(_config(args), options, stop)
    if not result.is_main:
        return _signal_exit_code(result.interrupted) if result.interrupted else 0
    if result.interrupted:
        print(f"stopped by {result.interrupted} at step {result.step}/{result.total_steps}; continue with the "
              "same command plus --resume")
        return _signal_exit_code(result.interrupted)
    scores = [v["val_psnr"] for v in result.validation]
    validated = f"best validation PSNR {max(scores):.2f} dB" if scores else "no validation (no test split)"
    print(f"trained to step {result.step}; {validated}; checkpoints in {result.run_dir}")
    return 0


def _eval_denoiser(args: argparse.Namespace) -> None:
    scores = api.evaluate_denoiser(args.checkpoint, args.data, args.split, args.max_images, progress=not args.quiet,
                                   device=args.device, max_pixels=args.max_pixels)
    if args.json:
        print(json.dumps({"overall": scores.overall, "per_condition": scores.per_condition,
                          "available": scores.available, "scored": scores.subset}, indent=2))
        return
    print(f"scored {scores.subset}")
    print("| camera | ISO | images | PSNR | SSIM | noisy PSNR | noisy SSIM |")
    print("|---|---|---|---|---|---|---|")
    for row in [*scores.per_condition, {"camera": "all", "iso": float("nan")} | scores.overall]:
        print(f"| {row['camera']} | {row['iso']:g} | {row['images']} | {row['psnr']:.2f} | {row['ssim']:.4f} | "
              f"{row['noisy_psnr']:.2f} | {row['noisy_ssim']:.4f} |")


def _denoise(args: argparse.Namespace) -> None:
    written = api.denoise_files(args.checkpoint, args.input, args.output, args.overwrite,
                                args.device, progress=not args.quiet, max_pixels=args.max_pixels)
    print(f"wrote {len(written)} denoised image(s) under {args.output}")


def _demo(args: argparse.Namespace) -> int:
    with stop_on_signals() as stop:
        report = api.demo(args.out, args.budget_minutes, args.seed, progress=not args.quiet, stop=stop)
    if report is None:
        print(f"demo stopped by {stop.reason}; run the same command again to continue where it stopped")
        return _signal_exit_code(stop.reason or "SIGINT")
    print(f"demo finished; open {report.with_suffix('.html')} (or {report})")
    return 0


def _signal_exit_code(reason: str) -> int:
    """The shell's status for a process ended by a signal: 128 + its number (130 SIGINT, 143 SIGTERM)."""
    try:
        return 128 + signal.Signals[reason].value
    except KeyError:
        return 1


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Within the block, SIGINT and SIGTERM set the returned :class:`StopRequest` (the training loops then
    save a checkpoint and return) instead of killing the process."""
    request = StopRequest()
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        for number in previous:
            signal.signal(number, lambda received, frame: request.request(signal.Signals(received).name))
        yield request
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def cli_reference() -> str:
    """The Markdown CLI reference in ``docs/cli.md``, generated from the parser (a test keeps them equal).

    Regenerate with ``python -c "from nmflowgan.cli import cli_reference; print(cli_reference(), end='')"
    > docs/cli.md``.
    """
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps help to the terminal width; fix it for a stable file
    try:
        parser = build_parser()
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parts = ["# Command-line reference", "", "Generated from the parser by `nmflowgan.cli.cli_reference()`; "
                 "`tests/test_docs.py` fails when this file and the parser drift apart.", "",
                 "```text", parser.format_help().rstrip(), "```", ""]
        for name, sub in commands.choices.items():
            parts += [f"## nmflowgan {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
        return "\n".join(parts)
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nmflowgan`` console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        code = args.handler(args)
    except NmflowganError as error:
        print(f"nmflowgan {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a full disk, a read-only folder, ...: the file and the reason, no traceback
        print(f"nmflowgan {args.command}: error: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nmflowgan {args.command}: interrupted", file=sys.stderr)
        return 130
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
