"""When two groups of measurements differ beyond the seed spread: the one rule every verdict of reslab uses.

A verdict may say that one side "rises", "falls", is "worse" or "responds less" only when the measurements
separate: with at least two seeds on each side, **every seed of one side is beyond every seed of the other,
and the gap of the means exceeds two standard errors**, ``sqrt(s_a²/n_a + s_b²/n_b)``. With one seed on
either side nothing is tested against noise, and the verdict says so instead of making the claim; otherwise
the two sides overlap and the verdict says "no clear difference". Plain Python, no torch: the rule is
applied to numbers read back from files as well.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

Separation = Literal["above", "below", "overlap", "one seed"]

RULE = "every seed beyond every seed of the other side and the gap of the means above 2 standard errors"
ONE_SEED = "one seed: not tested against noise"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var)


def separate(a: Sequence[float], b: Sequence[float]) -> Separation:
    """Where ``a`` lies against ``b`` under the rule: ``"above"``, ``"below"``, ``"overlap"`` or
    ``"one seed"`` (fewer than two values on either side: not tested).

    Non-finite values (a diverged run read as NaN) must be replaced by the caller first.
    """
    if len(a) < 2 or len(b) < 2:
        return "one seed"
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    se = math.sqrt(sa**2 / len(a) + sb**2 / len(b))
    if min(a) > max(b) and ma - mb > 2 * se:
        return "above"
    if max(a) < min(b) and mb - ma > 2 * se:
        return "below"
    return "overlap"
