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
    return parser


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
