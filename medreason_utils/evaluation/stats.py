"""Statistics for evaluation: Wilson intervals, McNemar's paired test, spread over samples.

Thin wrappers over statsmodels, so every accuracy comes with a 95% interval and "run B beats
run A on the same items" is a tested claim rather than a difference of two percentages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

__all__ = ["wilson_interval", "McNemarResult", "mcnemar_paired", "mean_and_spread"]


def wilson_interval(correct: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (Wilson 1927) for a proportion ``correct / n``; bounds in [0, 1].

    Uses ``statsmodels.stats.proportion.proportion_confint(method="wilson")``. Preferred to the
    normal ("Wald") interval because it stays inside [0, 1] and keeps its coverage for small
    ``n`` and accuracies near 0 or 1 (Brown, Cai & DasGupta 2001).

    Raises ``ValueError`` for ``n < 1``, ``correct`` outside [0, n] or ``confidence`` outside (0, 1).
    """
    if n < 1:
        raise ValueError(f"a Wilson interval needs n >= 1, got n={n}")
    if not 0 <= correct <= n:
        raise ValueError(f"correct must be in [0, {n}], got {correct}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = proportion_confint(correct, n, alpha=1 - confidence, method="wilson")
    return max(0.0, round(float(lo), 12)), min(1.0, round(float(hi), 12))


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test of two runs on the same items.

    ``both``/``neither``: items both/neither got right; ``only_a``/``only_b``: the discordant
    pairs; ``difference``: accuracy of b minus accuracy of a (in [-1, 1]); ``p_value``: two-sided;
    ``exact``: the binomial (exact) test was used rather than the chi-square approximation.
    """

    n: int
    both: int
    only_a: int
    only_b: int
    neither: int
    difference: float
    statistic: float
    p_value: float
    exact: bool

    def significant(self, alpha: float = 0.05) -> bool:
        """True when ``p_value < alpha``."""
        return self.p_value < alpha


def mcnemar_paired(correct_a: Sequence[bool], correct_b: Sequence[bool], *, exact: bool | None = None) -> McNemarResult:
    """McNemar's test (McNemar 1947) on per-item correctness of runs a and b over the same items.

    Uses ``statsmodels.stats.contingency_tables.mcnemar``. ``exact=None`` picks the exact
    binomial test when there are fewer than 25 discordant pairs (the usual rule, e.g. statsmodels'
    documentation), else the chi-square test with continuity correction.

    Raises ``ValueError`` when the sequences differ in length or are empty.
    """
    if len(correct_a) != len(correct_b):
        raise ValueError(f"paired runs must cover the same items: {len(correct_a)} vs {len(correct_b)}")
    if not correct_a:
        raise ValueError("McNemar's test of zero items is undefined")
    from statsmodels.stats.contingency_tables import mcnemar

    a = [bool(x) for x in correct_a]
    b = [bool(x) for x in correct_b]
    both = sum(x and y for x, y in zip(a, b))
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    neither = len(a) - both - only_a - only_b
    use_exact = (only_a + only_b) < 25 if exact is None else exact
    if only_a + only_b == 0:
        stat, p = 0.0, 1.0
    else:
        res = mcnemar([[both, only_a], [only_b, neither]], exact=use_exact, correction=True)
        stat, p = float(res.statistic), float(res.pvalue)
    return McNemarResult(len(a), both, only_a, only_b, neither, (only_b - only_a) / len(a), stat, min(1.0, p), use_exact)


def mean_and_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for one value) of per-sample accuracies."""
    if not values:
        raise ValueError("mean of zero values is undefined")
    m = sum(values) / len(values)
    if len(values) == 1:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
