"""Recurrent layers (LSTM, GRU, RNN) read the channels that reach them.

Their input features meet the weight W ([directions, gates x hidden, input]) on its last
axis, so pruned input channels take W's columns with them (silero-vad's encoder feeds
its LSTM this way). Their hidden state is their own: it is not pruned, and their
outputs carry no channels of the graph's groups.
"""

from __future__ import annotations

from onnxamc.graph.tracer import Tracer, Unsupported


def recurrent(t: Tracer, i: int, node) -> None:
    lay = t.layout(node.input[0])
    if lay is None or any(t.layout(n) is not None for n in node.input[1:]):
        raise Unsupported("channels on a side input (weights, state, lengths)")
    if lay.axis != t.rank(node.input[0]) - 1:
        raise Unsupported("channels not on the feature axis")
    t.reads(i, 2, lay.atoms, lay.atoms)


RULES = {"LSTM": recurrent, "GRU": recurrent, "RNN": recurrent}
