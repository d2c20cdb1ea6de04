"""Unpacking ``input_ids`` that carry lexicon codes (``CharEncoder`` packs a token id
and a 16-bit lexicon code into one int64), written the way exporters and TVM read it.

Every constant is a tensor of the ids' own dtype: TVM's importer makes a Python int
an int32 constant, and int64 / int32 arithmetic does not type-check there.
"""

from __future__ import annotations

from pipelines.data.encoding import LEXICON_STRIDE
from pipelines.data.lexicon_features import GROUP_BITS


def const(like, value):
    """``value`` as a 0-d tensor of ``like``'s dtype and device."""
    return like.new_full((), value)


def split_codes(input_ids, types: int):
    """(token ids, one index per lexicon type into a table of ``types << GROUP_BITS``
    rows: type g's B/M/E/S pattern at rows g*16 .. g*16+15)."""
    import torch

    stride = const(input_ids, LEXICON_STRIDE)
    codes = torch.div(input_ids, stride, rounding_mode="floor")
    tokens = input_ids - codes * stride
    groups = [
        torch.remainder(torch.div(codes, const(input_ids, 1 << (GROUP_BITS * g)), rounding_mode="floor"), const(input_ids, 1 << GROUP_BITS))
        + const(input_ids, g << GROUP_BITS)
        for g in range(types)
    ]
    return tokens, groups
