"""Fitting L(N) = a · N^(-alpha) + c without scipy.

For a fixed offset c the model is linear in log space: log(L - c) = log a - alpha · log N, so ordinary
least squares gives a and alpha in closed form. The offset is found by minimizing the squared error in
L itself (not in log space, which would overweight the points closest to c) over c in [0, min L): a
coarse scan, then golden-section refinement around the best scan point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scratchlm.errors import DataError

SCAN_POINTS = 400
GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class PowerLawFit:
    a: float
    alpha: float
    c: float  # the irreducible loss the fit extrapolates to
    r2: float  # coefficient of determination of L (not log L)
    rmse: float

    def predict(self, n: float) -> float:
        return self.a * n ** (-self.alpha) + self.c


def fit_power_law(n: Sequence[float], loss: Sequence[float], *, fit_offset: bool = True) -> PowerLawFit:
    """Least-squares L = a·N^-alpha + c (c >= 0; c = 0 when fit_offset is False). Needs >= 3 points."""
    if len(n) != len(loss) or len(n) < 3:
        raise DataError(f"a power-law fit needs at least 3 (N, loss) pairs, got {len(n)} sizes and {len(loss)} losses.")
    if min(n) <= 0 or min(loss) <= 0 or not all(map(math.isfinite, [*n, *loss])):
        raise DataError("a power-law fit needs positive, finite parameter counts and losses.")
    if len(set(n)) < 2:
        raise DataError("a power-law fit needs at least two different model sizes.")
    if not fit_offset:
        return _fit_at(n, loss, 0.0)
    top = min(loss) * (1.0 - 1e-9)
    grid = [top * i / SCAN_POINTS for i in range(SCAN_POINTS)]
    errors = [_fit_at(n, loss, c).rmse for c in grid]
    i = min(range(len(grid)), key=errors.__getitem__)
    lo, hi = grid[max(i - 1, 0)], grid[i + 1] if i + 1 < len(grid) else top
    return _fit_at(n, loss, _golden_min(lambda c: _fit_at(n, loss, c).rmse, lo, hi))


def _fit_at(n: Sequence[float], loss: Sequence[float], c: float) -> PowerLawFit:
    xs = [math.log(v) for v in n]
    ys = [math.log(v - c) for v in loss]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
    a = math.exp(mean_y - slope * mean_x)
    fit = PowerLawFit(a=a, alpha=-slope, c=c, r2=0.0, rmse=0.0)
    residuals = [v - fit.predict(m) for m, v in zip(n, loss, strict=True)]
    sse = sum(r * r for r in residuals)
    mean_loss = sum(loss) / len(loss)
    sst = sum((v - mean_loss) ** 2 for v in loss)
    r2 = 1.0 - sse / sst if sst > 0 else 1.0
    return PowerLawFit(a=a, alpha=-slope, c=c, r2=r2, rmse=math.sqrt(sse / len(loss)))


def _golden_min(f: Callable[[float], float], lo: float, hi: float, iterations: int = 80) -> float:
    x1, x2 = hi - GOLDEN * (hi - lo), lo + GOLDEN * (hi - lo)
    f1, f2 = f(x1), f(x2)
    for _ in range(iterations):
        if f1 < f2:
            hi, x2, f2 = x2, x1, f1
            x1 = hi - GOLDEN * (hi - lo)
            f1 = f(x1)
        else:
            lo, x1, f1 = x1, x2, f2
            x2 = lo + GOLDEN * (hi - lo)
            f2 = f(x2)
    return (lo + hi) / 2.0
