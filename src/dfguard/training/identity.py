"""An identity adversary: training that pushes a detector's features away from telling people apart.

With a few dozen training people, a detector can score faces by who they are: it learns what each
training person's real face looks like and calls every unfamiliar face fake, which is what the demo
corpus's unseen people show (their reals score fake). Dong et al. (CVPR 2023) call this implicit
identity leakage. The adversary is a small head that learns to name the training person from the
detector's features; between the two sits a gradient reversal layer (Ganin & Lempitsky 2015), so the
same loss that teaches the adversary pushes the backbone towards features it cannot name people by.
`strength` scales the reversed gradient only: the adversary itself always learns at full rate, so it
keeps finding whatever identity is left.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

UNKNOWN_PERSON = -1  # a face nobody is named for (a dataset fake: whose face is it?), left out of the loss


class _ReversedGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, strength: float) -> torch.Tensor:
        ctx.strength = strength  # type: ignore[attr-defined]
        return x.view_as(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.strength * grad, None  # type: ignore[attr-defined]


def reverse_gradient(x: torch.Tensor, strength: float) -> torch.Tensor:
    """`x` unchanged going forward; going back, the gradient times -`strength`."""
    return _ReversedGradient.apply(x, strength)


class IdentityAdversary(nn.Module):
    """Names one of `people` training people from a detector's (B, feature_dim) features.

    Two layers, not one: a linear adversary only removes what a linear head could read, and the
    backbone would hide identity one nonlinearity away from it.
    """

    def __init__(self, feature_dim: int, people: int, strength: float, hidden: int = 128) -> None:
        super().__init__()
        if people < 2:
            raise ValueError(f"an identity adversary needs at least 2 named people, got {people}")
        self.strength = strength
        self.last_loss = float("nan")  # of the last batch, for the training history
        self.classifier = nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, people))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(reverse_gradient(features.float(), self.strength))

    def loss(self, features: torch.Tensor, people: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the faces whose person is known; zero (still in the graph) without any."""
        known = people != UNKNOWN_PERSON
        if not bool(known.any()):
            self.last_loss = float("nan")
            return features.sum() * 0.0
        loss = functional.cross_entropy(self(features[known]), people[known])
        self.last_loss = float(loss.detach())
        return loss
