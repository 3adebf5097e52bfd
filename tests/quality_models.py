"""Real models that are not classifiers, exported from torch for the metric and data tests:
a small text encoder (token ids and an attention mask in, a normalised sentence embedding
out), a small UNet (a dense one-channel map), and a model with two inputs and two outputs
(class scores and a heat map). Random weights: their metrics are fidelity to themselves.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx

VOCAB, SEQ = 200, 16


def export_multi(module, example: tuple, path: Path, inputs: list[str], outputs: list[str],
                 dynamic: dict[str, dict[int, str]]) -> Path:
    """TorchScript export (several inputs and outputs, dynamic axes), checked."""
    import warnings

    import torch

    torch.manual_seed(0)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), example, buffer, dynamo=False, opset_version=18,
                          input_names=inputs, output_names=outputs, dynamic_axes=dynamic)
    model = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def text_encoder(path: Path) -> Path:
    """Embedding, one attention block and a feed-forward block (MatMul layers), masked
    mean pooling, L2 normalisation: `sentence_embedding` [N, 64]."""
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self, dim: int = 64, hidden: int = 128):
            super().__init__()
            self.embed = nn.Embedding(VOCAB, dim)
            self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
            self.ff1, self.ff2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
            self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)

        def forward(self, input_ids, attention_mask):
            x = self.embed(input_ids)
            mask = attention_mask.to(x.dtype)
            scores = self.q(x) @ self.k(x).transpose(1, 2) / 8.0
            scores = scores + (1.0 - mask[:, None, :]) * -1e4
            x = self.norm1(x + self.o(scores.softmax(-1) @ self.v(x)))
            x = self.norm2(x + self.ff2(torch.relu(self.ff1(x))))
            pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
            return pooled / pooled.norm(dim=-1, keepdim=True)

    torch.manual_seed(0)
    ids, mask = torch.randint(1, VOCAB, (2, SEQ)), torch.ones(2, SEQ, dtype=torch.int64)
    return export_multi(Encoder(), (ids, mask), path, ["input_ids", "attention_mask"],
                        ["sentence_embedding"],
                        {"input_ids": {0: "batch"}, "attention_mask": {0: "batch"},
                         "sentence_embedding": {0: "batch"}})


def token_batch(rng: np.random.Generator, count: int) -> dict[str, np.ndarray]:
    """Token ids and attention masks of `count` sentences of random lengths."""
    lengths = rng.integers(4, SEQ + 1, count)
    mask = (np.arange(SEQ)[None] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(1, VOCAB, (count, SEQ)) * mask
    return {"input_ids": ids.astype(np.int64), "attention_mask": mask}


def unet(path: Path, classes: int = 1) -> Path:
    """Two levels of a UNet on 3x32x32 images: a one-channel dense map `depth` (or, with
    `classes` > 1, per-pixel class scores `classes`)."""
    import torch
    from torch import nn

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc1 = nn.Conv2d(3, 16, 3, padding=1)
            self.enc2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
            self.mid = nn.Conv2d(32, 32, 3, padding=1)
            self.up = nn.ConvTranspose2d(32, 16, 2, stride=2)
            self.dec = nn.Conv2d(32, 16, 3, padding=1)
            self.head = nn.Conv2d(16, classes, 1)

        def forward(self, x):
            e1 = torch.relu(self.enc1(x))
            m = torch.relu(self.mid(torch.relu(self.enc2(e1))))
            d = torch.relu(self.dec(torch.cat([self.up(m), e1], dim=1)))
            return self.head(d)

    torch.manual_seed(0)
    name = "depth" if classes == 1 else "classes"
    return export_multi(UNet(), (torch.rand(2, 3, 32, 32),), path, ["image"], [name],
                        {"image": {0: "batch"}, name: {0: "batch"}})


def two_headed(path: Path) -> Path:
    """Two inputs (an image and a side vector), two outputs: `scores` [N, 5] and a heat
    map `heat` [N, 1, 8, 8]."""
    import torch
    from torch import nn

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
            self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
            self.side = nn.Linear(4, 32)
            self.fc = nn.Linear(32, 5)
            self.heat = nn.Conv2d(32, 1, 1)

        def forward(self, image, side):
            y = torch.relu(self.conv1(image))
            y = torch.relu(self.conv2(y) + self.side(side)[:, :, None, None])
            return self.fc(y.mean(dim=(2, 3))), self.heat(y)

    torch.manual_seed(0)
    return export_multi(TwoHeads(), (torch.rand(2, 1, 8, 8), torch.rand(2, 4)), path,
                        ["image", "side"], ["scores", "heat"],
                        {"image": {0: "batch"}, "side": {0: "batch"}, "scores": {0: "batch"},
                         "heat": {0: "batch"}})
