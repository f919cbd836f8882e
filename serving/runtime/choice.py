"""Which runner serves a model version, and on what evidence: what status, metrics and logs show.

A TF2 SavedModel runs through its restored signature functions or, where it answers alike
there, in a TF1 Session (``LoadedModel.prefer_session``, ``serving.runtime.live``). The
choice is a value the operator can read per version (the ``/runners`` route, the ``runner``
metadata field, ``tfgw_model_runner_info``, the load log line), so the move is never silent.
No TensorFlow here: metrics and adapters read it.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

SESSION = "session"
FUNCTIONS = "functions"
UPSTREAM = "upstream"  # a TF Serving upstream runs the version (``--upstream``)



class Evidence(enum.StrEnum):
    """What the choice rests on."""

    WARMUP_FILE = "warmup_file"  # the model's recorded assets.extra/tf_serving_warmup_requests
    LIVE_REQUESTS = "live_requests"  # its first live model calls, replayed on a Session candidate
    SYNTHETIC = "synthetic"  # synthetic warm-up requests (serving.runtime.warmup)
    TF1_MODEL = "tf1_model"  # a TF1 SavedModel: in a Session from the start, as TF Serving runs it
    DISABLED = "disabled"  # the Session was not tried (--tf2_session=false)
    UPSTREAM = "upstream"  # the upstream's own choice, not visible here


@dataclass(frozen=True)
class RunnerChoice:
    """``runner`` serves the version now; ``evidence`` is what the choice rests on and
    ``reason`` says it in a sentence. ``pending``: live calls are still being gathered or
    compared, so the runner may yet change (once)."""

    runner: str
    evidence: Evidence
    reason: str
    pending: bool = False

    def __str__(self) -> str:
        """What the log lines say: ``runner: session (evidence: warmup_file): why``."""
        now = "for now, " if self.pending else ""
        return f"runner: {now}{self.runner} (evidence: {self.evidence}): {self.reason}"

    @property
    def state(self) -> str:
        """'comparing' while ``pending``, else 'settled' (a metric label)."""
        return "comparing" if self.pending else "settled"
