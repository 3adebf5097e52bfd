"""onnxamc: ONNX-centric AutoML model compression."""
__version__ = "0.1.0"
