"""Small torch helpers shared by the learning agents (DDPG, the RL controller)."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def one_thread():
    """Run torch on one thread: these networks are tiny, and on a shared machine a
    second thread makes each update about ten times slower (measured: 2 ms vs 17 ms
    for a 300-300 MLP step on 2 loaded cores). The caller's setting is restored."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def mlp(n_in: int, n_out: int, hidden: int, head=None):
    """n_in → hidden → hidden → n_out with ReLUs, and an optional output activation."""
    from torch import nn

    layers = [nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
              nn.Linear(hidden, n_out)]
    return nn.Sequential(*layers, *([head] if head is not None else []))
