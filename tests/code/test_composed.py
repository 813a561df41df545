"""The composed detector (a base left untouched plus the loop's experts) and how an expert is fitted:
scores only ever rise, and only where an expert fires; compositions save and load as safetensors;
an expert fitted on a few people's fakes ignores who they are and stays quiet on people it never saw."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dfguard.calibration.temperature import fit_calibrator
from dfguard.config import LoopConfig
from dfguard.loop.experts import calibrated_logits, fit_expert, identity_basis
from dfguard.models import get_model, load_detector, save_detector
from dfguard.models.composed import ComposedDetector, compose, experts_of


def _base() -> torch.nn.Module:
    torch.manual_seed(0)
    return get_model("small_cnn").eval()


def _expert(dim: int, seed: int, threshold: float) -> dict[str, torch.Tensor | float]:
    weight = torch.from_numpy(np.random.default_rng(seed).normal(size=dim).astype(np.float32))
    return {"weight": weight, "bias": 0.1, "threshold": threshold, "floor": 2.0, "slope": 3.0}


def test_an_expert_only_raises_scores_and_only_where_it_fires() -> None:
    base = _base()
    images = torch.randn(64, 3, base.preset.input_size, base.preset.input_size)
    expert = _expert(base.head_input_dim, 1, threshold=0.0)
    with torch.inference_mode():
        score = base.embed(images) @ expert["weight"] + expert["bias"]
        expert["threshold"] = float(score.median())  # half the faces on each side
        old, new = base(images).logits, compose(base, [expert])(images).logits
    fires = score >= expert["threshold"]
    assert 0 < int(fires.sum()) < len(fires), "the check needs faces on both sides of the threshold"
    assert torch.equal(new[~fires], old[~fires])  # silent: the base alone
    given = 2.0 + 3.0 * (
        score[fires] - expert["threshold"]
    )  # floor, rising with the score past the threshold
    assert torch.allclose(new[fires], torch.maximum(old[fires], given))
    assert bool((new >= old).all())  # no face's score falls: no old fake is lost


def test_a_composition_saves_and_loads_whole_and_a_round_adds_without_touching_the_rest(tmp_path) -> None:
    base = _base()
    first = compose(base, [_expert(base.head_input_dim, 1, 0.5)])
    second = compose(first.base, [*experts_of(first), _expert(base.head_input_dim, 2, 0.2)])
    save_detector(second, tmp_path / "model")
    loaded, config = load_detector(tmp_path / "model")
    assert isinstance(loaded, ComposedDetector) and loaded.experts == 2
    assert config["model"]["kwargs"]["base"]["name"] == "small_cnn"
    assert torch.equal(loaded.expert_weight[0], first.expert_weight[0])  # round one's expert as it was
    for name, tensor in base.state_dict().items():
        assert torch.equal(loaded.base.state_dict()[name], tensor), name
    images = torch.randn(8, 3, base.preset.input_size, base.preset.input_size)
    with torch.inference_mode():
        assert torch.equal(loaded(images).logits, second(images).logits)
    with pytest.raises(ValueError, match="compose the base"):
        compose(second, [])


def _people(
    rng: np.random.Generator, n: int, faces: int, identity: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Faces of `n` people: each a person's own offset in the identity subspace, plus noise."""
    dim = identity.shape[0]
    offsets = rng.normal(scale=3.0, size=(n, identity.shape[1])) @ identity.T
    x = np.repeat(offsets, faces, axis=0) + rng.normal(size=(n * faces, dim))
    return x, np.repeat([f"p{rng.integers(1 << 30)}-{i}" for i in range(n)], faces)


def test_an_expert_learns_the_manipulation_not_the_people_it_was_shown() -> None:
    rng = np.random.default_rng(3)
    dim = 48
    identity = np.linalg.qr(rng.normal(size=(dim, 12)))[0]  # 12 directions people differ along
    trace = rng.normal(size=dim)
    trace -= identity @ (identity.T @ trace)
    trace *= 5.0 / np.linalg.norm(trace)  # the manipulation: a shift no person's face makes
    reals, real_groups = _people(rng, 24, 20, identity)
    shown, shown_groups = _people(rng, 3, 10, identity)  # the labelled fakes: three people only
    policy = LoopConfig(
        expert_identity_rank=12, expert_folds=4, expert_real_fire=0.01, expert_person_fire=0.05
    )
    fit = fit_expert(shown + trace, shown_groups, reals, real_groups, floor=2.0, high=5.0, policy=policy)

    unseen, unseen_groups = _people(rng, 12, 20, identity)
    score = lambda x: x @ fit.weight + fit.bias  # noqa: E731
    fired_real = score(unseen) >= fit.threshold
    per_person = {g: fired_real[unseen_groups == g].mean() for g in np.unique(unseen_groups)}
    assert fired_real.mean() <= 0.03 and max(per_person.values()) <= 0.15, per_person
    assert np.mean(score(unseen + trace) >= fit.threshold) >= 0.9  # unseen people's fakes are caught
    assert fit.figures["identity_rank"] == 12 and fit.figures["heldout_fake_recall"] >= 0.8


def test_the_identity_subspace_is_where_the_peoples_means_differ() -> None:
    rng = np.random.default_rng(4)
    identity = np.linalg.qr(rng.normal(size=(30, 5)))[0]
    x, groups = _people(rng, 40, 30, identity)
    basis = identity_basis(x, groups, rank=5)
    # Every true identity direction lies (almost) inside the estimated subspace.
    assert np.linalg.norm(basis.T @ identity, axis=0).min() > 0.95
    assert identity_basis(x, np.zeros(len(x), str), rank=5).shape == (30, 0)  # one group: nothing to remove


def test_an_expert_fires_at_logits_every_calibration_calls_fake() -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 400)
    video = fit_calibrator(rng.normal(size=400) + 2.0 * labels, labels)
    photo = fit_calibrator(0.5 * rng.normal(size=400) + labels, labels)
    floor, high = calibrated_logits({"calibration": video.__dict__, "photo_calibration": photo.__dict__})
    for calibrator in (video, photo):
        assert calibrator.verdict(float(calibrator.apply(np.array([floor]))[0])) == "FAKE"
        assert float(calibrator.apply(np.array([high]))[0]) >= 0.99 - 1e-9
