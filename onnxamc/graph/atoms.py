"""Channel atoms: a union-find over the channels layers produce.

Every channel a layer produces is an *atom*. Atoms that must be removed together are
joined into one class (a *channel*); the layers whose atoms meet form one *group* (the
union-find over sources). An atom can be blocked: deliberately (a rule that does not
support the case, a model output) or because a rule failed; failures are kept apart so
that a bug in a rule never passes for a modelling limit.
"""

from __future__ import annotations

import numpy as np


class ChannelAtoms:
    """Union-find over atoms, with the source layer of each atom and block reasons."""

    def __init__(self):
        self.parent: list[int] = []
        self.source: list[int] = []
        self.source_parent: list[int] = []
        self.source_names: list[str | None] = []
        self.blocked: dict[int, str] = {}  # atom -> first reason it cannot be removed
        self.failures: dict[int, str] = {}  # atom -> the failed rule that blocked it

    def __len__(self) -> int:
        return len(self.parent)

    def new_source(self, name: str | None, count: int, blocked: str | None = None) -> np.ndarray:
        src = len(self.source_names)
        self.source_names.append(name)
        self.source_parent.append(src)
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        self.source.extend([src] * count)
        atoms = np.arange(start, start + count, dtype=np.int64)
        if blocked:
            self.block(atoms, blocked)
        return atoms

    def find(self, a: int) -> int:
        parent = self.parent
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    def find_source(self, s: int) -> int:
        parent = self.source_parent
        while parent[s] != s:
            parent[s] = parent[parent[s]]
            s = parent[s]
        return s

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        """Tie a[i] to b[i] for every i: they are removed together."""
        for x, y in set(zip(np.asarray(a).tolist(), np.asarray(b).tolist())):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[ry] = rx
            sx, sy = self.find_source(self.source[x]), self.find_source(self.source[y])
            if sx != sy:
                self.source_parent[sy] = sx

    def block(self, atoms, reason: str, failure: bool = False) -> None:
        for a in np.asarray(atoms).tolist():
            self.blocked.setdefault(a, reason)
            if failure:
                self.failures.setdefault(a, reason)
