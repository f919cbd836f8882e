"""The online cost model (serving/batching/cost.py)."""
from __future__ import annotations

import pytest

from serving.batching.cost import CostModel


def test_recovers_a_linear_cost():
    model = CostModel()
    for n in (1, 8, 32, 64, 128) * 5:
        model.observe(n, 0.0004 + 0.00002 * n)
    per_row, fixed = model.coefficients()
    assert per_row == pytest.approx(0.00002, rel=1e-6)
    assert fixed == pytest.approx(0.0004, rel=1e-6)
    assert model.estimate(100) == pytest.approx(0.0024, rel=1e-6)


def test_one_batch_size_only_is_all_fixed_cost():
    model = CostModel()
    for _ in range(5):
        model.observe(16, 0.002)
    assert model.coefficients() == (0.0, pytest.approx(0.002))


def test_forgets_old_speed():
    model = CostModel(decay=0.5)
    for n in (1, 64) * 20:
        model.observe(n, 0.010)
    for n in (1, 64) * 20:
        model.observe(n, 0.001)
    assert model.estimate(1) == pytest.approx(0.001, rel=0.01)


def test_unknown_until_a_few_observations():
    model = CostModel()
    assert not model.known and model.coefficients() == (0.0, 0.0)
    for n in (1, 2, 3):
        model.observe(n, 0.001)
    assert model.known


def test_never_negative():
    model = CostModel()
    for n, seconds in ((1, 0.01), (100, 0.001), (50, 0.005)):
        model.observe(n, seconds)
    per_row, fixed = model.coefficients()
    assert per_row >= 0 and fixed >= 0


def test_rejects_bad_decay():
    with pytest.raises(ValueError):
        CostModel(decay=1.0)
