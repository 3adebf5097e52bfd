"""An LSTM controller trained with REINFORCE, as an Optuna sampler (NAS style, Zoph & Le).

The controller walks the parameters of the space in define-by-run order; each step
reads the layer's normalised AMC features and the previous choice, and a softmax head
per action kind (sparsity, bits, later keep, granularity...) picks one of that kind's
choices: its categorical choices, or a few points from identity to most compressed for
a numeric range. So per layer it emits the method (which actions act, and how hard) and,
where the space has one, the granularity. One trial is one sampled sequence; in
`after_trial` the sequence's log-probability is pushed up by the reward minus a
moving-average baseline (normalised by a running spread), with an entropy bonus.
Finished trials it did not propose (seeds, other workers) are learned from as well.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial

from onnxamc.search.agents.ddpg import normalised_features
from onnxamc.search.agents.episodic import EpisodeSampler
from onnxamc.search.agents.nets import one_thread
from onnxamc.search.space import Param, SearchSpace

MAX_BINS = 10  # points of a numeric range the controller chooses among


def choices_of(param: Param) -> list[Any]:
    d = param.distribution
    if isinstance(d, CategoricalDistribution):
        return list(d.choices)
    if d.step and round((d.high - d.low) / d.step) + 1 <= MAX_BINS:
        n = round((d.high - d.low) / d.step) + 1
        values = [param.value_at(k / (n - 1)) for k in range(n)]
    else:
        values = [param.value_at(k / (MAX_BINS - 1)) for k in range(MAX_BINS)]
    return list(dict.fromkeys(values))


class ControllerSampler(EpisodeSampler):
    def __init__(self, space: SearchSpace, seed: int | None = 0, hidden: int = 64,
                 lr: float = 0.05, entropy: float = 0.01, baseline_decay: float = 0.9):
        import torch
        from torch import nn

        super().__init__(space, seed)
        self.entropy, self.baseline_decay = entropy, baseline_decay
        self.params = space.params()
        self.choices = {p.name: choices_of(p) for p in self.params}
        self.kinds = list(dict.fromkeys(p.action.name for p in self.params))
        n_kind_choices = {k: len(self.choices[next(p.name for p in self.params
                                                   if p.action.name == k)]) for k in self.kinds}
        layers = sorted({p.layer for p in self.params})
        feats = normalised_features(space, layers) if layers else np.zeros((0, 1), np.float32)
        self.features = {layer: feats[i] for i, layer in enumerate(layers)}
        self.n_tokens = 1 + max(n_kind_choices.values(), default=1)
        self._rng = np.random.RandomState(seed)
        with torch.random.fork_rng():
            torch.manual_seed(0 if seed is None else seed)
            self.embed = nn.Embedding(self.n_tokens, 16)
            self.cell = nn.LSTMCell(16 + feats.shape[1] + len(self.kinds), hidden)
            self.heads = nn.ModuleDict({k: nn.Linear(hidden, n) for k, n in n_kind_choices.items()})
        modules = nn.ModuleList([self.embed, self.cell, self.heads])
        self.optimizer = torch.optim.Adam(modules.parameters(), lr=lr)
        self._torch = torch
        self._baseline: float | None = None
        self._spread = 0.0
        self.updates = 0

    # --- the controller -----------------------------------------------------------
    def _rollout(self, tokens: list[int] | None):
        """Run the controller over all parameters; sample (tokens None) or score the
        given tokens. Returns (tokens, sum of log-probabilities, sum of entropies)."""
        torch = self._torch
        h = c = torch.zeros(1, self.cell.hidden_size)
        previous = 0  # the start token
        out, logp, ent = [], torch.zeros(()), torch.zeros(())
        for step, p in enumerate(self.params):
            kind = torch.zeros(len(self.kinds))
            kind[self.kinds.index(p.action.name)] = 1
            x = torch.cat([self.embed(torch.tensor([previous]))[0],
                           torch.from_numpy(self.features[p.layer]), kind])[None]
            h, c = self.cell(x, (h, c))
            dist = torch.distributions.Categorical(logits=self.heads[p.action.name](h)[0])
            if tokens is None:  # numpy draws, so that a seed fixes the whole search
                probs = dist.probs.detach().double().numpy()
                token = int(self._rng.choice(len(probs), p=probs / probs.sum()))
            else:
                token = tokens[step]
            logp = logp + dist.log_prob(torch.tensor(token))
            ent = ent + dist.entropy()
            out.append(token)
            previous = token + 1
        return out, logp, ent

    def propose(self) -> dict[str, Any]:
        with self._torch.no_grad(), one_thread():
            tokens, _, _ = self._rollout(None)
        return {p.name: self.choices[p.name][t] for p, t in zip(self.params, tokens)}

    def _tokens_of(self, params: dict) -> list[int] | None:
        tokens = []
        for p in self.params:
            if p.name not in params:
                return None
            options = self.choices[p.name]
            value = params[p.name]
            tokens.append(min(range(len(options)), key=lambda i: abs(
                p.compression(options[i]) - p.compression(value))))
        return tokens

    def learn(self, study: optuna.Study, trial: FrozenTrial, reward: float) -> None:
        tokens = self._tokens_of(trial.params)
        if tokens is None:
            return
        if self._baseline is None:
            self._baseline = reward
            return
        advantage = reward - self._baseline
        self._spread = self.baseline_decay * self._spread + (1 - self.baseline_decay) * abs(advantage)
        self._baseline = self.baseline_decay * self._baseline + (1 - self.baseline_decay) * reward
        scaled = advantage / max(self._spread, 1e-8)
        with one_thread():
            _, logp, ent = self._rollout(tokens)
            loss = -(scaled * logp) - self.entropy * ent
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        self.updates += 1
