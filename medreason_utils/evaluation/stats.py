"""Statistics for evaluation: Wilson intervals, McNemar's paired test, spread over samples.

Thin wrappers over statsmodels, so every accuracy comes with a 95% interval and "run B beats
run A on the same items" is a tested claim rather than a difference of two percentages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

__all__ = ["wilson_interval", "McNemarResult", "mcnemar_paired", "mean_and_spread", "PairedTestResult", "paired_tests"]


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


@dataclass(frozen=True)
class PairedTestResult:
    """Two paired tests of ``after - before`` over the same units (prompts): ``n`` finite pairs, the
    mean difference, the Wilcoxon signed-rank two-sided p-value (``p_value``) and the paired t-test's
    (``t_p_value``); a p-value is 1.0 when every difference is 0 and NaN for fewer than 2 pairs (the
    t-test's also when all differences are equal)."""

    n: int
    mean_difference: float
    p_value: float
    t_p_value: float


def paired_tests(before: Sequence[float | None], after: Sequence[float | None]) -> PairedTestResult:
    """Wilcoxon's signed-rank test (two-sided, zero differences dropped: ``zero_method="wilcox"``) and
    Student's paired t-test on ``after[i] - before[i]``, pairs with a ``None``/NaN side left out.

    Wilcoxon, F. (1945), *Individual comparisons by ranking methods*, Biometrics Bulletin 1(6):80-83
    (``scipy.stats.wilcoxon``, exact distribution for small n without ties); the paired t-test is
    ``scipy.stats.ttest_rel``. Wilcoxon is the one reported as ``p_value``: per-prompt reward means
    are bounded and often skewed, which the t-test's normality assumption does not fit.

    Raises ``ValueError`` when the sequences differ in length.
    """
    from scipy import stats

    if len(before) != len(after):
        raise ValueError(f"paired tests need as many values before as after, got {len(before)} and {len(after)}")
    pairs = [(float(b), float(a)) for b, a in zip(before, after)
             if b is not None and a is not None and not math.isnan(float(b)) and not math.isnan(float(a))]
    n = len(pairs)
    diffs = [a - b for b, a in pairs]
    mean_diff = sum(diffs) / n if n else float("nan")
    if n < 2:
        return PairedTestResult(n, mean_diff, float("nan"), float("nan"))
    if all(d == 0 for d in diffs):
        return PairedTestResult(n, mean_diff, 1.0, 1.0)
    p = float(stats.wilcoxon(diffs, zero_method="wilcox", alternative="two-sided").pvalue)
    if len(set(diffs)) == 1:  # a constant non-zero difference: no variance, the t statistic is undefined
        t_p = float("nan")
    else:
        t_p = float(stats.ttest_rel([a for _, a in pairs], [b for b, _ in pairs]).pvalue)
    return PairedTestResult(n, mean_diff, p, t_p)
