"""Online estimate of a model call's cost: ``seconds ≈ per_row · rows + fixed``.

Fitted by exponentially-forgetting least squares over the observed batches (the idea of
BentoML's dispatcher), so it follows the machine's current speed. The batcher uses the
fixed cost to decide whether waiting for another request is worth it: merging a request
saves one ``fixed``; waiting costs the requests already queued their wait.
"""
from __future__ import annotations


class CostModel:
    """Weighted least-squares fit of call time against batch rows, with forgetting."""

    def __init__(self, decay: float = 0.97) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError("decay must be in (0, 1)")
        self._decay = decay
        self._w = self._x = self._y = self._xx = self._xy = 0.0
        self.observations = 0

    def observe(self, rows: int, seconds: float) -> None:
        d = self._decay
        self._w = d * self._w + 1.0
        self._x = d * self._x + rows
        self._y = d * self._y + seconds
        self._xx = d * self._xx + rows * rows
        self._xy = d * self._xy + rows * seconds
        self.observations += 1

    @property
    def known(self) -> bool:
        return self.observations >= 3

    def coefficients(self) -> tuple[float, float]:
        """(per_row, fixed) seconds, both clamped at zero; (0, 0) before any observation."""
        if self._w == 0.0:
            return 0.0, 0.0
        mean_x, mean_y = self._x / self._w, self._y / self._w
        var_x = self._xx / self._w - mean_x * mean_x
        if var_x <= 1e-9 * max(1.0, mean_x * mean_x):
            # Every batch had the same size: attribute the whole cost to the fixed part.
            return 0.0, max(0.0, mean_y)
        per_row = (self._xy / self._w - mean_x * mean_y) / var_x
        per_row = max(0.0, per_row)
        fixed = max(0.0, mean_y - per_row * mean_x)
        return per_row, fixed

    def estimate(self, rows: int) -> float:
        per_row, fixed = self.coefficients()
        return per_row * rows + fixed
