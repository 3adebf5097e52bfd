"""A MobileNetV2-style network for 1x28x28 input (Sandler et al. 2018)."""

import torch
from torch import nn


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1,
            act: bool = True) -> nn.Sequential:
    layers = [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1x1 expansion, 3x3 depthwise, 1x1 linear projection; residual when shapes agree."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        layers = [conv_bn(c_in, hidden, 1)] if expand != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden),
                   conv_bn(hidden, c_out, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_residual else y


# (expansion, output channels, repeats, first stride) for 28x28 input: 28 -> 14 -> 7.
# Expansion 4 rather than 6 keeps training on two CPU cores to minutes per epoch.
SETTINGS = [(1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 3, 2), (4, 64, 2, 1), (4, 96, 1, 1)]


class MobileNetV2(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, stem: int = 16,
                 last: int = 256, settings=SETTINGS):
        super().__init__()
        layers, c_in = [conv_bn(in_channels, stem, 3)], stem
        for expand, c_out, repeats, stride in settings:
            for i in range(repeats):
                layers.append(InvertedResidual(c_in, c_out, stride if i == 0 else 1, expand))
                c_in = c_out
        layers.append(conv_bn(c_in, last, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.1)
        self.fc = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.fc(self.dropout(torch.flatten(x, 1)))


def mobilenetv2(num_classes: int = 10, in_channels: int = 1) -> MobileNetV2:
    """The bundled MobileNetV2-style model (inverted residuals, depthwise convolutions)."""
    return MobileNetV2(in_channels, num_classes)
