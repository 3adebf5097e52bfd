"""A zoo of small torch architectures for the channel-pruning tests.

Each covers a coupling pattern that real models have: residual adds (ResNet basic and
bottleneck), depthwise + inverted residual (MobileNetV2), concat (DenseNet), split +
channel shuffle (ShuffleNet), squeeze-excite gates, group convolution (ResNeXt) and a
transformer encoder (LayerNorm, multi-head attention, MLP). Tiny widths: export and
inference take milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import torch
from torch import nn
from torch.nn import functional as F


def conv_bn(c_in, c_out, k=3, stride=1, groups=1, act=True):
    layers = [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(c_out)]
    if act:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class PlainCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = conv_bn(3, 16)
        self.c2 = conv_bn(16, 32, stride=2)
        self.c3 = conv_bn(32, 32)
        self.fc = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.c3(self.c2(self.c1(x))), 1))


class Basic(nn.Module):
    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.a = conv_bn(c_in, c_out, stride=stride)
        self.b = conv_bn(c_out, c_out, act=False)
        self.short = nn.Identity() if stride == 1 and c_in == c_out else \
            conv_bn(c_in, c_out, 1, stride, act=False)

    def forward(self, x):
        return F.relu(self.b(self.a(x)) + self.short(x))


class Bottleneck(nn.Module):
    def __init__(self, c, mid, groups=1):
        super().__init__()
        self.a = conv_bn(c, mid, 1)
        self.b = conv_bn(mid, mid, 3, groups=groups)
        self.c = conv_bn(mid, c, 1, act=False)

    def forward(self, x):
        return F.relu(self.c(self.b(self.a(x))) + x)


class ResNet(nn.Module):
    """Basic blocks (identity and projection shortcuts) and a bottleneck block."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.blocks = nn.Sequential(Basic(16, 16), Basic(16, 32, 2), Bottleneck(32, 16))
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


class ResNeXt(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 32)
        self.block = Bottleneck(32, 32, groups=4)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.block(self.stem(x)), 1), 1))


class InvertedResidual(nn.Module):
    def __init__(self, c, expand=4):
        super().__init__()
        h = c * expand
        self.block = nn.Sequential(conv_bn(c, h, 1), conv_bn(h, h, 3, groups=h),
                                   conv_bn(h, c, 1, act=False))

    def forward(self, x):
        return x + self.block(x)


class MobileNetV2(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16, stride=2)
        self.blocks = nn.Sequential(InvertedResidual(16), InvertedResidual(16))
        self.head = conv_bn(16, 64, 1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(F.dropout(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1), 0.1,
                                 self.training))


class DenseNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.l1 = conv_bn(16, 8)
        self.l2 = conv_bn(24, 8)
        self.trans = conv_bn(32, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([x, self.l1(x)], 1)
        x = torch.cat([x, self.l2(x)], 1)
        return self.fc(F.avg_pool2d(self.trans(x), 8).flatten(1))


class ShuffleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 32)
        self.branch = nn.Sequential(conv_bn(16, 16, 1), conv_bn(16, 16, 3, groups=16, act=False),
                                    conv_bn(16, 16, 1))
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.stem(x)
        a, b = x.chunk(2, dim=1)
        x = torch.cat([a, self.branch(b)], 1)
        n, c, h, w = x.shape
        x = x.reshape(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.fc(x.mean((2, 3)))


class SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 32)
        self.squeeze = nn.Conv2d(32, 8, 1)
        self.excite = nn.Conv2d(8, 32, 1)
        self.out = conv_bn(32, 16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        gate = torch.sigmoid(self.excite(F.relu(self.squeeze(x.mean((2, 3), keepdim=True)))))
        return self.fc(self.out(x * gate).mean((2, 3)))


class Encoder(nn.Module):
    """Pre-norm transformer encoder: token embedding, attention with 4 heads, GELU MLP."""

    def __init__(self, d=32, heads=4, tokens=6, features=8):
        super().__init__()
        self.heads = heads
        self.embed = nn.Linear(features, d)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(d, 64), nn.Linear(64, d)
        self.head = nn.Linear(d, 10)

    def forward(self, x):
        x = self.embed(x)
        b, t, d = x.shape
        y = self.ln1(x)
        q, k, v = (m(y).reshape(b, t, self.heads, -1).transpose(1, 2)
                   for m in (self.q, self.k, self.v))
        att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
        x = x + self.o((att @ v).transpose(1, 2).reshape(b, t, d))
        x = x + self.fc2(F.gelu(self.fc1(self.ln2(x))))
        return self.head(x.mean(1))


class UNet(nn.Module):
    """Encoder-decoder: pooling, ConvTranspose and Resize up, skip Concat, Pad, a channel
    Slice, Instance/GroupNorm and per-channel PReLU."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(3, 16, 3, padding=1)
        self.inorm = nn.InstanceNorm2d(16, affine=True)
        self.act = nn.PReLU(16)
        self.mid = nn.Conv2d(16, 32, 3, padding=1)
        self.gnorm = nn.GroupNorm(4, 32)
        self.up = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec = nn.Conv2d(32, 16, 3)
        self.side = nn.Conv2d(8, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        e = self.act(self.inorm(self.enc(x)))
        m = F.relu(self.gnorm(self.mid(F.max_pool2d(e, 2))))
        u = self.up(m) + F.interpolate(m[:, :16], scale_factor=2.0, mode="nearest")
        d = self.dec(F.pad(torch.cat([u, e], 1), (1, 1, 1, 1)))
        return self.fc((d + self.side(e[:, 4:12])).mean((2, 3)))


IMAGE = (2, 3, 8, 8)
ZOO = {
    "plain": (PlainCNN, IMAGE),
    "resnet": (ResNet, IMAGE),
    "resnext": (ResNeXt, IMAGE),
    "mobilenetv2": (MobileNetV2, IMAGE),
    "densenet": (DenseNet, IMAGE),
    "shufflenet": (ShuffleNet, IMAGE),
    "squeeze_excite": (SqueezeExcite, IMAGE),
    "transformer": (Encoder, (2, 6, 8)),
    "unet": (UNet, IMAGE),
}


def build(name: str) -> nn.Module:
    """The zoo model `name` with seeded random weights and non-trivial BN statistics."""
    torch.manual_seed(0)
    module = ZOO[name][0]()
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm2d)):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 1.5)
    return module.eval()


class LazyZoo(Mapping):
    """{name: value} that builds each value on first use, once per process (a pytest-xdist
    worker exports only the zoo models its tests need)."""

    def __init__(self, make):
        self._make, self._done = make, {}

    def __getitem__(self, name):
        if name not in ZOO:
            raise KeyError(name)
        if name not in self._done:
            self._done[name] = self._make(name)
        return self._done[name]

    def __iter__(self):
        return iter(ZOO)

    def __len__(self):
        return len(ZOO)


_PATHS: list[LazyZoo] = []


@pytest.fixture(scope="session")
def zoo_paths(tmp_path_factory) -> LazyZoo:
    """Zoo models exported on first use: {name: ONNX path}. (Test modules import this
    fixture; the module-level instance makes them share the exports.)"""
    from conftest import export

    if not _PATHS:
        folder = tmp_path_factory.mktemp("zoo")
        _PATHS.append(LazyZoo(lambda name: export(build(name), ZOO[name][1],
                                                  folder / f"{name}.onnx")))
    return _PATHS[0]


def pruning_row(model) -> dict:
    """What the done-criteria of issue 12 ask of one (normalized) model: groups prunable
    of all, the share of conv/linear output channels in prunable groups, and whether
    uniform keep=0.5 gives a valid model (checker, onnxruntime, output shapes) with
    exactly the MACs the plan predicted."""
    from onnxamc.graph import analyze
    from onnxamc.graph.groups import channel_groups
    from onnxamc.passes.prune_channels import choose_channels, group_ratios, prune_channels
    from onnxamc.runtime.check import check_compressed

    info, analysis = analyze(model), channel_groups(model)
    prunable = [g for g in analysis.groups if g.prunable]
    in_prunable = sum(layer.c_out for layer in info.layers
                      if (g := analysis.group_of(layer.name)) is not None and g.prunable)
    row = {"groups": len(analysis.groups), "prunable": len(prunable),
           "share": in_prunable / max(1, sum(layer.c_out for layer in info.layers)),
           "failures": len(analysis.rule_failures), "macs": info.macs}
    keep = {layer: 0.5 for g in prunable for layer in g.layers}
    if keep:
        plan = analysis.plan(choose_channels(model, analysis, group_ratios(analysis, keep), 8,
                                             "l1"))
        pruned = prune_channels(model, keep, analysis=analysis)
        check_compressed(model, pruned)  # raises a one-line CheckError when invalid
        row.update(predicted=plan.predict()[0], measured=analyze(pruned).macs)
    return row
