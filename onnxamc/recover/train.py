"""Training recovery: fine-tuning, knowledge distillation and quantization-aware training
of a compressed float ONNX graph, through the torch bridge.

- Fine-tuning: cross-entropy on labelled training data, SGD with momentum and a cosine
  learning-rate schedule, early stop on the validation metric (best weights kept).
- Distillation (Hinton et al.): the original model is the teacher; logits with a
  temperature, plus feature distillation (MSE) on tensors whose shape the compression
  left unchanged, weighted per tensor.
- QAT: weights of the layers that will be quantized are fake-quantized per output
  channel in the forward pass (straight-through estimator), so training sees the
  rounding that post-training quantization will apply afterwards.

Pruned (zero) weights stay zero: their masks are re-applied after every step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxamc.data import Dataset
from onnxamc.recover.bridge import to_torch, write_back


@dataclass
class TrainConfig:
    epochs: float = 1.0
    steps: int | None = None  # exactly this many steps (overrides epochs): comparable runs
    time_budget: float | None = None  # seconds; stops early when spent
    batch_size: int = 64
    lr: float = 0.002  # BatchNorm is folded into the convs: larger rates diverge
    momentum: float = 0.9
    weight_decay: float = 5e-4
    patience: int = 3  # validations without improvement before stopping
    validations_per_epoch: int = 1
    distill_weight: float = 0.0  # 0: plain fine-tuning; 1: distillation loss only
    temperature: float = 4.0
    feature_weights: dict[str, float] = field(default_factory=dict)  # ONNX tensor -> weight
    qat_bits: dict[str, int] = field(default_factory=dict)  # weight initializer -> bits
    threads: int | None = None
    seed: int = 0
    progress: bool = True


@dataclass
class TrainReport:
    steps: int
    seconds: float
    best_val_accuracy: float | None
    history: list[dict]
    stopped_because: str


def train(student: onnx.ModelProto, data: Dataset, config: TrainConfig,
          val: Dataset | None = None,
          teacher: onnx.ModelProto | None = None) -> tuple[onnx.ModelProto, TrainReport]:
    """Train the student's float weights; returns the same graph with new weights.
    torch runs on `config.threads` threads meanwhile; the caller's setting is restored."""
    import torch

    if data.labels is None and (teacher is None or config.distill_weight < 1.0):
        raise ValueError("training data has no labels: use distillation only "
                         "(distill_weight=1 with a teacher) or give labelled data")
    before = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train(student, data, config, val, teacher)
    finally:
        torch.set_num_threads(before)


def _train(student, data, config, val, teacher) -> tuple[onnx.ModelProto, TrainReport]:
    import torch

    torch.manual_seed(config.seed)
    model_outputs = {o.name for o in student.graph.output}  # logits are distilled already
    features = [t for t, w in config.feature_weights.items() if w > 0 and t not in model_outputs]
    bridge = to_torch(student, features)
    teacher_module = None
    if teacher is not None and (config.distill_weight > 0 or features):
        teacher_module = to_torch(teacher, features).module.eval()
        for p in teacher_module.parameters():
            p.requires_grad_(False)
    _add_fake_quant(bridge.module, bridge.parameters, config.qat_bits)
    loop = _Loop(bridge.module, data, config, val, teacher_module, features)
    stopped = loop.run()
    if loop.best_state is not None:
        bridge.module.load_state_dict(loop.best_state)
    _remove_fake_quant(bridge.module)
    trained = write_back(student, bridge.onnx_weights())
    return trained, TrainReport(loop.step, time.time() - loop.start, loop.best_acc,
                                loop.history, stopped)


class _Loop:
    """SGD with a cosine schedule over `total` steps, sparsity masks kept, validation
    with early stopping (the best weights are kept), and a time budget."""

    def __init__(self, module, data, config, val, teacher, features):
        import torch

        self.module, self.data, self.config, self.val = module, data, config, val
        self.teacher, self.features = teacher, features
        self.masks = _sparsity_masks(module)
        self.per_epoch = max(1, math.ceil(len(data) / config.batch_size))
        self.total = max(1, config.steps or int(config.epochs * self.per_epoch))
        params = [p for p in module.parameters() if p.requires_grad]
        self.opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                   weight_decay=config.weight_decay)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, self.total)
        self.validate_every = max(1, self.per_epoch // max(1, config.validations_per_epoch))
        self.best_acc, self.best_state, self.stale, self.history = None, None, 0, []
        self.step, self.start = 0, time.time()

    def run(self) -> str:
        """Train until the steps are done or a stopping rule fires; says which."""
        rng = np.random.default_rng(self.config.seed)
        bar = _progress(self.total, self.config.progress)
        order = rng.permutation(len(self.data))
        stopped = "steps done"
        while self.step < self.total:
            if self.step % self.per_epoch == 0:
                order = rng.permutation(len(self.data))
            lo = (self.step % self.per_epoch) * self.config.batch_size
            loss = self._update(order[lo: lo + self.config.batch_size])
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"loss {loss:.3f}")
            stopped = self._stop_reason(loss) or stopped
            if stopped != "steps done":
                break
        if bar is not None:
            bar.close()
        return stopped

    def _update(self, idx) -> float:
        import torch
        import torch.nn.functional as F

        inputs = [torch.from_numpy(self.data.inputs[k][idx]) for k in self.data.inputs]
        self.module.train()
        outputs = _as_tuple(self.module(*inputs))
        loss = _loss(outputs, idx, self.data, self.teacher, inputs, self.config, self.features,
                     F, torch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        with torch.no_grad():
            for p, mask in self.masks:
                p.mul_(mask)
        self.step += 1
        return float(loss.item())

    def _stop_reason(self, loss: float) -> str | None:
        config = self.config
        if self.val is not None and (self.step % self.validate_every == 0
                                     or self.step == self.total):
            acc = _accuracy(self.module, self.val, list(self.data.inputs))
            self.history.append({"step": self.step, "val_accuracy": acc, "loss": loss})
            if self.best_acc is None or acc > self.best_acc:
                self.best_acc, self.stale = acc, 0
                self.best_state = {k: v.detach().clone()
                                   for k, v in self.module.state_dict().items()}
            else:
                self.stale += 1
                if self.stale >= config.patience:
                    return f"no validation improvement in {config.patience} checks"
        if config.time_budget is not None and time.time() - self.start > config.time_budget:
            return "time budget spent"
        return None


def _loss(outputs, idx, data, teacher, inputs, config, features, F, torch):
    logits = outputs[0]
    loss = logits.new_zeros(())
    if data.labels is not None and config.distill_weight < 1.0:
        labels = torch.from_numpy(data.labels[idx])
        loss = loss + (1.0 - config.distill_weight) * F.cross_entropy(logits, labels)
    if teacher is not None:
        with torch.no_grad():
            t_out = _as_tuple(teacher(*inputs))
        if config.distill_weight > 0:
            T = config.temperature
            kd = F.kl_div(F.log_softmax(logits / T, dim=1), F.softmax(t_out[0] / T, dim=1),
                          reduction="batchmean") * T * T
            loss = loss + config.distill_weight * kd
        for i, name in enumerate(features, start=1):
            if outputs[i].shape == t_out[i].shape:
                loss = loss + config.feature_weights[name] * F.mse_loss(outputs[i], t_out[i])
    return loss


def _accuracy(module, val: Dataset, input_names: list[str]) -> float:
    import torch

    module.eval()
    correct = 0
    with torch.no_grad():
        for lo in range(0, len(val), 512):
            inputs = [torch.from_numpy(val.inputs[k][lo: lo + 512]) for k in input_names]
            logits = _as_tuple(module(*inputs))[0]
            correct += int((logits.argmax(1).numpy() == val.labels[lo: lo + 512]).sum())
    return correct / len(val)


def _as_tuple(out):
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _sparsity_masks(module):
    """(parameter, mask) for weights that hold exact zeros (pruned by the policy)."""
    masks = []
    for p in module.parameters():
        if p.dim() >= 2:
            mask = (p.detach() != 0).to(p.dtype)
            if mask.numel() - mask.sum() > 0:
                masks.append((p, mask))
    return masks


class _FakeQuant:
    """Per-output-channel symmetric fake quantization with a straight-through gradient."""

    def __init__(self, bits: int):
        self.qmax = 2 ** (bits - 1) - 1

    def __call__(self, w):
        import torch

        dims = tuple(range(1, w.dim()))
        scale = (w.detach().abs().amax(dim=dims) / self.qmax).clamp_min(1e-12)
        zero = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -self.qmax, self.qmax)


def _add_fake_quant(module, parameters: dict[str, str], qat_bits: dict[str, int]) -> None:
    import torch
    from torch.nn.utils import parametrize

    class Param(torch.nn.Module):
        def __init__(self, bits):
            super().__init__()
            self.fq = _FakeQuant(bits)

        def forward(self, w):
            return self.fq(w)

    by_onnx = {onnx_name: name for name, onnx_name in parameters.items()}
    for onnx_name, bits in qat_bits.items():
        name = by_onnx.get(onnx_name)
        if name is not None and bits < 32 and getattr(module, name).dim() >= 2:
            parametrize.register_parametrization(module, name, Param(bits))


def _remove_fake_quant(module) -> None:
    from torch.nn.utils import parametrize

    for name in list(getattr(module, "parametrizations", {}).keys()):
        parametrize.remove_parametrizations(module, name, leave_parametrized=False)


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="train", unit="step", dynamic_ncols=True)
