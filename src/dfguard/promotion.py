"""The promotion gate (a pure function of two metric dicts) and the alias moves it allows.

`promote` evaluates the gate for a registered version, records the verdict as tags on it, and on a pass
makes it the champion (the old champion becomes `previous`); `rollback` swaps champion and previous.
Both change aliases all-or-nothing: if a step fails half-way, the aliases are put back as they were,
and if the process dies half-way, the next promotion or rollback puts them back before it starts.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlflow import MlflowClient

from dfguard.config import PromotionConfig, RegistryConfig
from dfguard.registry import (
    CHALLENGER,
    CHAMPION,
    MODEL_NAME,
    PREVIOUS,
    alias_transaction,
    current_aliases,
    dataset_of,
    evaluation_on,
    get_version,
    load,
    move_alias,
    recover_interrupted,
    version_metrics,
)

GatePolicy = PromotionConfig  # the gate's thresholds are the `promotion` section of the config
Verify = Callable[[str], None]  # called with the new champion's version before the change is kept
TAG_PREFIX = "gate."
FLOAT_SLACK = 1e-9


@dataclass(frozen=True)
class GateMetrics:
    """What the gate compares, from the evaluation's metrics; NaN where the evaluation has no value."""

    video_auc: float
    video_ece: float
    method_auc: dict[str, float]
    # The ECE a perfectly calibrated model stays under 95% of the time on as many videos (the
    # evaluation's `ece_if_calibrated.high`): on a few dozen videos it exceeds any useful fixed bound.
    ece_noise: float = math.nan


@dataclass(frozen=True)
class Check:
    """One check of a gate: what was checked, whether it passed, why, and the figures it compared."""

    name: str
    passed: bool
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def line(self) -> str:
        """The check as one line for people (logs, tags): "pass: ..." or "fail: ..."."""
        return f"{'pass' if self.passed else 'fail'}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateResult:
    passed: bool
    checks: tuple[Check, ...]  # in the order checked

    @property
    def reasons(self) -> tuple[str, ...]:
        """One line per check, as the version's `gate.reasons` tag records them."""
        return tuple(check.line for check in self.checks)


@dataclass(frozen=True)
class Promotion:
    version: str
    gate: GateResult
    promoted: bool
    aliases: dict[str, str]  # the detector's aliases afterwards


def gate_metrics(metrics: Mapping[str, Any]) -> GateMetrics:
    """The one place that knows the layout of the evaluation's `metrics.json`:
    {"video": {"auc", "ece"}, "by_method": {<method>: {"auc"}}, "ece_if_calibrated": {"high"}}. Missing
    values become NaN, which the gate fails on, so a changed layout blocks promotions instead of
    passing them (a missing noise level only leaves the fixed bound)."""
    video = metrics.get("video", {})
    by_method = metrics.get("by_method", {})
    return GateMetrics(
        video_auc=_number(video.get("auc")),
        video_ece=_number(video.get("ece")),
        method_auc={method: _number(values.get("auc")) for method, values in by_method.items()},
        ece_noise=_number((metrics.get("ece_if_calibrated") or {}).get("high")),
    )


def promotion_gate(
    challenger_metrics: Mapping[str, Any],
    champion_metrics: Mapping[str, Any] | None,
    policy: GatePolicy,
    datasets: tuple[str, str] | None = None,
) -> GateResult:
    """Whether a challenger may replace the champion, with the outcome of every check.

    `datasets` names the face dataset versions (DVC hashes) the challenger's and the champion's metrics
    were measured on: figures from two datasets do not compare (a harder test split lowers every AUC),
    so the gate fails until the champion is re-scored on the challenger's (`registry.evaluate_model`).

    The challenger fails if its video AUC trails the champion's by more than `auc_tolerance`, if any
    manipulation method's AUC trails by more than `method_tolerance` (or is missing), or if its video
    ECE exceeds `max_ece`. With no champion, the first model promotes itself once it has been evaluated
    (a video AUC): serving some model beats serving none, and its ECE is reported, not enforced.
    """
    new = gate_metrics(challenger_metrics)
    if champion_metrics is None:
        ece_ok, ece_text = ece_check(new.video_ece, policy.max_ece, new.ece_noise)
        checks = [
            Check("video AUC", not math.isnan(new.video_auc), f"video AUC {new.video_auc:.4f}"),
            Check(
                "video ECE",
                True,
                ece_text if ece_ok else f"{ece_text}: reported only, the first model has no bar to clear",
            ),
            Check("champion", True, "no champion yet: the first model promotes itself"),
        ]
    else:
        old = gate_metrics(champion_metrics)
        checks = [] if datasets is None else [Check("dataset", *_dataset_check(*datasets))]
        checks += [
            Check("video ECE", *ece_check(new.video_ece, policy.max_ece, new.ece_noise)),
            Check("video AUC", *_auc_check("video AUC", new.video_auc, old.video_auc, policy.auc_tolerance)),
        ]
        for method, old_auc in sorted(old.method_auc.items()):
            new_auc = new.method_auc.get(method, math.nan)
            checks.append(
                Check(
                    f"{method} AUC", *_auc_check(f"{method} AUC", new_auc, old_auc, policy.method_tolerance)
                )
            )
        for method in sorted(set(new.method_auc) - set(old.method_auc)):
            checks.append(
                Check(
                    f"{method} AUC",
                    True,
                    f"{method} AUC {new.method_auc[method]:.4f}: new method, no champion value",
                )
            )
    return GateResult(passed=all(check.passed for check in checks), checks=tuple(checks))


def promote(
    client: MlflowClient,
    version: str | int,
    policy: GatePolicy,
    *,
    force: bool = False,
    verify: Verify | None = None,
    experiment: str = RegistryConfig.experiment,
) -> Promotion:
    """Gate registered `version` against the champion, tag it with the verdict, and on a pass (or with
    `force`) make it the champion and the old champion `previous`.

    `verify` (e.g. `loadable`) runs once the aliases have moved; if it or any step raises, the aliases
    are restored and the error propagates. The verdict tags stay: they record that the gate ran.
    """
    recover_interrupted(client)
    candidate = get_version(client, version)
    number = str(candidate.version)
    before = current_aliases(client)
    champion = before.get(CHAMPION)
    if champion == number:
        raise ValueError(f"version {number} is already the champion")
    champion_metrics, datasets = _champion_figures(client, champion, dataset_of(candidate), experiment)
    gate = promotion_gate(version_metrics(client, candidate), champion_metrics, policy, datasets)
    tags = {
        "passed": str(gate.passed).lower(),
        "reasons": "\n".join(gate.reasons),
        "champion": champion or "none",
        "policy": json.dumps(asdict(policy), sort_keys=True),
        "checked_at": _now(),
        "forced": str(force and not gate.passed).lower(),
    }
    for key, value in tags.items():
        client.set_model_version_tag(MODEL_NAME, number, TAG_PREFIX + key, value)
    if not (gate.passed or force):
        return Promotion(number, gate, promoted=False, aliases=before)
    with alias_transaction(client):
        if champion is not None:
            move_alias(client, PREVIOUS, champion)
        move_alias(client, CHAMPION, number)
        if before.get(CHALLENGER) == number:
            move_alias(client, CHALLENGER, None)  # no longer waiting for the gate
        if verify is not None:
            verify(number)
        client.set_model_version_tag(MODEL_NAME, number, "promoted_at", _now())
    return Promotion(number, gate, promoted=True, aliases=current_aliases(client))


def _champion_figures(
    client: MlflowClient, champion: str | None, dataset: str, experiment: str
) -> tuple[dict[str, Any] | None, tuple[str, str] | None]:
    """The champion's metrics to gate against, measured on face dataset `dataset` where they can be (its
    own, or an evaluation run that re-scored it there), with (dataset, the one they were measured on)."""
    if champion is None:
        return None, None
    version = get_version(client, champion)
    if dataset_of(version) != dataset:
        rescored = evaluation_on(client, champion, dataset, experiment)
        if rescored is not None:
            return rescored, (dataset, dataset)
    return version_metrics(client, version), (dataset, dataset_of(version))


def rollback(client: MlflowClient, verify: Verify | None = None) -> dict[str, str]:
    """Make `previous` the champion again and the demoted champion `previous`, all-or-nothing (see
    `promote`); returns the aliases afterwards."""
    recover_interrupted(client)
    before = current_aliases(client)
    restored, demoted = before.get(PREVIOUS), before.get(CHAMPION)
    if restored is None:
        raise ValueError("there is no previous champion to roll back to")
    with alias_transaction(client):
        move_alias(client, CHAMPION, restored)
        move_alias(client, PREVIOUS, demoted)
        if verify is not None:
            verify(restored)
        if demoted is not None:
            client.set_model_version_tag(MODEL_NAME, demoted, "rolled_back_at", _now())
    return current_aliases(client)


def loadable(client: MlflowClient) -> Verify:
    """A `verify` step: the new champion's files download and rebuild into a detector, so serving
    never gets a champion it cannot load."""
    from dfguard.models.io import load_detector  # torch: only when a promotion actually verifies

    def check(version: str) -> None:
        with tempfile.TemporaryDirectory(prefix="dfguard-verify-") as tmp:
            load_detector(load(client, f"models:/{MODEL_NAME}/{version}", tmp))

    return check


def _auc_check(label: str, new: float, old: float, tolerance: float) -> tuple[bool, str]:
    if math.isnan(old):
        return False, f"{label}: the champion has no value to compare with"
    if math.isnan(new):
        return False, f"{label} is missing (champion {old:.4f})"
    drop = old - new
    verdict = f"{label} {new:.4f} vs champion {old:.4f} (change {-drop:+.4f}, tolerance {tolerance:.4f})"
    # A drop of exactly the tolerance passes: without the epsilon, 0.9 - 0.895 (> 0.005 in binary) fails.
    return drop <= tolerance + FLOAT_SLACK, verdict


def _dataset_check(challenger: str, champion: str) -> tuple[bool, str]:
    if challenger != champion:
        return False, (
            f"the challenger was measured on face dataset {challenger[:12]}, the champion on "
            f"{champion[:12]}: re-score the champion on the challenger's dataset first (the evaluate flow)"
        )
    return True, f"both measured on face dataset {challenger[:12]}"


def ece_check(ece: float, max_ece: float, noise: float = math.nan) -> tuple[bool, str]:
    """ECE within `max_ece`, or within what a perfectly calibrated model shows on as many videos
    (`noise`), whichever is larger: a bound no calibrated model could be sure to meet tests luck."""
    if math.isnan(ece):
        return False, "video ECE is missing"
    if math.isnan(noise) or noise <= max_ece:
        return ece <= max_ece, f"video ECE {ece:.4f} (max {max_ece:.4f})"
    return ece <= noise, (
        f"video ECE {ece:.4f} (max {max_ece:.4f}, or {noise:.4f}: what a perfectly calibrated model stays "
        "under 95% of the time on these videos)"
    )


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
