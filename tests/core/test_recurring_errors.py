"""A wrong base path is found at every poll: it is told once, with what to change, then at
growing intervals (serving/logs.py ``RecurringErrors``, serving/runtime/versions.py
``layout_hint``, as the registry uses them)."""
from __future__ import annotations

import asyncio
import logging
import shutil

import pytest

from serving.core.registry import ModelRegistry
from serving.core.sources import LocalSource
from serving.logs import RecurringErrors
from serving.runtime.versions import LAYOUT, layout_hint
from serving.settings import ModelConfig


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class HintsCounted(LocalSource):
    """A real LocalSource that counts the hints it is asked for."""

    hints = 0

    def hint(self, config: ModelConfig) -> str:
        self.hints += 1
        return super().hint(config)


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]


def test_a_problem_is_told_once_then_at_doubling_intervals(caplog):
    clock = Clock()
    recurring = RecurringErrors(logging.getLogger("t"), first_gap=10, max_gap=40, clock=clock)
    for _ in range(120):  # a poll a second for two minutes
        recurring.error("k", "it is broken")
        clock.now += 1
    told = errors(caplog)
    # at 0 s, then 10 s, 30 s, 70 s (gaps 10, 20, 40) and 110 s (the gap stays at max_gap)
    assert told[0] == "it is broken"
    assert told[1:] == [
        "it is broken (again: 10 times in the last 10 s; told again in 20 s if it goes on)",
        "it is broken (again: 20 times in the last 20 s; told again in 40 s if it goes on)",
        "it is broken (again: 40 times in the last 40 s; told again in 40 s if it goes on)",
        "it is broken (again: 40 times in the last 40 s; told again in 40 s if it goes on)",
    ]


def test_a_changed_or_returning_problem_is_told_at_once(caplog):
    clock = Clock()
    recurring = RecurringErrors(logging.getLogger("t"), clock=clock)
    recurring.error("k", "one")
    recurring.error("k", "one")
    recurring.error("k", "two")  # changed
    recurring.error("other", "two")  # another key
    recurring.clear("k")
    recurring.error("k", "two")  # back after it cleared
    assert errors(caplog) == ["one", "two", "two", "two"]


def test_the_detail_is_asked_only_for_a_line_that_is_logged(caplog):
    """A hint may list a bucket: a poll a second must not ask for it while the line is held back."""
    clock = Clock()
    recurring = RecurringErrors(logging.getLogger("t"), first_gap=10, max_gap=40, clock=clock)
    asked: list[float] = []

    def detail() -> str:
        asked.append(clock.now)
        return f"; hint {len(asked)}"

    for _ in range(31):  # told at 0, 10 and 30 s
        recurring.error("k", "it is broken", detail)
        clock.now += 1
    assert asked == [1000.0, 1010.0, 1030.0]
    assert errors(caplog) == [
        "it is broken; hint 1",
        "it is broken; hint 2 (again: 10 times in the last 10 s; told again in 20 s if it goes on)",
        "it is broken; hint 3 (again: 20 times in the last 20 s; told again in 40 s if it goes on)",
    ]


def test_hints_for_the_classic_mistakes(tfserving_dir, tmp_path):
    base = tmp_path / "m"
    shutil.copytree(tfserving_dir / "saved_model_half_plus_two_cpu", base)
    version = base / "00000123"
    assert layout_hint(str(version)) == (f"{version} is a version folder (it holds saved_model.pb): set the "
                                         f"base path to {base}; {LAYOUT}")
    assert layout_hint(str(tmp_path / "absent")).startswith(f"{tmp_path / 'absent'} does not exist")
    (tmp_path / "named" / "v1").mkdir(parents=True)
    assert "none of its folders (v1) is named by a number" in layout_hint(str(tmp_path / "named"))
    (tmp_path / "empty").mkdir()
    assert layout_hint(str(tmp_path / "empty")).startswith(f"put the SavedModel in {tmp_path / 'empty'}/1; ")


def test_a_version_folder_as_base_path_is_told_with_its_fix_then_rarely(tfserving_dir, tmp_path, caplog):
    """The registry, polled every second for a minute, at a version folder: one ERROR with the
    hint, then at 10 and 30 s."""
    base = tmp_path / "m"
    shutil.copytree(tfserving_dir / "saved_model_half_plus_two_cpu", base)
    clock = Clock()
    wrong = ModelConfig(name="m", base_path=str(base / "00000123"))
    source = HintsCounted((1,))
    registry = ModelRegistry([wrong], batcher_factory=None, source=source,
                             recurring=RecurringErrors(logging.getLogger("serving.core.registry"), clock=clock))

    async def poll_for(seconds: int) -> None:
        for _ in range(seconds):
            await registry.reconcile([wrong])
            clock.now += 1

    asyncio.run(poll_for(60))
    told = errors(caplog)
    assert len(told) == 3, told
    assert told[0] == (f"model m: No versions of model m found under {base / '00000123'}. Hint: "
                       f"{base / '00000123'} is a version folder (it holds saved_model.pb): set the base "
                       f"path to {base}; {LAYOUT}")
    assert "(again: 10 times in the last 10 s" in told[1] and "(again: 20 times in the last 20 s" in told[2]
    assert source.hints == 3  # one per line logged, not one per poll
