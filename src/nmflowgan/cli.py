"""``nmflowgan <subcommand>``: parse, validate, call :mod:`nmflowgan.api`, set the exit code."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from nmflowgan import __version__
from nmflowgan.config import PRESETS
from nmflowgan.errors import NmflowganError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nmflowgan", description="Learn and synthesize realistic camera noise (NM-FlowGAN)."
    )
    parser.add_argument("--version", action="version", version=f"nmflowgan {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser("info", help="parameter counts of a preset's networks")
    info.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(handler=_info)

    simulate = sub.add_parser("simulate", help="write a simcam data set (SIDD layout, train/ and test/)")
    simulate.add_argument("--out", required=True, help="folder to create")
    simulate.add_argument("--cameras", nargs="+", default=None, help="built-in camera codes (default: all)")
    simulate.add_argument("--isos", nargs="+", type=float, default=[100, 400, 1600, 3200])
    simulate.add_argument("--scenes", type=int, default=20, help="scenes (about a quarter go to test/)")
    simulate.add_argument("--size", type=int, default=512, help="side of each square scene in pixels")
    simulate.add_argument("--seed", type=int, default=0)
    _common_output(simulate)
    simulate.set_defaults(handler=_simulate)
    return parser


def _common_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _simulate(args: argparse.Namespace) -> None:
    from nmflowgan.data.simcam import simulate

    out = simulate(args.out, args.cameras, args.isos, args.scenes, args.size, args.seed,
                   overwrite=args.overwrite, progress=not args.quiet)
    print(f"simcam data set written to {out} (train/, test/, simcam.json)")


def _info(args: argparse.Namespace) -> None:
    from nmflowgan.api import model_summary

    summary = model_summary(args.preset).to_dict()
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"preset {summary.pop('preset')} (SIDD vocabulary: 5 cameras x 5 ISOs)")
    for name, count in summary.items():
        print(f"  {name:<12} {count:>12,d} parameters")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nmflowgan`` console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        args.handler(args)
    except NmflowganError as error:
        print(f"nmflowgan {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nmflowgan {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
