"""The AMC agent (He et al. 2018) as an Optuna sampler: DDPG over the layers.

One trial is one episode. At the first parameter Optuna asks for, the actor walks the
layers in define-by-run order: state s_t (the layer's AMC features, normalised to [0, 1]
across the model, plus the share of MACs already removed, the share still ahead and
the previous action), action a_t in [0, 1]^k (one "how much to compress" per action
kind: 0 is the identity, 1 the most compressed value of its range), truncated-normal
exploration noise that decays per episode, and random actions for the warm-up episodes.
`sample_independent` then answers each parameter from that plan.

The action wall: with a MACs target, each layer's compression is raised just enough
that the target stays reachable if every later layer took its most compressed value, so
every proposed policy meets the target (AMC's resource-constrained mode).

Learning happens in `after_trial`: the finished trial's policy is turned back into its
transitions (so enqueued and cached policies teach the agent too), every step gets the
trial's reward minus a moving-average baseline, and the critic and actor take one
update per layer from the replay buffer.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from onnxamc.search.agents.episodic import EpisodeSampler
from onnxamc.search.agents.nets import mlp, one_thread
from onnxamc.search.space import Param, SearchSpace


def normalised_features(space: SearchSpace, steps: list[int]) -> np.ndarray:
    """Each layer's AMC features (LayerSlot.features, else what the slot knows) scaled
    to [0, 1] column by column across the model."""
    rows = []
    for i in steps:
        slot = space.layers[i]
        rows.append(list(slot.features) or [i, slot.c_in, slot.c_out, slot.params, slot.macs])
    x = np.asarray(rows, dtype=np.float64)
    lo, hi = x.min(axis=0), x.max(axis=0)
    return ((x - lo) / np.where(hi > lo, hi - lo, 1.0)).astype(np.float32)


def truncated_normal(rng: np.random.RandomState, mean: np.ndarray, sigma: float) -> np.ndarray:
    """N(mean, sigma) truncated to [0, 1] (resampled, then clipped as a last resort)."""
    out = rng.normal(mean, sigma)
    for _ in range(20):
        bad = (out < 0) | (out > 1)
        if not bad.any():
            break
        out[bad] = rng.normal(mean[bad], sigma)
    return np.clip(out, 0.0, 1.0)


class DdpgSampler(EpisodeSampler):
    def __init__(self, space: SearchSpace, target: float | None = None, seed: int | None = 0,
                 warmup: int = 10, sigma: float = 0.5, sigma_decay: float = 0.95,
                 hidden: int = 300, buffer_size: int = 4000, batch_size: int = 64,
                 lr_actor: float = 1e-4, lr_critic: float = 1e-3, tau: float = 0.01,
                 discount: float = 1.0, baseline_decay: float = 0.95,
                 violation_penalty: float = 1.0):
        import torch

        super().__init__(space, seed)
        self.target, self.warmup = target, warmup
        self.sigma, self.sigma_decay = sigma, sigma_decay
        self.batch_size, self.tau, self.discount = batch_size, tau, discount
        self.baseline_decay, self.violation_penalty = baseline_decay, violation_penalty
        self.kinds = [name for name in dict.fromkeys(p.action.name for p in space.params())]
        self.by_layer: dict[int, list[Param]] = {}
        for p in space.params():
            self.by_layer.setdefault(p.layer, []).append(p)
        self.steps = sorted(self.by_layer)
        self.walled = {p.name for p in space.params() if p.spec.cost is not None}
        self.features = normalised_features(space, self.steps) if self.steps else None
        k = len(self.kinds)
        self.state_dim = (self.features.shape[1] if self.steps else 0) + 3 + k
        self._rng = np.random.RandomState(seed)
        self._buffer: deque = deque(maxlen=buffer_size)
        self._baseline: float | None = None
        self.episodes = 0
        self.unreachable = 0  # episodes where even full compression missed the target
        with torch.random.fork_rng():
            torch.manual_seed(0 if seed is None else seed)
            self.actor = mlp(self.state_dim, k, hidden, torch.nn.Sigmoid())
            self.critic = mlp(self.state_dim + k, 1, hidden, None)
            self.actor_target = mlp(self.state_dim, k, hidden, torch.nn.Sigmoid())
            self.critic_target = mlp(self.state_dim + k, 1, hidden, None)
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr_actor)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr_critic)
        self._torch = torch

    # --- acting -------------------------------------------------------------------
    def propose(self) -> dict[str, Any]:
        """One episode: a value for every parameter of the space, layer by layer."""
        values: dict[str, Any] = {}
        previous = np.zeros(len(self.kinds), dtype=np.float32)
        missed = False
        for t, layer in enumerate(self.steps):
            state = self._state(t, values, previous)
            if self.episodes < self.warmup:
                action = self._rng.uniform(0, 1, len(self.kinds))
            else:
                with self._torch.no_grad(), one_thread():
                    mean = self.actor(self._torch.from_numpy(state)[None])[0].numpy()
                action = truncated_normal(self._rng, mean.astype(np.float64), self.sigma)
            layer_values, reached = self.wall(layer, action, values)
            missed |= not reached
            values.update(layer_values)
            previous = self._action_of(layer, values)
        self.unreachable += missed
        return values

    def wall(self, layer: int, action: np.ndarray, decided: dict) -> tuple[dict, bool]:
        """This layer's values for `action`, with the MACs-reducing parts raised (the
        least possible) so the target stays reachable. Returns (values, reachable)."""
        params = self.by_layer[layer]

        def values_at(extra: float) -> dict:
            out = {}
            for p in params:
                amount = action[self.kinds.index(p.action.name)]
                if p.name in self.walled:
                    out[p.name] = p.value_at(amount + extra * (1 - amount), toward_extreme=True)
                else:
                    out[p.name] = p.value_at(amount)
            return out

        if self.target is None or not any(p.name in self.walled for p in params):
            return values_at(0.0), True
        later = {p.name: p.value_at(1.0) for t in self.steps if t > layer
                 for p in self.by_layer[t] if p.name in self.walled}

        def fits(extra: float) -> bool:
            return self.space.macs_ratio({**decided, **values_at(extra), **later}) \
                <= self.target + 1e-9

        if fits(0.0):
            return values_at(0.0), True
        if not fits(1.0):
            return values_at(1.0), False
        low, high = 0.0, 1.0
        for _ in range(30):
            mid = (low + high) / 2
            low, high = (low, mid) if fits(mid) else (mid, high)
        return values_at(high), True

    def _state(self, t: int, values: dict, previous: np.ndarray) -> np.ndarray:
        layer = self.steps[t]
        total = self.space.total_macs or 1
        ahead = sum(self.space.layers[i].macs for i in self.steps[t + 1:])
        removed = total - self.space.macs(values) if values else 0.0
        dynamic = [removed / total, ahead / total, layer / max(1, len(self.space.layers) - 1)]
        return np.concatenate([self.features[t], np.asarray(dynamic, dtype=np.float32),
                               previous]).astype(np.float32)

    def _action_of(self, layer: int, values: dict) -> np.ndarray:
        out = np.zeros(len(self.kinds), dtype=np.float32)
        for p in self.by_layer[layer]:
            if p.name in values:
                out[self.kinds.index(p.action.name)] = p.compression(values[p.name])
        return out

    # --- learning -----------------------------------------------------------------
    def learn(self, study: optuna.Study, trial: FrozenTrial, r: float) -> None:
        advantage = 0.0 if self._baseline is None else r - self._baseline
        self._baseline = r if self._baseline is None else \
            self.baseline_decay * self._baseline + (1 - self.baseline_decay) * r
        params = {k: v for k, v in trial.params.items() if self.space.param(k) is not None}
        decided: dict[str, Any] = {}
        previous = np.zeros(len(self.kinds), dtype=np.float32)
        states, actions = [], []
        for t, layer in enumerate(self.steps):
            states.append(self._state(t, decided, previous))
            decided.update({p.name: params[p.name] for p in self.by_layer[layer]
                            if p.name in params})
            previous = self._action_of(layer, decided)
            actions.append(previous)
        states.append(np.zeros_like(states[0]))
        for t in range(len(self.steps)):
            done = float(t == len(self.steps) - 1)
            self._buffer.append((states[t], actions[t], advantage, states[t + 1], done))
        self.episodes += 1
        if self.episodes > self.warmup:
            self.sigma *= self.sigma_decay
            with one_thread():
                for _ in range(len(self.steps)):
                    self._update()

    def _update(self) -> None:
        torch = self._torch
        if len(self._buffer) < min(self.batch_size, 2 * len(self.steps)):
            return
        idx = self._rng.randint(0, len(self._buffer), min(self.batch_size, len(self._buffer)))
        batch = [self._buffer[i] for i in idx]
        s, a, r, s2, d = (torch.as_tensor(np.asarray(x), dtype=torch.float32)
                          for x in zip(*batch))
        with torch.no_grad():
            q_next = self.critic_target(torch.cat([s2, self.actor_target(s2)], 1))[:, 0]
            y = r + self.discount * (1 - d) * q_next
        q = self.critic(torch.cat([s, a], 1))[:, 0]
        critic_loss = torch.nn.functional.mse_loss(q, y)
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()
        actor_loss = -self.critic(torch.cat([s, self.actor(s)], 1)).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        for net, target in ((self.actor, self.actor_target), (self.critic, self.critic_target)):
            for p, tp in zip(net.parameters(), target.parameters()):
                tp.data.mul_(1 - self.tau).add_(self.tau * p.data)
