"""Whole-model analysis: the layer table plus totals, as data for the CLI and the search."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from onnxamc.graph.layers import Layer, find_layers
from onnxamc.graph.model import fingerprint, model_inputs, InputSpec


@dataclass
class ModelInfo:
    fingerprint: str
    inputs: list[InputSpec]
    layers: list[Layer]
    macs: int
    params: int

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def to_dict(self) -> dict:
        return {
            "fingerprint": self.fingerprint,
            "inputs": [{"name": s.name, "shape": list(s.shape), "dtype": str(s.dtype)}
                       for s in self.inputs],
            "macs": self.macs,
            "params": self.params,
            "layers": [layer.to_dict() for layer in self.layers],
        }


def analyze(model: onnx.ModelProto) -> ModelInfo:
    """Layer table and totals of a (shape-inferred) model.

    MACs count the compressible layers (the other ops cost little next to them);
    params count every initializer element, as the file stores them.
    """
    layers = find_layers(model)
    params = sum(int(np.prod(init.dims)) for init in model.graph.initializer)
    return ModelInfo(fingerprint(model), model_inputs(model), layers,
                     sum(layer.macs for layer in layers), params)
