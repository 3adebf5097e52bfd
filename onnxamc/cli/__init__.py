"""The `onnxamc` command: parses arguments and calls onnxamc.api, nothing more.

parser.py builds the argument parser (defaults read from onnxamc.config), commands.py
runs each command, tables.py formats what they print. Process-wide settings (logging,
Optuna's verbosity, matplotlib's backend) are made here, at the entry point, and
nowhere in the library.
"""

from __future__ import annotations

import logging
import os
import sys

from onnxamc.errors import OnnxAmcError


def main(argv: list[str] | None = None) -> int:
    _process_settings()  # before anything imports numpy: its BLAS reads the thread count once
    from onnxamc.cli.parser import build_parser

    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 0
    try:
        return args.run(args) or 0
    except OnnxAmcError as exc:
        print(f"onnxamc: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("onnxamc: interrupted", file=sys.stderr)
        return 130


def _process_settings() -> None:
    """What a command-line tool may decide for the whole process: no GUI backend for the
    report's plots, one thread for numpy's BLAS (as for onnxruntime: on a shared machine
    several BLAS threads spin against each other and a least-squares refit took 5x the
    CPU time; workers each own a core), Optuna's per-trial log lines off (the progress
    bar says it), and onnxruntime.quantization's root-logger chatter off."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger().setLevel(logging.ERROR)


if __name__ == "__main__":
    sys.exit(main())
