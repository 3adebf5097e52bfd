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

from onnxamc.actions import apply_policy
from onnxamc.evaluate import compare
from onnxamc.models import bundled_model_path
from onnxamc.policy import LayerAction, Policy, uniform_policy
from onnxamc.recover import TrainConfig, train
from onnxamc.recover.recovery_search import search_recovery
from onnxamc.workflows.recovering import _split
from onnxamc.workflows.run import Run

RECOVERIES = ("fine-tune", "fine-tune + KD", "KD + QAT")
KEEPS = (0.9, 0.75, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2)


def parse_args() -> argparse.Namespace:
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
    return ap.parse_args()


class Bench:
    """One reference model: its data, and the recoveries of one chosen policy."""

    def __init__(self, name: str, args):
        self.name, self.args = name, args
        self.run = Run(bundled_model_path(name))
        self.original = self.run.model
        self.evaluation = self.run.load("fashion-mnist")
        calib = self.run.load("fashion-mnist:calib")
        self.feeds = lambda: calib.batches(32)
        self.train_set, self.val = _split(self.run.load("fashion-mnist:train", args.train_limit))

    def uniform(self, keep: float, int8: bool) -> Policy:
        return uniform_policy(self.run.context, {"keep": keep, **({"bits": 8} if int8 else {})})

    def choose(self, speedups):
        """{speedup: (keep, int8)}: the most accurate candidate after reconstruction
        within each latency goal (without reconstruction every pruned model is near
        chance and the choice would be arbitrary)."""
        candidates = [(k, q) for k in self.args.keeps for q in (False, True)]
        models = [apply_policy(self.original, self.uniform(k, q), self.feeds, reconstruct=True)
                  for k, q in candidates]
        measured = compare([self.original] + models, self.evaluation, runs=self.args.runs)[1:]
        chosen = {}
        for speedup in speedups:
            ratios = [m.latency_ratio for m in measured]
            fits = [i for i, r in enumerate(ratios) if r <= 1.0 / speedup] or \
                [min(range(len(ratios)), key=ratios.__getitem__)]
            best = max(fits, key=lambda i: (measured[i].quality, -ratios[i]))
            chosen[speedup] = candidates[best]
        return chosen

    def variants(self, keep: float, int8: bool) -> tuple[dict, dict]:
        """{label: model} for every recovery of the policy, and the learning rates."""
        policy = self.uniform(keep, int8)
        bits = [n for n, a in policy.layers.items() if a.bits == 8]
        variants = {"none": apply_policy(self.original, policy, self.feeds),
                    "reconstruction": apply_policy(self.original, policy, self.feeds,
                                                   reconstruct=True)}
        weights = {layer.name: layer.weight for layer in self.run.context.info.layers}
        configs = {"fine-tune": TrainConfig(epochs=self.args.epochs, distill_weight=0.0),
                   "fine-tune + KD": TrainConfig(epochs=self.args.epochs, distill_weight=0.7),
                   "KD + QAT": TrainConfig(epochs=self.args.epochs, distill_weight=0.7,
                                           qat_bits={weights[n]: 8 for n in bits})}
        lrs = {}
        for label, config in configs.items():
            if label in self.args.recoveries and (label != "KD + QAT" or bits):
                variants[label], lrs[label] = self.train(label, config, policy.only("prune"),
                                                         bits)
        return variants, lrs

    def train(self, label: str, config: TrainConfig, float_policy: Policy, bits: list[str]):
        config.threads, config.progress = self.args.threads, False
        start = time.time()
        start_model = apply_policy(self.original, float_policy, self.feeds, reconstruct=True)
        if self.args.lr == "auto":
            chosen = search_recovery(start_model, self.original, self.train_set,
                                     self.val.take(2000), config, steps=self.args.trial_steps,
                                     storage=optuna.storages.InMemoryStorage(),
                                     study_name=label)
            config.lr = chosen.lr
            print(f"{self.name} {label}: lr {chosen.lr:g} (held-out accuracy by lr after "
                  f"{self.args.trial_steps} steps: {chosen.by_lr})", flush=True)
        else:
            config.lr = float(self.args.lr)
        trained, report = train(start_model, self.train_set, config, self.val,
                                teacher=self.original)
        if bits:
            trained = apply_policy(trained, Policy({n: LayerAction(bits=8) for n in bits}),
                                   self.feeds)
        print(f"{self.name} {label}: {report.steps} steps, {time.time() - start:.0f} s, best "
              f"val {report.best_val_accuracy}, stopped: {report.stopped_because}", flush=True)
        return trained, f"{config.lr:g}"


def main() -> None:
    args = parse_args()
    rows = []
    for name in args.models:
        bench = Bench(name, args)
        for speedup, (keep, int8) in bench.choose(args.speedups).items():
            variants, lrs = bench.variants(keep, int8)
            results = compare([bench.original] + list(variants.values()), bench.evaluation,
                              runs=args.runs)
            for label, m in zip(variants, results[1:]):
                rows.append((name, speedup, f"keep {keep:g}" + (" + int8" if int8 else ""),
                             label, results[0].quality, m.quality, m.latency_ratio,
                             lrs.get(label, "-")))
    print("\n| model | target speedup | policy | recovery | lr | original acc | acc | "
          "latency ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for name, s, pol, label, a0, a, r, lr in rows:
        print(f"| {name} | {s:g}x | {pol} | {label} | {lr} | {100 * a0:.2f}% | {100 * a:.2f}% "
              f"| {r:.3f} |")


if __name__ == "__main__":
    main()
