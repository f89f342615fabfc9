"""Per-layer densities for a target sparsity: Erdős–Rényi-Kernel (ERK) and uniform, and the
exact number of weights each layer keeps.

ERK (Evci et al., RigL; DiSparse's ``googleAI_ERK``): layer ``l`` with weight shape ``s_l`` and
``n_l`` weights gets density ``eps * (sum(s_l) / prod(s_l)) ** power_scale``, with ``eps`` solved
so that the kept weights are ``density * N`` over all layers. Layers named ``dense`` keep every
weight and count in the budget; when a solved density exceeds 1, the layer(s) with the largest
raw probability become dense too and ``eps`` is solved again, until every density is <= 1.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

from lib.pruning.sparsity import check_sparsity


def check_density(sparsity: float) -> float:
    """``1 - sparsity / 100`` for a sparsity percentage in [0, 100), else a one-line ValueError."""
    return 1.0 - check_sparsity(sparsity) / 100.0


def erk_densities(shapes: Mapping[str, Sequence[int]], density: float, *,
                  power_scale: float = 1.0, dense: Iterable[str] = ()) -> dict[str, float]:
    """``{layer: density}`` in (0, 1] whose weight-weighted mean is ``density``.

    ``dense`` layers get 1 and are paid for by the others. A one-line ValueError names the
    dense layers when they alone exceed the budget (the target cannot be reached).
    """
    if not shapes:
        raise ValueError("ERK needs at least one layer")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"ERK density must be in (0, 1], got {density}")
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: (sum(s) / math.prod(s)) ** power_scale for n, s in shapes.items()}
    dense = set(dense)
    unknown = sorted(dense - set(shapes))
    if unknown:
        raise ValueError(f"ERK: dense layer(s) {unknown} are not among the layers")
    total = sum(sizes.values())
    while True:
        sparse = [n for n in shapes if n not in dense]
        budget = density * total - sum(sizes[n] for n in dense)
        if not sparse:
            if budget < -0.5:
                break
            return {n: 1.0 for n in shapes}
        if budget <= 0:
            break
        eps = budget / sum(raw[n] * sizes[n] for n in sparse)
        top = max(raw[n] for n in sparse)
        if eps * top <= 1.0:
            return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}
        dense |= {n for n in sparse if raw[n] == top}
    held = 100.0 * sum(sizes[n] for n in dense) / total
    raise ValueError(f"cannot reach {100 * (1 - density):g}% sparsity with ERK: the dense "
                     f"layer(s) {sorted(dense)[:4]}{'...' if len(dense) > 4 else ''} alone hold "
                     f"{held:.2f}% of the weights; ask for a sparsity below {100 - held:.2f}%")


def uniform_densities(shapes: Mapping[str, Sequence[int]], density: float, *,
                      dense: Iterable[str] = ()) -> dict[str, float]:
    """The same density in every layer but the ``dense`` ones (paid for by the others)."""
    shapes = dict(shapes)
    dense = set(dense)
    ones = {n: 1.0 for n in dense}
    rest = {n: s for n, s in shapes.items() if n not in dense}
    if not rest:
        return {n: 1.0 for n in shapes}
    total = sum(math.prod(s) for s in shapes.values())
    budget = density * total - sum(math.prod(shapes[n]) for n in dense)
    share = budget / sum(math.prod(s) for s in rest.values())
    if not 0 < share <= 1:
        raise ValueError(f"cannot reach {100 * (1 - density):g}% sparsity uniformly with dense "
                         f"layer(s) {sorted(dense)}")
    return {n: ones.get(n, share) for n in shapes}


def keep_counts(shapes: Mapping[str, Sequence[int]], densities: Mapping[str, float],
                density: float) -> dict[str, int]:
    """Weights each layer keeps: ``floor(d_l n_l)``, the remainder up to ``round(density N)``
    handed out by largest fractional part (ties: layer order), every layer at least 1 and at
    most ``n_l``. So the total is exact unless some layer had to be raised to 1."""
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    exact = {n: densities[n] * sizes[n] for n in shapes}
    counts = {n: min(sizes[n], max(1, math.floor(exact[n] + 1e-9))) for n in shapes}
    remainder = round(density * sum(sizes.values())) - sum(counts.values())
    order = sorted((n for n in shapes if counts[n] < sizes[n]),
                   key=lambda n: -(exact[n] - math.floor(exact[n] + 1e-9)))
    for n in order[:max(0, remainder)]:
        counts[n] += 1
    return counts
