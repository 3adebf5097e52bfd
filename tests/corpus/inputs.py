"""The corpus's inputs: the mistaken and hostile files a new user hands onnxamc.

Everything is built here with onnx.helper, numpy and Optuna (no torch, no training), in
a folder the cases read but never write: models (a small convnet on 8x8 inputs, and
broken, old, too new and custom-op variants), data files, policies, target files and
study storages. `build_inputs` returns {placeholder: path} for the case table.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SAMPLES = 64
CLASSES = 10


def tiny_model(opset: int = 18, ir_version: int | None = None,
               custom_op: tuple[str, str] | None = None) -> onnx.ModelProto:
    """conv1 - relu - conv2 - relu - global pool - flatten - fc on [N, 1, 8, 8] inputs;
    `custom_op` (domain, op) puts one such node after the first relu."""
    rng = np.random.default_rng(0)
    weights = {"w1": rng.normal(0, 0.3, (8, 1, 3, 3)), "b1": np.zeros(8),
               "w2": rng.normal(0, 0.3, (8, 8, 3, 3)), "b2": np.zeros(8),
               "wf": rng.normal(0, 0.3, (CLASSES, 8)), "bf": np.zeros(CLASSES)}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    after_relu = "r1"
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], "relu1")]
    if custom_op is not None:
        domain, op = custom_op
        nodes.append(helper.make_node(op, ["r1"], ["r1c"], "fancy", domain=domain))
        after_relu = "r1c"
    nodes += [helper.make_node("Conv", [after_relu, "w2", "b2"], ["c2"], "conv2",
                               pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c2"], ["r2"], "relu2"),
              helper.make_node("GlobalAveragePool", ["r2"], ["g"], "pool"),
              helper.make_node("Flatten", ["g"], ["f"], "flatten", axis=1),
              helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], "fc", transB=1)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", CLASSES])], inits)
    opsets = [helper.make_opsetid("", opset)]
    if custom_op is not None:
        opsets.append(helper.make_opsetid(custom_op[0], 1))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="corpus")
    model.ir_version = ir_version or (3 if opset < 8 else 8)
    if model.ir_version < 4:  # IR 3 lists the weights among the graph inputs, as old files do
        model.graph.input.extend(helper.make_tensor_value_info(i.name, i.data_type, i.dims)
                           for i in inits)
    return model


def build_inputs(root: Path) -> dict[str, str]:
    """Write every input under `root`; {placeholder: path}."""
    root.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    paths.update(_models(root))
    paths.update(_data(root))
    paths.update(_policies(root))
    paths.update(_targets(root))
    paths.update(_storages(root))
    return {"ROOT": str(root), **{k: str(v) for k, v in paths.items()}}


def _save(root: Path, name: str, model: onnx.ModelProto) -> Path:
    path = root / name
    onnx.save(model, str(path))
    return path


def _models(root: Path) -> dict[str, Path]:
    good = _save(root, "tiny.onnx", tiny_model())
    raw = good.read_bytes()
    broken = tiny_model()
    broken.graph.node[2].input[0] = "nowhere"  # conv2 reads a tensor nothing makes
    unknown = tiny_model()
    unknown.graph.node[1].op_type = "FancyRelu"  # not an ONNX op in the standard domain
    paths = {
        "M": good,
        "M7": _save(root, "opset7.onnx", tiny_model(opset=7)),
        "IR14": _save(root, "ir14.onnx", tiny_model(ir_version=14)),
        "OPSET27": _save(root, "opset27.onnx", tiny_model(opset=27, ir_version=13)),
        "CUSTOM": _save(root, "custom.onnx", tiny_model(custom_op=("com.example", "FancyOp"))),
        "UNKNOWN_OP": _save(root, "unknown-op.onnx", unknown),
        "BROKEN": _save(root, "broken.onnx", broken),
        "NOLAYERS": _save(root, "no-layers.onnx", _relu_only()),
    }
    for name, content in (("TRUNC", raw[: len(raw) // 2]), ("EMPTY", b""),
                          ("TEXT", b"this is not a model\n"), ("NPZ_AS_MODEL", None)):
        path = root / f"{name.lower()}.onnx"
        if content is None:
            np.savez(path.with_suffix(".npz"), x=np.zeros((1, 1, 8, 8), np.float32))
            path = path.with_suffix(".npz")
        else:
            path.write_bytes(content)
        paths[name] = path
    external = root / "external.onnx"
    onnx.save(tiny_model(), str(external), save_as_external_data=True,
              location="external.onnx.data", size_threshold=0)
    (root / "external.onnx.data").unlink()  # the weights file went missing
    paths["EXTDATA"] = external
    return paths


def _relu_only() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], "relu")], "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model


def _data(root: Path) -> dict[str, Path]:
    rng = np.random.default_rng(1)
    x = rng.random((SAMPLES, 1, 8, 8), dtype=np.float32)
    labels = rng.integers(0, CLASSES, SAMPLES)

    def npz(name: str, **arrays) -> Path:
        path = root / f"{name}.npz"
        np.savez(path, **arrays)
        return path

    nan, inf = x.copy(), x.copy()
    nan[3, 0, 2, 2], inf[5, 0, 1, 1] = np.nan, np.inf
    float_labels = labels.astype(np.float64)
    float_labels[7] = np.nan
    not_zip = root / "not-zip.npz"
    not_zip.write_text("x,y\n1,2\n")
    objects = root / "objects.npz"
    np.savez(objects, x=np.array([{"a": 1}] * 4, dtype=object))
    return {
        "D": npz("data", x=x, labels=labels),
        "D_EMPTY": npz("empty", x=x[:0], labels=labels[:0]),
        "D_NAN": npz("nan", x=nan, labels=labels),
        "D_INF": npz("inf", x=inf, labels=labels),
        "L_BIG": npz("labels-big", x=x, labels=labels + CLASSES),
        "L_NEG": npz("labels-negative", x=x, labels=-labels - 1),
        "L_NAN": npz("labels-nan", x=x, labels=float_labels),
        "D_WRONGNAME": npz("wrong-names", image=x, mask=x),
        "D_WRONGSHAPE": npz("wrong-shape", x=np.zeros((SAMPLES, 3, 8, 8), np.float32)),
        "D_STR": npz("strings", x=np.array(["a"] * SAMPLES)),
        "D_MISMATCH": npz("count-mismatch", x=x, labels=labels[:10]),
        "D_NOTZIP": not_zip,
        "D_OBJ": objects,
    }


def _policies(root: Path) -> dict[str, Path]:
    def policy(name: str, layers, **top) -> Path:
        path = root / f"{name}.json"
        path.write_text(json.dumps({"schema": "onnxamc.policy/1", "layers": layers, **top}))
        return path

    def text(name: str, content: str | bytes) -> Path:
        path = root / f"{name}.json"
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
        return path

    big = root / "huge.json"
    with open(big, "wb") as f:
        f.truncate(95 * 2**20)  # a 95 MB file (sparse: cheap to make)
    return {
        "P_BITS80": policy("bits-8.0", {"conv1": {"bits": 8.0}, "conv2": {"bits": 8.0}}),
        "P_SLOW": policy("slower", {"conv1": {"bits": 8, "dynamic": True},
                                    "conv2": {"bits": 8, "dynamic": True}}),
        "P_DYN_FP16": policy("dynamic-fp16", {"conv2": {"bits": 8, "dynamic": True},
                                              "fc": {"bits": 16}}),
        "P_DYN_BLOCK": policy("dynamic-block", {"conv2": {"bits": 8, "dynamic": True},
                                                "fc": {"bits": 4, "granularity": "per-block"}}),
        "P_MISSPELL": policy("misspelled", {"conv_1": {"bits": 8}}),
        "P_NOTLAYER": policy("not-a-layer", {"relu1": {"bits": 8}}),
        "P_FINGER": policy("other-model", {"conv1": {"bits": 8}},
                           model={"fingerprint": "0123456789abcdef", "name": "other.onnx"}),
        "P_UNKFIELD": policy("unknown-field", {"conv1": {"bitz": 8}}),
        "P_BITS9": policy("bits-9", {"conv1": {"bits": 9}}),
        "P_BITS_STR": policy("bits-string", {"conv1": {"bits": "8"}}),
        "P_BITS85": policy("bits-8.5", {"conv1": {"bits": 8.5}}),
        "P_KEEP0": policy("keep-0", {"conv1": {"keep": 0}}),
        "P_KEEP_NAN": text("keep-nan", '{"schema": "onnxamc.policy/1", '
                                       '"layers": {"conv1": {"keep": NaN}}}'),
        "P_SPARSITY1": policy("sparsity-1", {"conv1": {"sparsity": 1.0}}),
        "P_LAYERS_LIST": policy("layers-list", []),
        "P_SCHEMA": text("old-schema", '{"schema": "onnxamc.policy/0", "layers": {}}'),
        "P_ARRAY": text("array", "[1, 2, 3]"),
        "P_NOTJSON": text("not-json", "{oops"),
        "P_BINARY": text("binary", bytes(range(256)) * 8),
        "P_BIG": big,
    }


def _targets(root: Path) -> dict[str, Path]:
    bad, unknown = root / "bad.toml", root / "unknown-key.toml"
    bad.write_text('runtime = "onnxruntime\n')
    unknown.write_text('runtime = "onnxruntime"\nthreadz = 2\n')
    return {"T_BAD": bad, "T_UNKNOWNKEY": unknown}


def _storages(root: Path) -> dict[str, Path]:
    """A JSON file given as storage; a journal holding a single-objective study named "s"
    with one finished trial. (The torn journal is made per case: cases.torn_journal.)"""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    as_json = root / "study.json"
    as_json.write_text('{"study": "s", "trials": []}\n')
    single = root / "single.journal"
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name="s", direction="maximize",
                                storage=JournalStorage(JournalFileBackend(str(single))))
    study.optimize(lambda t: t.suggest_float("a", 0, 1), n_trials=1)
    return {"J_JSON": as_json, "J_SINGLE": single}
