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
import warnings

from onnxamc.errors import OnnxAmcError, OnnxAmcWarning, first_line


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
        print(f"onnxamc: error: {first_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("onnxamc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `onnxamc inspect | head`: the reader left, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _process_settings() -> None:
    """What a command-line tool may decide for the whole process: no GUI backend for the
    report's plots; one thread for numpy's BLAS (as for onnxruntime: on a shared machine
    several BLAS threads spin against each other and a least-squares refit took 5x the
    CPU time; workers each own a core); Optuna's log lines off (the progress bar and the
    summary say what happened; its per-trial warnings carry tracebacks); onnxruntime's
    and onnxruntime.quantization's log chatter off (their errors reach us as
    exceptions); warnings as one line each."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    import onnxruntime
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("always", category=OnnxAmcWarning)
    warnings.showwarning = _one_line_warning
    from onnxamc.runtime import ort

    onnxruntime.set_default_logger_severity(4)
    ort.LOG_SEVERITY = 4
    logging.getLogger().setLevel(logging.ERROR)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    kind = "" if issubclass(category, OnnxAmcWarning) else f" ({category.__name__})"
    print(f"onnxamc: warning{kind}: {first_line(Warning(str(message)))}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
