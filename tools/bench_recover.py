"""Benchmark of accuracy recovery (issue: convert and compress).

For each reference model and each target speedup (2x, 3x measured latency), pick among
uniform policies (channel keep ratio, with or without int8) the most accurate after
reconstruction whose latency ratio, measured interleaved with the original in this run,
is within 1/speedup; then report accuracy without recovery, with least-squares
reconstruction, with fine-tuning, with distillation, and with quantization-aware
training. The learning rate of each training is chosen as `onnxamc compress --lr auto`
chooses it (short trainings on held-out training data), unless --lr gives one.

    python tools/bench_recover.py --models resnet20 mobilenetv2 --epochs 3
    python tools/bench_recover.py --models mobilenetv2 --speedups 2 --keeps 0.5 --lr 0.01

Slow (about 15 min per model and speedup for 3 epochs on one thread); not part of the
test suite. Needs the Debian package dataset-fashion-mnist for the training set.
"""

from __future__ import annotations

import argparse
import time

import optuna

from onnxamc import api
from onnxamc.data import Dataset
from onnxamc.evaluate import compare
from onnxamc.graph import analyze, load_model
from onnxamc.models import bundled_model_path
from onnxamc.passes import apply_policy, structural_fit
from onnxamc.policy import LayerAction, Policy
from onnxamc.recover import TrainConfig, train
from onnxamc.recover.recovery_search import search_recovery

RECOVERIES = ("fine-tune", "fine-tune + KD", "KD + QAT")
KEEPS = (0.9, 0.75, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2)


def uniform(model, keep: float, int8: bool) -> Policy:
    fit = structural_fit(model)
    ops = {l.name: l.op_type for l in analyze(model).layers}
    return Policy({n: LayerAction(keep=keep if "keep" in fit[n] else 1.0,
                                  bits=8 if int8 and ops[n] in ("Conv", "Gemm", "MatMul") else 32)
                   for n in ops})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet20", "mobilenetv2"])
    ap.add_argument("--speedups", nargs="+", type=float, default=[2.0, 3.0])
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--train-limit", type=int, help="train on the first N training images")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--recoveries", nargs="+", default=list(RECOVERIES), choices=RECOVERIES,
                    help="training recoveries to run (none and reconstruction always run)")
    ap.add_argument("--lr", default="auto",
                    help="learning rate, or 'auto' (default): chosen per run by short "
                         "trainings, as onnxamc compress does")
    ap.add_argument("--trial-steps", type=int, default=200)
    ap.add_argument("--keeps", nargs="+", type=float, default=list(KEEPS),
                    help="candidate keep ratios (one pins the policy; its latency is still "
                         "measured and reported)")
    args = ap.parse_args()

    rows = []
    for name in args.models:
        path = bundled_model_path(name)
        original = load_model(path)
        evaluation = api.data_for(original, "fashion-mnist")
        calib = api.data_for(original, "fashion-mnist:calib")
        feeds = lambda: calib.batches(32)  # noqa: E731
        full = api.data_for(original, "fashion-mnist:train", args.train_limit)
        cut = len(full) // 10
        train_set = full.take(len(full) - cut)
        val = Dataset({k: v[-cut:] for k, v in full.inputs.items()}, full.labels[-cut:])

        candidates = [(k, q) for k in args.keeps for q in (False, True)]
        # candidates are chosen by accuracy after reconstruction: without it every pruned
        # model is near chance and the choice would be arbitrary
        models = [apply_policy(original, uniform(original, k, q), feeds, reconstruct=True)
                  for k, q in candidates]
        measured = compare([original] + models, evaluation, args.threads, runs=args.runs)
        ratios = [m.latency_ratio for m in measured[1:]]
        for speedup in args.speedups:
            goal = 1.0 / speedup
            fits = [i for i, r in enumerate(ratios) if r <= goal] or [min(range(len(ratios)),
                                                                            key=ratios.__getitem__)]
            best = max(fits, key=lambda i: (measured[1 + i].accuracy, -ratios[i]))
            keep, int8 = candidates[best]
            policy = uniform(original, keep, int8)
            float_policy = Policy({n: LayerAction(keep=a.keep) for n, a in policy.layers.items()})
            bits = {n: 8 for n, a in policy.layers.items() if a.bits == 8}
            lrs = {}
            variants = {"none": apply_policy(original, policy, feeds),
                        "reconstruction": apply_policy(original, policy, feeds, reconstruct=True)}
            for label, config in {
                "fine-tune": TrainConfig(epochs=args.epochs, distill_weight=0.0),
                "fine-tune + KD": TrainConfig(epochs=args.epochs, distill_weight=0.7),
                "KD + QAT": TrainConfig(epochs=args.epochs, distill_weight=0.7,
                                        qat_bits={analyze(original).layer(n).weight: 8
                                                  for n in bits}),
            }.items():
                if label not in args.recoveries or (label == "KD + QAT" and not bits):
                    continue
                config.threads, config.progress = args.threads, False
                start = time.time()
                start_model = apply_policy(original, float_policy, feeds, reconstruct=True)
                if args.lr == "auto":
                    chosen = search_recovery(
                        start_model, original, train_set, val.take(2000), config,
                        steps=args.trial_steps, storage=optuna.storages.InMemoryStorage(),
                        study_name=label)
                    config.lr = chosen.lr
                    print(f"{name} x{speedup:g} {label}: lr {chosen.lr:g} (held-out accuracy "
                          f"by lr after {args.trial_steps} steps: {chosen.by_lr})", flush=True)
                else:
                    config.lr = float(args.lr)
                trained, report = train(start_model, train_set, config, val, teacher=original)
                if bits:
                    trained = apply_policy(trained, Policy({n: LayerAction(bits=8) for n in bits}),
                                           feeds)
                variants[label] = trained
                lrs[label] = f"{config.lr:g}"
                print(f"{name} x{speedup:g} {label}: {report.steps} steps, "
                      f"{time.time() - start:.0f} s, best val {report.best_val_accuracy}, "
                      f"stopped: {report.stopped_because}", flush=True)
            results = compare([original] + list(variants.values()), evaluation, args.threads,
                              runs=args.runs)
            for label, m in zip(variants, results[1:]):
                rows.append((name, speedup, f"keep {keep:g}" + (" + int8" if int8 else ""), label,
                             results[0].accuracy, m.accuracy, m.latency_ratio,
                             lrs.get(label, "-")))

    print("\n| model | target speedup | policy | recovery | lr | original acc | acc | "
          "latency ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for name, s, pol, label, a0, a, r, lr in rows:
        print(f"| {name} | {s:g}x | {pol} | {label} | {lr} | {100 * a0:.2f}% | {100 * a:.2f}% "
              f"| {r:.3f} |")


if __name__ == "__main__":
    main()
