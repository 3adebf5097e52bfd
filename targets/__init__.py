"""The shipped deployment targets: one TOML file per target (see onnxamc.runtime.target).

This folder sits at the top of the repository and is installed as `onnxamc.targets`, so
an installed onnxamc finds the files from any directory.
"""

from pathlib import Path

TARGETS_DIR = Path(__file__).resolve().parent
