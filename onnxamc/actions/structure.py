"""The structural actions: remove a residual block, prune channels, factorize a layer.

They change the graph's shape, so they run first (in this order), and they keep the
names of the layers they touch so the rest of the policy still finds them.
"""

from __future__ import annotations

from onnxamc.actions.base import Action, Field, FloatRange, SearchSpec, in_range
from onnxamc.errors import PolicyError

LOW_RANK_OPS = ("Conv", "Gemm", "MatMul")


class Remove(Action):
    name = "remove"
    summary = "layer removal: replace the residual block a layer belongs to by the identity"
    fields = (Field("remove", bool, False, "true / false",
                    "replace the residual block this layer opens (x + f(x)) by the identity"),)
    search = SearchSpec("remove", (False, True), identity=False, seed=False)

    def fits(self, layer, context) -> bool:
        return "remove" in context.structural_fit.get(layer.name, ())

    def unfit_reason(self, layer, context) -> str:
        return "remove=true but it is not inside a residual block (x + f(x)) that can be " \
               "replaced by the identity"

    def searched_on(self, layer, context) -> bool:
        return any(block.name == layer.name for block in context.blocks)  # one per block

    def apply(self, context, layers, job):
        from onnxamc.passes.remove_blocks import remove_blocks

        return remove_blocks(context.model, list(layers), context.blocks)


class Prune(Action):
    name = "prune"
    summary = ("structured channel pruning of a whole channel group, with least-squares "
               "reconstruction")
    fields = (Field("keep", float, 1.0, "(0, 1]",
                    "structured pruning: share of output channels kept, for the layer's whole "
                    "channel group (layers coupled by residual adds, concats, depthwise convs "
                    "lose the same channels); counts rounded to a multiple of 8 "
                    "(`--channel-multiple`)", in_range(0, 1, low_open=True), "a number in (0, 1]"),)
    search = SearchSpec("keep", FloatRange(0.25, 1.0, 0.05), identity=1.0, seed=0.7,
                        cost="keep")

    def fits(self, layer, context) -> bool:
        return "keep" in context.structural_fit.get(layer.name, ())

    def searched_on(self, layer, context) -> bool:
        return layer.name in context.group_leaders()  # one number per channel group

    def unfit_reason(self, layer, context) -> str:
        group = context.channels.group_of(layer.name)
        if group is None:
            return "keep<1 but its output channels are not a channel group (they pass on " \
                   "another axis)"
        if group.blocked_by is not None:
            return f"keep<1 but its channels cannot be pruned: blocked by {group.blocked_by}"
        return "keep<1 but its group has a single channel"

    def apply(self, context, layers, job):
        from onnxamc.passes.prune_channels import prune_channels

        if job.reconstruct and job.calibration is None:
            raise PolicyError("least-squares reconstruction needs calibration data "
                              "(--calibration)")
        reference = job.cache.rows_for(context.model, job.calibration) \
            if job.cache is not None and job.reconstruct else None
        return prune_channels(context.model, {n: a.keep for n, a in layers.items()},
                              job.channel_multiple, job.importance,
                              job.calibration if job.reconstruct else None,
                              analysis=context.channels, reference=reference)


class LowRank(Action):
    name = "low-rank"
    summary = "low-rank factorization (truncated SVD) into two thinner layers"
    fields = (Field("rank", float, 1.0, "(0, 1]",
                    "low-rank factorization (truncated SVD) of Gemm / MatMul / Conv weights: "
                    "kept share of the full rank", in_range(0, 1, low_open=True),
                    "a number in (0, 1]"),)

    def check(self, action, op_type):
        if op_type is not None and action.rank < 1.0 and op_type not in LOW_RANK_OPS:
            return (f"rank={action.rank} is not supported for {op_type} layers "
                    f"(low-rank: {', '.join(LOW_RANK_OPS)})")
        return None

    def fits(self, layer, context) -> bool:
        return "rank" in context.structural_fit.get(layer.name, ())

    def unfit_reason(self, layer, context) -> str:
        return f"rank<1 needs an ungrouped Conv, Gemm or MatMul (this is a {layer.op_type} " \
               f"with group={layer.groups})"

    def apply(self, context, layers, job):
        from onnxamc.passes.low_rank import low_rank

        return low_rank(context.model, {n: a.rank for n, a in layers.items()})
