"""The online cost model (serving/batching/cost.py)."""
from __future__ import annotations

import pytest

from serving.batching.cost import CostModel, SizeLadder


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


def mobilenet_like(rows: int) -> float:
    """Per-row cost lowest at 4 rows a call, rising beyond (cache spills), as on one core."""
    per_row = {1: 9.0, 2: 8.4, 4: 8.0}.get(rows, 8.0 + 0.08 * rows)
    return rows * per_row / 1000


def settle(ladder: SizeLadder, cost, calls: int = 400) -> int:
    """Run ``calls`` full calls, each at the size the ladder advises; return its cap."""
    for _ in range(calls):
        size = ladder.cap()
        ladder.observe(size, cost(size))
    return ladder.cap()


def test_ladder_is_powers_of_two_or_the_allowed_sizes():
    assert SizeLadder.for_batches(128).rungs == (1, 2, 4, 8, 16, 32, 64, 128)
    assert SizeLadder.for_batches(100).rungs == (1, 2, 4, 8, 16, 32, 64, 100)
    assert SizeLadder.for_batches(1).rungs == (1,)
    assert SizeLadder.for_batches(8, allowed=(2, 8)).rungs == (2, 8)


def test_uncapped_until_measured_and_first_call_per_size_not_counted():
    ladder = SizeLadder.for_batches(64)
    assert ladder.cap() == 64
    ladder.observe(64, 100.0)  # a first call that allocates: ignored
    for _ in range(3):
        ladder.observe(64, 0.5)
    assert ladder.rows_per_second(64) == pytest.approx(128)
    assert ladder.rows_per_second(32) is None


def test_walks_down_to_the_fastest_size_of_a_compute_bound_model():
    assert settle(SizeLadder.for_batches(128), mobilenet_like) == 4


def test_stays_at_the_top_when_calls_cost_the_same_whatever_their_size():
    assert settle(SizeLadder.for_batches(128), lambda rows: 0.0003 + 1e-6 * rows) == 128


def test_probes_keep_following_the_machine():
    ladder = SizeLadder.for_batches(128)
    assert settle(ladder, mobilenet_like) == 4
    assert settle(ladder, lambda rows: 0.0003 + 1e-6 * rows, calls=2000) == 128


def test_rejects_bad_rungs():
    for rungs in ((), (0, 1), (4, 2), (2, 2)):
        with pytest.raises(ValueError):
            SizeLadder(rungs)


def test_no_cap_without_a_bigger_size_measured_slower():
    """Only small calls measured (light traffic): nothing says big calls are slower."""
    ladder = SizeLadder.for_batches(64)
    for _ in range(6):
        ladder.observe(2, 0.001)
    caps = [ladder.cap() for _ in range(2 * SizeLadder.PROBE_TRIES + 1)]
    assert set(caps[:-1]) <= {1, 4} and caps[-1] == 64


def test_a_probe_the_traffic_cannot_make_is_given_up():
    """Every request has 2 rows, so no call has 1: the 1-row probe must not stay the cap."""
    ladder = SizeLadder.for_batches(8)
    for _ in range(6):  # 2-row calls measured fastest per row, bigger ones slower
        ladder.observe(2, 0.001)
        ladder.observe(4, 0.004)
        ladder.observe(8, 0.008)
    caps = []
    for _ in range(10):
        caps.append(ladder.cap())
        ladder.observe(max(2, caps[-1]), 0.001 * max(2, caps[-1]) / 2)  # a 1-row probe runs 2 rows
    assert caps.count(1) == SizeLadder.PROBE_TRIES and caps[-1] == 2
