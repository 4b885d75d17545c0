"""The one order in which lossc adds a list of partial results: a balanced tree of
adjacent pairs. Level by level, items 2i and 2i + 1 are combined (combine(left,
right)) and an odd last item is carried to the next level as it is.

The code generator adds a vector's lanes and unrolled partial sums this way (short
dependency chains, and an order fixed at compile time, so lanes and the scalar loop
agree); chunked data add the chunks' objectives and gradients this way (a sum that
does not depend on where or when each chunk was computed).
"""
from __future__ import annotations

from typing import Callable, Sequence


def pairwise(items: Sequence, combine: Callable):
    level = list(items)
    if not level:
        raise ValueError("a pairwise sum of nothing")
    while len(level) > 1:
        pairs = [combine(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            pairs.append(level[-1])
        level = pairs
    return level[0]
