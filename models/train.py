"""Train a reference model on the full Fashion-MNIST training set and export it to ONNX.

Run once; the results are committed (models/*.onnx, the model card and the
evaluation / calibration subsets), so tests and the default run need no training.

    python -m onnxamc.models.train resnet20 --epochs 10 --threads 1
    python -m onnxamc.models.train mobilenetv2 --epochs 12 --threads 1
    python -m onnxamc.models.train --subsets   # writes the eval/calibration .npz files

Needs the Debian package dataset-fashion-mnist (files under /usr/share/datasets).
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
import numpy as np
import torch
import torch.nn.functional as F

from onnxamc.data import read_fashion_mnist_idx
from onnxamc.export import OPSET, export_torch
from onnxamc.models import DATA_DIR, MODELS_DIR
from onnxamc.models.mobilenet import mobilenetv2
from onnxamc.models.resnet import resnet20

FACTORIES = {"resnet20": resnet20, "mobilenetv2": mobilenetv2}
EVAL_SUBSET, CALIB_SUBSET, SEED = 2000, 512, 0


def augment(x: torch.Tensor) -> torch.Tensor:
    """Random 2-pixel shifts (pad + crop) and horizontal flips."""
    n = x.shape[0]
    padded = F.pad(x, (2, 2, 2, 2))
    dx, dy = torch.randint(0, 5, (2,))
    x = padded[:, :, dy : dy + 28, dx : dx + 28]
    flip = torch.rand(n) < 0.5
    x[flip] = x[flip].flip(-1)
    return x


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = sum(
        (model(x[i : i + 1000]).argmax(1) == y[i : i + 1000]).sum().item()
        for i in range(0, len(x), 1000)
    )
    return correct / len(x)


def train(name: str, epochs: int, batch: int, lr: float, threads: int,
          checkpoint: str | None = None) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(SEED)
    x_train, y_train = read_fashion_mnist_idx("train")
    x_test, y_test = read_fashion_mnist_idx("t10k")
    x_train, y_train = torch.from_numpy(x_train), torch.from_numpy(y_train)
    x_test, y_test = torch.from_numpy(x_test), torch.from_numpy(y_test)

    model = FACTORIES[name]()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    steps = epochs * ((len(x_train) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                pct_start=0.25)
    start = time.time()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_train))
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            loss = F.cross_entropy(model(augment(x_train[idx])), y_train[idx],
                                   label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = accuracy(model, x_test, y_test)
        print(f"{name} epoch {epoch + 1}/{epochs}: loss {loss.item():.3f} "
              f"test {acc:.4f} ({(time.time() - start) / 60:.1f} min)", flush=True)

    model.eval()
    if checkpoint:
        torch.save(model.state_dict(), checkpoint)
    onnx_path = MODELS_DIR / f"{name}.onnx"
    export_torch(model, (4, 1, 28, 28), onnx_path)
    print(f"exported {onnx_path} ({onnx_path.stat().st_size / 1e6:.2f} MB), matches torch")
    card = {
        "model": name,
        "params": sum(p.numel() for p in model.parameters()),
        "test_accuracy_full_10k": acc,
        "recipe": {
            "data": "Fashion-MNIST, full 60k training set, inputs scaled to [0, 1]",
            "augmentation": "random 2-pixel shift (pad+crop), horizontal flip",
            "optimizer": f"SGD nesterov momentum 0.9, weight decay 5e-4, batch {batch}",
            "schedule": f"OneCycle, max lr {lr}, {epochs} epochs, label smoothing 0.1",
            "threads": threads,
            "train_minutes": round((time.time() - start) / 60, 1),
            "seed": SEED,
        },
        "onnx": {"file": onnx_path.name, "opset": OPSET, "dynamic_batch": True},
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
    }
    (MODELS_DIR / f"{name}.card.json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card, indent=2))


def export_checkpoint(name: str, checkpoint: str) -> None:
    """Export a trained state_dict and check the ONNX model's accuracy on the full test
    set against the model card (same number, from onnxruntime this time)."""
    from onnxamc.graph import load_model
    from onnxamc.runtime import make_session, run_batches
    from onnxamc.data import Dataset

    model = FACTORIES[name]()
    model.load_state_dict(torch.load(checkpoint, map_location="cpu"))
    onnx_path = MODELS_DIR / f"{name}.onnx"
    export_torch(model, (4, 1, 28, 28), onnx_path)
    x_test, y_test = read_fashion_mnist_idx("t10k")
    session = make_session(load_model(onnx_path), threads=2)
    logits = run_batches(session, Dataset({"input": x_test}, y_test).batches(500))
    acc = float(np.mean(logits.argmax(1) == y_test))
    card_path = MODELS_DIR / f"{name}.card.json"
    card = json.loads(card_path.read_text()) if card_path.exists() else {"model": name}
    card["test_accuracy_full_10k_onnxruntime"] = acc
    card["onnx"] = {"file": onnx_path.name, "opset": OPSET, "dynamic_batch": True,
                    "bytes": onnx_path.stat().st_size, "batchnorm": "folded into Conv"}
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    print(f"exported {onnx_path}: onnxruntime top-1 on the full test set {acc:.4f}")


def write_subsets() -> None:
    """Fixed evaluation subset (test set) and calibration subset (training set)."""
    rng = np.random.default_rng(SEED)
    x_test, y_test = read_fashion_mnist_idx("t10k", as_uint8=True)
    x_train, y_train = read_fashion_mnist_idx("train", as_uint8=True)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    for name, (x, y, n) in {"eval": (x_test, y_test, EVAL_SUBSET),
                            "calib": (x_train, y_train, CALIB_SUBSET)}.items():
        idx = np.sort(rng.choice(len(x), n, replace=False))
        out = DATA_DIR / f"fashion-mnist-{name}.npz"
        np.savez_compressed(out, images=x[idx], labels=y[idx].astype(np.int64))
        print(f"wrote {out}: {n} images")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", choices=sorted(FACTORIES))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--subsets", action="store_true", help="write the .npz subsets")
    ap.add_argument("--checkpoint", help="also save the trained state_dict here")
    ap.add_argument("--export-only", metavar="CKPT",
                    help="skip training: export MODEL from this state_dict and re-measure it")
    args = ap.parse_args()
    if args.subsets:
        write_subsets()
    if args.model and args.export_only:
        export_checkpoint(args.model, args.export_only)
    elif args.model:
        train(args.model, args.epochs, args.batch, args.lr, args.threads, args.checkpoint)


if __name__ == "__main__":
    main()
