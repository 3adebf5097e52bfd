"""Reference models: torch definitions and the bundled trained ONNX files.

The trained artefacts live beside the definitions so that an installed onnxamc can
run its default job from any directory, with no training and no download.
"""

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
DATA_DIR = MODELS_DIR / "data"

BUNDLED = {
    "resnet20": MODELS_DIR / "resnet20.onnx",
    "mobilenetv2": MODELS_DIR / "mobilenetv2.onnx",
}
DEFAULT_MODEL = "resnet20"


def bundled_model_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of a bundled trained ONNX model, by name."""
    try:
        return BUNDLED[name]
    except KeyError:
        raise ValueError(f"unknown bundled model {name!r}; known: {', '.join(BUNDLED)}") from None
