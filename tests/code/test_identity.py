"""The identity adversary: a reversed gradient, a loss over named faces only, and a training step that
moves the detector against the adversary while the adversary itself learns at full rate."""

from __future__ import annotations

import pytest
import torch

from dfguard.models import get_model
from dfguard.training.identity import UNKNOWN_PERSON, IdentityAdversary, reverse_gradient
from dfguard.training.losses import loss_function
from dfguard.training.step import train_step

SIZE = 32


def test_the_reversal_passes_values_and_negates_and_scales_gradients() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    weights = torch.randn(3, 4)
    y = reverse_gradient(x, 0.25)
    assert torch.equal(y, x)
    (y * weights).sum().backward()
    torch.testing.assert_close(x.grad, -0.25 * weights)


def test_the_loss_counts_named_faces_only() -> None:
    torch.manual_seed(0)
    adversary = IdentityAdversary(feature_dim=6, people=3, strength=1.0)
    features = torch.randn(4, 6)
    people = torch.tensor([2, UNKNOWN_PERSON, 0, UNKNOWN_PERSON])
    expected = torch.nn.functional.cross_entropy(adversary(features[[0, 2]]), people[[0, 2]])
    torch.testing.assert_close(adversary.loss(features, people), expected)
    nobody = adversary.loss(features.requires_grad_(), torch.full((4,), UNKNOWN_PERSON))
    assert nobody.item() == 0.0 and nobody.requires_grad  # backward still works on a batch of fakes
    with pytest.raises(ValueError, match="at least 2"):
        IdentityAdversary(feature_dim=6, people=1, strength=1.0)


def _gradients(loss: torch.Tensor, parameters: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    """d loss / d parameter, zeros for the parameters it does not depend on (the head, for identity)."""
    found = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(parameters, found, strict=True)]


def test_a_step_moves_the_detector_against_the_adversary_and_the_adversary_with_it() -> None:
    """With plain SGD at rate 1, each update is minus the gradient: the detector's is the detection
    loss's gradient minus `strength` times the identity loss's, the adversary's is its loss's own."""
    torch.manual_seed(0)
    strength = 0.5
    model = get_model("small_cnn", input_size=SIZE).eval()  # eval: no dropout, the same forward twice
    adversary = IdentityAdversary(model.feature_dim, people=3, strength=strength)
    inputs, targets = torch.randn(4, 3, SIZE, SIZE), torch.tensor([0.0, 1.0, 0.0, 1.0])
    people = torch.tensor([0, UNKNOWN_PERSON, 2, 1])
    criterion = loss_function("bce")

    detector_weights, adversary_weights = list(model.parameters()), list(adversary.parameters())
    out = model(inputs)
    detection = criterion(out.logits, targets)
    known = people != UNKNOWN_PERSON
    # The identity loss as the adversary would see it with no reversal in between.
    identity = torch.nn.functional.cross_entropy(adversary.classifier(out.features[known]), people[known])
    pushed = _gradients(identity, detector_weights)
    assert any(g.abs().sum() > 0 for g in pushed), "the identity loss must reach the backbone"
    expected_detector = [
        d - strength * i for d, i in zip(_gradients(detection, detector_weights), pushed, strict=True)
    ]
    expected_adversary = _gradients(identity, adversary_weights)

    before = [p.detach().clone() for p in detector_weights + adversary_weights]
    optimizer = torch.optim.SGD(detector_weights + adversary_weights, lr=1.0)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    loss = train_step(
        model, inputs, targets, optimizer, criterion, scaler, adversary=adversary, people=people
    )
    assert loss == pytest.approx(detection.item(), rel=1e-6), "the returned loss is the detection loss"
    after = detector_weights + adversary_weights
    for old, new, gradient in zip(before, after, expected_detector + expected_adversary, strict=True):
        torch.testing.assert_close(old - new.detach(), gradient, rtol=1e-4, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in expected_adversary)
