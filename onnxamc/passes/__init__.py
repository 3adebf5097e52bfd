"""Compression passes: ONNX in, ONNX out, one file per graph edit.

Which pass runs for which policy field, and in which order, is the actions' business
(onnxamc.actions: each action names its pass; `actions.apply_policy` runs them). A pass
reads the graph through graph/ and never runs a model itself: those that need
activations (calibration, reconstruction) get them from runtime/ through a small
function or a callable they are given.
"""

from onnxamc.passes.quantize import CALIBRATION_METHODS

__all__ = ["CALIBRATION_METHODS"]
