"""Mean and 95% confidence interval over seeds (Student's t; a single seed has no interval)."""

from __future__ import annotations

import math
from typing import Iterable

# two-sided 95% quantiles t_{0.975, df} for df = 1..30; beyond that the normal 1.96 is within 2%
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t975(df: int) -> float:
    if df < 1:
        raise ValueError("a t quantile needs at least one degree of freedom")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def mean_ci(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    """(mean, half-width of the 95% interval, n) of the non-missing values.

    The half-width is None for fewer than two values; the mean is None for none.
    """
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return None, None, 0
    mean = sum(xs) / n
    if n < 2:
        return mean, None, n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return mean, t975(n - 1) * sd / math.sqrt(n), n


# From here on a value is written in powers of ten: the perplexity of a collapsed model runs to 1e38.
LARGE = 1e6


def fmt_ci(mean: float | None, half: float | None, digits: int = 1) -> str:
    """'93.8 ± 2.1', '93.8' (one seed), '1.15e+38' (a mean from LARGE on) or '–' (missing)."""
    if mean is None:
        return "–"
    spec = f".{digits + 1}e" if abs(mean) >= LARGE else f".{digits}f"
    return f"{mean:{spec}}" if half is None else f"{mean:{spec}} ± {half:{spec}}"
