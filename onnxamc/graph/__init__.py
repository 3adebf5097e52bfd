"""Reading ONNX graphs: loading, the layer table, the cost model. Never runs a model."""

from onnxamc.graph.analysis import ModelInfo, analyze
from onnxamc.graph.layers import LAYER_OPS, Layer, find_layers, node_names
from onnxamc.graph.model import (InputSpec, constant_array, fingerprint, initializer_map,
                                 load_model, load_with_report, model_inputs, save_model,
                                 serialized_size)
from onnxamc.graph.normalize import FrontDoorReport, parse_input_shapes

__all__ = ["LAYER_OPS", "FrontDoorReport", "InputSpec", "Layer", "ModelInfo", "analyze",
           "constant_array", "find_layers", "fingerprint", "initializer_map", "load_model",
           "load_with_report", "model_inputs", "node_names", "parse_input_shapes", "save_model",
           "serialized_size"]
