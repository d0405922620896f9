"""The ``deepmir`` command line: a thin layer over library functions.

Besides the subcommands, the BIDS-App form ``deepmir BIDS_DIR OUTPUT_DIR
participant|group`` (:mod:`deepmir.cli.bids_app`) is recognised by its first
argument not being a subcommand or an option.

Each subcommand lives in its own module with two functions:
``add_parser(subparsers)`` registers its arguments and ``run(args) -> int``
calls one library function and returns the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from deepmir import __version__
from deepmir.cli.arguments import EXIT_CODES, HelpFormatter

#: subcommand name -> module under ``deepmir.cli``
COMMANDS: dict[str, str] = {
    "simulate": "simulate",
    "evaluate": "evaluate",
    "train": "train",
    "predict": "predict",
    "tune": "tune",
    "calibrate": "calibrate",
    "average": "average",
    "cv": "cv",
    "ablate": "ablate",
    "demo": "demo",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepmir",
        description="Detect cerebral microbleeds, iron deposits and calcifications "
        "from T2w, SWI and QSM. BIDS-App form: deepmir BIDS_DIR OUTPUT_DIR "
        "participant|group [options] (deepmir BIDS_DIR OUTPUT_DIR participant --help).",
        epilog=EXIT_CODES,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"deepmir {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS.values():
        mod = importlib.import_module(f"deepmir.cli.{module}")
        p = mod.add_parser(sub)
        p.epilog = EXIT_CODES
        p.formatter_class = HelpFormatter
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] not in COMMANDS and not args_list[0].startswith("-"):
        from deepmir.cli import bids_app

        parser = bids_app.build_parser()
        parser.set_defaults(_run=bids_app.run, command="bids-app")
    else:
        parser = build_parser()
    argv = args_list
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version (0) or a refused argument (2)
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        code: int = args._run(args)
    except OSError as exc:  # a write that failed during the run (a full disk, say)
        where = f"{exc.filename}: " if exc.filename else ""
        from deepmir.io.atomic import os_reason

        print(f"deepmir {args.command}: error: {where}{os_reason(exc)}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def _entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
