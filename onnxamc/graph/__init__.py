"""Reading ONNX graphs: loading, the layer table, the cost model. Never runs a model."""

from onnxamc.graph.analysis import ModelInfo, analyze
from onnxamc.graph.layers import LAYER_OPS, Layer, find_layers, node_names
from onnxamc.graph.model import (InputSpec, constant_array, fingerprint, initializer_map,
                                 load_model, model_inputs, save_model, serialized_size)

__all__ = ["LAYER_OPS", "InputSpec", "Layer", "ModelInfo", "analyze", "constant_array",
           "find_layers", "fingerprint", "initializer_map", "load_model", "model_inputs",
           "node_names", "save_model", "serialized_size"]
