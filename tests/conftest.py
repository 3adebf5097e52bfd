"""Shared fixtures: real models exported from torch, the bundled models and data."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import pytest

if TYPE_CHECKING:
    import zoo

os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def export(module, input_shape, path: Path) -> Path:
    """Export a torch module with onnxamc's own exporter (dynamic batch, checked)."""
    import torch

    from onnxamc.export import export_torch

    torch.manual_seed(0)
    export_torch(module, input_shape, path)
    return path


@pytest.fixture(scope="session")
def tiny_cnn(tmp_path_factory) -> Path:
    """A small CNN (conv-bn-relu x2, residual add, global pool, linear) on 1x8x8 input,
    trained for a few steps on scikit-learn digits so that accuracy means something."""
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(16)
            self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
            self.bn2 = nn.BatchNorm2d(16)
            self.conv3 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
            self.fc = nn.Linear(32, 10)

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = torch.relu(y + self.bn2(self.conv2(y)))
            y = torch.relu(self.conv3(y))
            return self.fc(y.mean(dim=(2, 3)))

    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32)[:, None]
    y = torch.tensor(digits.target)
    model = Tiny()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        idx = torch.randint(0, len(x), (128,))
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return export(model, (2, 1, 8, 8), tmp_path_factory.mktemp("tiny") / "tiny_cnn.onnx")


@pytest.fixture(scope="session")
def resnet20() -> Path:
    from onnxamc.models import bundled_model_path

    return bundled_model_path("resnet20")


@pytest.fixture(scope="session")
def mobilenetv2() -> Path:
    from onnxamc.models import bundled_model_path

    return bundled_model_path("mobilenetv2")


@dataclass(frozen=True)
class ZooModel:
    """A zoo model as the tests get it: its record and the path of its ONNX file."""

    entry: zoo.Entry
    path: Path

    @property
    def name(self) -> str:
        return self.entry.name

    def shape_args(self) -> list[str]:
        """`--input-shape` arguments giving every input its concrete zoo shape."""
        return [f"--input-shape={name}:{','.join(map(str, shape))}"
                for name, shape in self.entry.input_shapes.items() if shape]


@pytest.fixture
def zoo_model(request) -> ZooModel:
    """The zoo model named by the test's parameter (see zoo.params()), exported or built
    on first use into the zoo cache; skipped when its PyPI package is not installed."""
    import zoo

    try:
        return ZooModel(zoo.entry(request.param), zoo.get(request.param))
    except zoo.ZooUnavailable as exc:
        pytest.skip(str(exc))


def run_model(model: onnx.ModelProto | Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(None, feed)
