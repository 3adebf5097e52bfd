"""Accuracy recovery: training through the ONNX ⇄ torch bridge (fine-tune, KD, QAT).

Least-squares reconstruction (no training) lives with channel pruning.
"""

from onnxamc.recover.bridge import TorchBridge, to_torch, write_back
from onnxamc.recover.train import TrainConfig, TrainReport, train

__all__ = ["TorchBridge", "TrainConfig", "TrainReport", "to_torch", "train", "write_back"]
