"""The longer help texts the parser shares between commands (data forms, metrics,
image preprocessing)."""

MODEL_HELP = "ONNX model file (default: the bundled ResNet-20 trained on Fashion-MNIST)"
DATA_FORMATS = ("an .npz file (arrays named after the model inputs, optional 'labels'), a "
                "folder of images (labelled by subfolder; see --preprocess), "
                "package.module:function (returns an iterable of feed dicts {input: array, "
                "optional 'labels'}, read batch by batch: larger than memory works; it must "
                "give the same data each call) or a built-in name: "
                "fashion-mnist[:eval|calib|test|train], digits, random[:N]")
DATA_HELP = f"evaluation data: {DATA_FORMATS} (default: %(default)s)"
METRIC_HELP = ("quality metric: top1, top5 (labels), agreement (arg-max against the original), "
               "cosine, snr (dB), mse (lower is better), iou (masks; iou:T thresholds a "
               "one-channel map), OUTPUT=NAME,... (a metric per output; the worst counts), or "
               "package.module:function (your own: called with outputs={name: array} and "
               "labels for the whole set, or with session= an onnxruntime session; one number, "
               "higher is better unless marked @onnxamc.quality.metric(higher_is_better=False)). "
               "Default: top1 with class labels; else fidelity to the original chosen from "
               "each output's shape (agreement for class scores, cosine for embeddings, snr "
               "for dense maps)")
PREPROCESS_HELP = ("image folders: FIELD=VALUE,... of resize=256|224x224, crop=224, "
                   "mean=0.485/0.456/0.406, std=0.229/0.224/0.225, scale=255, "
                   "layout=nchw|nhwc, dtype=float32, color=rgb|l|bgr (default: resized to "
                   "the model input, scaled to [0, 1])")
