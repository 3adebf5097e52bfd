"""Robustness KPI: accuracy under an FGSM attack crafted on the original model.

The adversarial inputs come from the original (uncompressed) model's gradients, a
transfer attack, so every compressed candidate faces the same inputs and the numbers
compare: a policy that keeps clean accuracy but loses robustness shows it here.
"""

from __future__ import annotations

import numpy as np
import onnx

from onnxamc.data import Dataset
from onnxamc.recover.bridge import to_torch


def fgsm_dataset(original: onnx.ModelProto, data: Dataset, epsilon: float,
                 clip: tuple[float, float] | None = (0.0, 1.0), batch: int = 256) -> Dataset:
    """x + ε·sign(∇x loss) for each sample (labels, or the model's own top-1 without)."""
    import torch
    import torch.nn.functional as F

    if len(data.inputs) != 1:
        raise ValueError("the FGSM robustness metric needs a single-input model")
    (name, x_all), = data.inputs.items()
    if not np.issubdtype(x_all.dtype, np.floating):
        raise ValueError(f"FGSM needs a float input; {name!r} is {x_all.dtype}")
    module = to_torch(original).module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    adversarial = np.empty_like(x_all)
    for lo in range(0, len(x_all), batch):
        x = torch.from_numpy(x_all[lo: lo + batch]).clone().requires_grad_(True)
        logits = module(x)
        logits = logits[0] if isinstance(logits, (tuple, list)) else logits
        if data.labels is not None:
            target = torch.from_numpy(data.labels[lo: lo + batch])
        else:
            target = logits.argmax(1).detach()
        F.cross_entropy(logits, target).backward()
        x_adv = x + epsilon * x.grad.sign()
        if clip is not None:
            x_adv = x_adv.clamp(*clip)
        adversarial[lo: lo + batch] = x_adv.detach().numpy()
    labels = data.labels
    return Dataset({name: adversarial}, labels, f"{data.name}+fgsm{epsilon:g}")
