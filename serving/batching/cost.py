"""Online estimate of a model call's cost: ``seconds ≈ per_row · rows + fixed``.

Fitted by exponentially-forgetting least squares over the observed batches (the idea of
BentoML's dispatcher), so it follows the machine's current speed. The batcher uses the
fixed cost to decide whether waiting for another request is worth it: merging a request
saves one ``fixed``; waiting costs the requests already queued their wait.
``SizeLadder`` measures what the line cannot show, the batch size with the most rows/s.
"""
from __future__ import annotations

from bisect import bisect_right


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


class SizeLadder:
    """Rows/s measured on a ladder of batch sizes, and the size to cap merged calls at.

    A linear cost cannot show that a model gets slower per row in big batches, yet a
    compute-bound one does (MobileNetV2 on one core: about a quarter fewer rows/s at 64
    images a call than at 4, as activations spill out of cache). So the batcher caps merged
    calls at the rung with the best measured rows/s, but only on evidence: while no bigger
    rung was measured slower, there is no cap (the behaviour of a fixed ``max_batch_size``,
    right for models whose calls cost about the same at any size). It probes the best
    rung's neighbours with single calls whenever their measurement is thin, so it walks
    down while smaller calls are faster, and back up when the machine changes. A probe the
    traffic cannot make (2-row requests never form a 1-row call) is given up after
    ``PROBE_TRIES`` calls that landed elsewhere. Each rung's first call is not counted (it
    may allocate buffers). Measurements fade by ``decay`` per observed call.
    """

    PROBE_TRIES = 3

    def __init__(self, rungs: tuple[int, ...], decay: float = 0.98, enough: float = 2.5) -> None:
        if not rungs or list(rungs) != sorted(set(rungs)) or rungs[0] < 1:
            raise ValueError("rungs must be positive and strictly increasing")
        if not 0.0 < decay < 1.0:
            raise ValueError("decay must be in (0, 1)")
        self.rungs = rungs
        self._decay = decay
        self._enough = enough
        self._rows = [0.0] * len(rungs)
        self._seconds = [0.0] * len(rungs)
        self._weight = [0.0] * len(rungs)
        self._seen = [False] * len(rungs)
        self._tries = [0] * len(rungs)
        """Probes of each rung since it was last observed."""

    @classmethod
    def for_batches(cls, max_batch_size: int, allowed: tuple[int, ...] = ()) -> SizeLadder:
        """The allowed batch sizes if set (calls are padded to them), else powers of two."""
        if allowed:
            return cls(allowed)
        powers = tuple(1 << i for i in range(max_batch_size.bit_length()) if 1 << i < max_batch_size)
        return cls((*powers, max_batch_size))

    def observe(self, rows: int, seconds: float) -> None:
        """One call of ``rows`` rows took ``seconds``; it counts for the highest rung <= rows."""
        rung = self._rung_of(rows)
        self._tries[rung] = 0
        if not self._seen[rung]:
            self._seen[rung] = True
            return
        d = self._decay
        for i in range(len(self.rungs)):
            self._rows[i] *= d
            self._seconds[i] *= d
            self._weight[i] *= d
        self._rows[rung] += rows
        self._seconds[rung] += seconds
        self._weight[rung] += 1.0

    def rows_per_second(self, size: int) -> float | None:
        """The measured rows/s of ``size``'s rung, or None while it is thinly measured."""
        rung = self._rung_of(size)
        if self._weight[rung] < self._enough or self._seconds[rung] <= 0.0:
            return None
        return self._rows[rung] / self._seconds[rung]

    def cap(self) -> int:
        """The most rows to merge into the next call: a thinly measured neighbour of the best
        measured rung to probe (the lower one first), else the best rung if a bigger one
        was measured slower, else no cap (the top rung). Asked once per call."""
        rates = [self.rows_per_second(size) for size in self.rungs]
        measured = [i for i, rate in enumerate(rates) if rate is not None]
        if not measured:
            return self.rungs[-1]
        best = max(measured, key=lambda i: rates[i])
        for probe in (best - 1, best + 1):
            if 0 <= probe < len(self.rungs) and rates[probe] is None and self._tries[probe] < self.PROBE_TRIES:
                self._tries[probe] += 1
                return self.rungs[probe]
        return self.rungs[best] if best < max(measured) else self.rungs[-1]

    def _rung_of(self, rows: int) -> int:
        return max(0, bisect_right(self.rungs, rows) - 1)
