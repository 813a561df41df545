"""The loop gate: what a loop run does with what the reviewers said since the last one. A pure function
of measured inputs and the `loop` thresholds, so every decision can be stored with what it saw and
re-derived from it.

    too few new labels                                      -> wait
    drift, or enough labels the champion got wrong          -> fine-tune (and re-calibrate)
    the champion's calibration error on feedback has risen  -> re-calibrate only
    otherwise                                               -> wait

Drift alone does not wait for errors: a shifted stream is where the next mistakes come from, and the
promotion gate still refuses a fine-tune that does not beat the champion on the feedback holdout.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from dfguard.config import LoopConfig

Action = Literal["wait", "recalibrate", "finetune"]
ACTIONS: tuple[Action, ...] = ("wait", "recalibrate", "finetune")


@dataclass(frozen=True)
class LoopInputs:
    new_labels: int  # items given a real/fake label since the last loop run that changed a model
    errors: int  # of those, confident verdicts of the champion the label contradicts
    feedback_ece: float  # the champion's calibration error on labelled feedback (NaN: too few items)
    champion_ece: float  # its calibration error on the frozen test suite, as registered
    drifted: bool | None  # the drift report's verdict; None when no report could be made

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LoopDecision:
    action: Action
    reasons: tuple[str, ...]
    inputs: LoopInputs

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "reasons": list(self.reasons), "inputs": self.inputs.to_dict()}


def loop_gate(inputs: LoopInputs, policy: LoopConfig) -> LoopDecision:
    """The action for `inputs` under `policy`, with one line per fact that decided it."""
    labels = f"{inputs.new_labels} new labels (at least {policy.min_new_labels} needed)"
    if inputs.new_labels < policy.min_new_labels:
        return LoopDecision("wait", (f"wait: {labels}",), inputs)
    reasons = [f"ok: {labels}"]
    errors = f"{inputs.errors} of them contradict the champion's verdict (fine-tune at {policy.min_errors})"
    drift = {True: "the predictions drifted", False: "no drift", None: "no drift report"}[inputs.drifted]
    if inputs.drifted or inputs.errors >= policy.min_errors:
        return LoopDecision("finetune", (*reasons, f"fine-tune: {drift}; {errors}"), inputs)
    rise = inputs.feedback_ece - inputs.champion_ece
    if not math.isnan(rise) and rise > policy.ece_rise:
        calibration = (
            f"calibration error on feedback {inputs.feedback_ece:.3f} is {rise:.3f} above the test "
            f"suite's {inputs.champion_ece:.3f} (re-calibrate above {policy.ece_rise})"
        )
        return LoopDecision(
            "recalibrate", (*reasons, f"{drift}; {errors}", f"re-calibrate: {calibration}"), inputs
        )
    steady = (
        "calibration error on feedback not measurable"
        if math.isnan(rise)
        else f"calibration error on feedback {inputs.feedback_ece:.3f}, within {policy.ece_rise} of the "
        "test suite's"
    )
    return LoopDecision("wait", (*reasons, f"wait: {drift}; {errors}; {steady}"), inputs)
