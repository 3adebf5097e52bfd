"""The real-model zoo: breadth, and every model read by onnxamc without a traceback."""

from __future__ import annotations

import re
from collections import Counter

import pytest

import zoo
from onnxamc import cli

REQUIRED_FAMILIES = {"layer-scale-layernorm", "vision-transformer", "mobile-se-hswish",
                     "compound-scaled", "group-conv", "channel-shuffle", "dense-concat",
                     "resnet", "squeezenet", "segmentation", "text-transformer",
                     "constant-weights", "tf-same-pad", "depthwise-input"}


def test_zoo_is_broad():
    entries = list(zoo.ENTRIES.values())
    fast = [e for e in entries if not e.slow]
    sources = Counter(e.source for e in entries)
    exporters = Counter(e.exporter for e in entries if e.exporter)
    assert len(fast) >= 25 and len({(e.family, e.source) for e in entries}) >= 25
    assert {"torchvision", "timm", "pypi", "handmade"} <= set(sources)
    assert exporters["dynamo"] >= 8 and exporters["torchscript"] >= 8, exporters
    assert REQUIRED_FAMILIES <= {e.family for e in fast}, REQUIRED_FAMILIES - {e.family for e in fast}
    several_outputs = [e.name for e in fast if e.family == "segmentation" and len(e.outputs) > 1]
    assert several_outputs
    text = [e for e in fast if e.family == "text-transformer"]
    assert any({i.kind for i in e.inputs} >= {"ids", "mask"} for e in text)


@pytest.mark.parametrize("zoo_model", zoo.params(), indirect=True)
def test_inspect_reads_the_model(zoo_model, capsys):
    """`onnxamc inspect MODEL --input-shape ...`: exit 0, the front door's summary, and
    a layer table with layers (weights behind Constant nodes included)."""
    code = cli.main(["inspect", str(zoo_model.path), *zoo_model.shape_args()])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in out + err
    assert "front door: nodes" in out
    layers = re.search(r"^(\d+) layers, ([\d,]+) MACs", out, re.MULTILINE)
    assert layers and int(layers.group(1)) > 0 and int(layers.group(2).replace(",", "")) > 0
