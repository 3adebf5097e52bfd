"""Importing torchvision (and timm, which imports it) beside the CPU torch, in tests only.

PyPI's torchvision wheel is built against a CUDA torch: importing it beside the CPU
torch fails while `torchvision/_meta_registrations.py` and `_autograd_registrations.py`
register fake kernels for its compiled ops (`operator torchvision::nms does not exist`).
The model definitions need none of those ops, so both modules are pre-seeded in
`sys.modules` as empty modules before the first import. Site-packages stays untouched,
and the onnxamc package never does this.
"""

from __future__ import annotations

import sys
import types

SKIPPED = ("torchvision._meta_registrations", "torchvision._autograd_registrations")


def import_torchvision():
    """torchvision, importable without its compiled-op registrations."""
    for name in SKIPPED:
        sys.modules.setdefault(name, types.ModuleType(name))
    import torchvision

    return torchvision


def import_timm():
    import_torchvision()
    import timm

    return timm
