"""The power-law fit L(N) = a·N^-alpha + c recovers known parameters and refuses unusable input."""

from __future__ import annotations

import math
import random

import pytest

from scratchlm.analysis.power_law import fit_power_law
from scratchlm.errors import DataError

SIZES = [1e4, 3e4, 1e5, 3e5, 1e6, 3e6]


def test_exact_data_gives_back_its_parameters() -> None:
    loss = [40.0 * n**-0.3 + 1.6 for n in SIZES]
    fit = fit_power_law(SIZES, loss)
    assert fit.a == pytest.approx(40.0, rel=1e-3)
    assert fit.alpha == pytest.approx(0.3, rel=1e-4)
    assert fit.c == pytest.approx(1.6, abs=1e-4)
    assert fit.r2 == pytest.approx(1.0, abs=1e-9)


def test_noisy_data_fits_well_and_predicts_in_range() -> None:
    rng = random.Random(0)
    loss = [12.0 * n**-0.25 + 1.9 + rng.gauss(0, 0.005) for n in SIZES]
    fit = fit_power_law(SIZES, loss)
    assert fit.r2 > 0.99
    assert 1.7 < fit.c < 2.05 and 0.1 < fit.alpha < 0.5
    assert fit.predict(1e5) == pytest.approx(12.0 * 1e5**-0.25 + 1.9, abs=0.02)


def test_a_pure_power_law_without_offset() -> None:
    loss = [5.0 * n**-0.1 for n in SIZES]
    fit = fit_power_law(SIZES, loss, fit_offset=False)
    assert fit.c == 0.0 and fit.alpha == pytest.approx(0.1) and fit.a == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("n", "loss", "message"),
    [
        ([1e4, 1e5], [2.0, 1.9], "at least 3"),
        ([1e4, 1e4, 1e4], [2.0, 1.9, 1.8], "two different model sizes"),
        ([1e4, 1e5, 1e6], [2.0, math.nan, 1.8], "positive, finite"),
        ([0.0, 1e5, 1e6], [2.0, 1.9, 1.8], "positive, finite"),
    ],
)
def test_unusable_input_is_refused(n: list[float], loss: list[float], message: str) -> None:
    with pytest.raises(DataError, match=message):
        fit_power_law(n, loss)
