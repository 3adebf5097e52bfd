"""Weight edits that keep the graph's shape: fine-grained sparsity and weight sharing,
and the training-only distillation weight."""

from __future__ import annotations

from onnxamc.actions.base import Action, Field, FloatRange, SearchSpec, in_range

SHARE_BITS = (1, 8)


class Sparsity(Action):
    name = "sparsity"
    summary = "fine-grained magnitude sparsity (a smaller zipped file; dense kernels keep their speed)"
    fields = (Field("sparsity", float, 0.0, "[0, 1)",
                    "zero that fraction of the layer's weights, smallest magnitude first",
                    in_range(0, 1, high_open=True), "a number in [0, 1)"),)
    search = SearchSpec("sparsity", FloatRange(0.0, 0.9, 0.05), identity=0.0, seed=0.3,
                        cost="factor", macs_factor=lambda s: 1.0 - s)

    def apply(self, context, layers, job):
        from onnxamc.passes.sparsity import magnitude_sparsity

        return magnitude_sparsity(context.model, context.info.layers,
                                  {n: a.sparsity for n, a in layers.items()})


class Share(Action):
    name = "share"
    summary = "weight sharing: k-means codebook of 2^b values, indices stored as uint4/uint8"
    fields = (Field("share_bits", int, 0, "0, or 1-8 with `bits: 32`",
                    "weight sharing: k-means into 2^b shared values; the file stores a "
                    "codebook and uint4 (b <= 4) or uint8 indices, expanded by a Gather",
                    lambda v: v == 0 or SHARE_BITS[0] <= v <= SHARE_BITS[1],
                    "0 or an integer in [1, 8]"),)

    def check(self, action, op_type):
        if action.share_bits and action.bits != 32:
            return "share_bits keeps float weights: use it with bits=32"
        if action.share_bits and action.sparsity:
            return "share_bits and sparsity cannot be combined (clustering moves the zeros)"
        return None

    def apply(self, context, layers, job):
        from onnxamc.passes.weight_sharing import share_weights

        return share_weights(context.model, {n: a.share_bits for n, a in layers.items()})


class Distill(Action):
    name = "distill"
    summary = "per-layer feature distillation weight for training recovery (no graph change)"
    fields = (Field("distill", float, 0.0, "[0, 100]",
                    "weight of this layer's output in feature distillation during training "
                    "recovery (no graph change; `compress --distill-trials` searches it)",
                    in_range(0, 100), "a weight in [0, 100]"),)
