"""Which library should normalize models at the front door? Measured on the test zoo.

For each zoo model and each candidate: does it run, are the outputs equal to the
original's (within 1e-4 relative to the output's scale), are the layer weights
initializers (not Constant / Identity / Cast / DequantizeLinear outputs), are Identity
nodes gone, and are the output shapes of every Conv / Gemm / MatMul static after onnx's
shape inference (with the zoo's input shapes given to the candidate).

Candidates: onnxamc's front door (onnxscript's constant folder + onnx-ir passes), the
whole onnxscript optimizer (folding plus its rewrite rules), onnxslim, onnx-simplifier.
The last two are not dependencies: `pip install onnxslim onnxsim` to measure them.

  python tools/bench_front_door.py                 # the fast zoo
  python tools/bench_front_door.py --models nudenet_320n rapidocr_det_v4
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import zoo  # noqa: E402

LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
WEIGHT_PRODUCERS = ("Constant", "Identity", "Cast", "DequantizeLinear", "Transpose", "Reshape")


def with_input_shapes(model: onnx.ModelProto, shapes: dict) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for value in out.graph.input:
        for dim, size in zip(value.type.tensor_type.shape.dim, shapes.get(value.name, ())):
            dim.Clear()
            dim.dim_value = size
    return out


def front_door(model, shapes):
    from onnxamc.graph.normalize import normalize

    return normalize(model, shapes)[0]


def onnxscript_optimizer(model, shapes):
    from onnxscript import optimizer

    return optimizer.optimize(with_input_shapes(model, shapes))


def onnxslim(model, shapes):
    import onnxslim as slim

    return slim.slim(model, input_shapes=[f"{k}:{','.join(map(str, v))}" for k, v in shapes.items()]
                     or None)


def onnx_simplifier(model, shapes):
    import onnxsim

    return onnxsim.simplify(model, overwrite_input_shapes={k: list(v) for k, v in shapes.items()})[0]


CANDIDATES = {"front door": front_door, "onnxscript optimizer": onnxscript_optimizer,
              "onnxslim": onnxslim, "onnx-simplifier": onnx_simplifier}


def run(model: onnx.ModelProto, feed: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feed.items() if k in names})


def equal(expected: list[np.ndarray], got: list[np.ndarray]) -> bool:
    return len(expected) == len(got) and all(
        a.shape == b.shape and float(np.abs(a.astype(np.float64) - b).max(initial=0.0))
        <= 1e-4 * max(1.0, float(np.abs(a).max(initial=0.0))) for a, b in zip(expected, got))


def properties(model: onnx.ModelProto) -> dict:
    """Weights as initializers / all layer weights (computed from constants only),
    Identity nodes, static layer output shapes."""
    from zoo.macs import input_dependent

    inits = {i.name for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    live = input_dependent(model)
    layers = [n for n in model.graph.node if n.op_type in LAYER_OPS and len(n.input) > 1]
    direct = sum(n.input[1] in inits for n in layers)
    hidden = sum(n.input[1] in producers and n.input[1] not in live
                 and producers[n.input[1]].op_type in WEIGHT_PRODUCERS for n in layers)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - a model shape inference rejects has no known shapes
        inferred = model
    static = {v.name for v in list(inferred.graph.value_info) + list(inferred.graph.output)
              if v.type.tensor_type.HasField("shape")
              and all(d.dim_value > 0 for d in v.type.tensor_type.shape.dim)}
    shaped = sum(n.output[0] in static for n in layers)
    return {"weights": f"{direct}/{direct + hidden}",
            "identity": sum(n.op_type == "Identity" for n in model.graph.node),
            "shapes": f"{shaped}/{len(layers)}", "nodes": len(model.graph.node)}


def measure(name: str) -> dict:
    entry = zoo.entry(name)
    original = onnx.load(str(zoo.get(name)))
    shapes = {k: v for k, v in entry.input_shapes.items() if v}
    feed = entry.feed(seed=3)
    reference = run(original, feed)
    row = {"model": name, "original": properties(original)}
    for label, candidate in CANDIDATES.items():
        start = time.time()
        try:
            out = candidate(original, shapes)
            seconds = time.time() - start
            row[label] = {"ok": True, "equal": equal(reference, run(out, feed)),
                          "seconds": seconds, **properties(out)}
        except ImportError:
            row[label] = {"ok": False, "error": "not installed"}
        except Exception as exc:  # noqa: BLE001 - a failure is a result here
            text = str(exc).strip().splitlines()
            row[label] = {"ok": False, "error": f"{type(exc).__name__}: {text[0][:80] if text else ''}"}
    return row


def cell(result: dict) -> str:
    if not result["ok"]:
        return f"fails ({result['error']})"
    return (f"{'=' if result['equal'] else 'DIFFERS'} w {result['weights']} "
            f"id {result['identity']} sh {result['shapes']} {result['seconds']:.1f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", help="zoo names (default: the fast zoo)")
    parser.add_argument("--slow", action="store_true", help="include the slow models")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    ort.set_default_logger_severity(3)
    rows = []
    print("| model | original | " + " | ".join(CANDIDATES) + " |")
    print("|---|---|" + "---|" * len(CANDIDATES))
    for name in args.models or zoo.names(slow=args.slow):
        try:
            row = measure(name)
        except zoo.ZooUnavailable as exc:
            print(f"| {name} | {exc} |")
            continue
        rows.append(row)
        o = row["original"]
        print(f"| {name} | w {o['weights']} id {o['identity']} sh {o['shapes']} | "
              + " | ".join(cell(row[c]) for c in CANDIDATES) + " |", flush=True)
    print()
    for label in CANDIDATES:
        results = [r[label] for r in rows]
        good = [r for r in results if r["ok"] and r["equal"]]
        complete = [r for r in good if r["weights"].split("/")[0] == r["weights"].split("/")[1]
                    and r["identity"] == 0 and r["shapes"].split("/")[0] == r["shapes"].split("/")[1]]
        print(f"{label}: runs and keeps outputs on {len(good)}/{len(rows)}, and also gives "
              f"initializer weights, no Identity and static layer shapes on {len(complete)}/{len(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
