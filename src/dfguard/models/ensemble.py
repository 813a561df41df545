"""An ensemble of registered frame detectors combined by a small learned gate.

The gate sees every member's logit and (layer-normalised) features and outputs one weight per member
for each input, so it can trust, say, one member on heavily compressed faces and another on clean
ones. It starts at zero, i.e. as the plain average of the members' logits, and is fitted on the
validation set with the members frozen (`fit_gate`): members are trained on the training set, and
fitting the combination on the same data would reward whichever member overfits most.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dfguard.models.base import Detector, DetectorOutput, FrameDetector, output_from
from dfguard.models.registry import get_model, register_model


class Gate(nn.Module):
    def __init__(self, feature_dims: list[int]) -> None:
        super().__init__()
        self.feature_dims = feature_dims
        self.norms = nn.ModuleList(nn.LayerNorm(d, elementwise_affine=False) for d in feature_dims)
        self.weights = nn.Linear(len(feature_dims) + sum(feature_dims), len(feature_dims))
        self.bias = nn.Parameter(torch.zeros(()))
        nn.init.zeros_(self.weights.weight)
        nn.init.zeros_(self.weights.bias)

    def member_weights(self, logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """(B, K) member logits and (B, sum D) member features -> (B, K) weights summing to 1."""
        # LayerNorm per member: backbones' feature scales differ by orders of magnitude.
        parts = features.split(self.feature_dims, dim=1)
        normed = [norm(part) for norm, part in zip(self.norms, parts, strict=True)]
        return torch.softmax(self.weights(torch.cat([logits, *normed], dim=1)), dim=1)

    def forward(self, logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """(B, K) member logits and (B, sum D) member features -> (B,) combined logits."""
        return (self.member_weights(logits, features) * logits).sum(dim=1) + self.bias


@register_model("ensemble")
class EnsembleDetector(Detector):
    """Members are given as `[{"name": ..., "kwargs": {...}}, ...]` and must share an input size.

    The input is normalised with the first member's preset; each other member gets it re-normalised to
    its own mean/std (an exact per-channel affine map), so members trained with different
    normalisations (EfficientNet-Lite's [-1, 1], ImageNet statistics) can be combined.
    """

    def __init__(self, members: list[dict[str, Any]]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        built = [get_model(spec["name"], **spec.get("kwargs", {})) for spec in members]
        self.preset = built[0].preset
        for spec, member in zip(members, built, strict=True):
            if not isinstance(member, FrameDetector):
                raise ValueError(f"ensemble members must be frame detectors, got {spec['name']!r}")
            if member.preset.input_size != self.preset.input_size:
                raise ValueError(
                    f"member {spec['name']!r} input size {member.preset.input_size} differs from"
                    f" {self.preset.input_size}"
                )
        mean, std = torch.tensor(self.preset.mean), torch.tensor(self.preset.std)
        member_mean = torch.tensor([m.preset.mean for m in built])
        member_std = torch.tensor([m.preset.std for m in built])
        # x_member = (x * std + mean - member_mean) / member_std; derived from the config, so not saved.
        self.register_buffer("input_scale", (std / member_std)[:, :, None, None], persistent=False)
        self.register_buffer(
            "input_shift", ((mean - member_mean) / member_std)[:, :, None, None], persistent=False
        )
        self.backbone = nn.ModuleList(built)
        self.head = Gate([m.feature_dim for m in built])
        self.feature_dim = sum(m.feature_dim for m in built)

    def nested_configs(self) -> dict[str, Any]:
        return {"members": [member.config for member in self.backbone]}

    def member_outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K) member logits and (B, sum D) concatenated member features."""
        outputs = [
            member(images * scale + shift)
            for member, scale, shift in zip(self.backbone, self.input_scale, self.input_shift, strict=True)
        ]
        logits = torch.stack([o.logits for o in outputs], dim=1)
        return logits, torch.cat([o.features for o in outputs], dim=1)

    def forward(self, images: torch.Tensor) -> DetectorOutput:
        logits, features = self.member_outputs(images)
        return output_from(self.head(logits, features), features)

    def fit_gate(
        self,
        member_logits: torch.Tensor,
        member_features: torch.Tensor,
        labels: torch.Tensor,
        steps: int = 300,
        lr: float = 0.01,
        weight_decay: float = 1e-2,
    ) -> float:
        """Fit the gate on precomputed validation outputs (`member_outputs`, batched by the caller);
        returns the final binary cross-entropy. Full-batch Adam: validation sets are small."""
        optimizer = torch.optim.AdamW(self.head.parameters(), lr=lr, weight_decay=weight_decay)
        targets = labels.float()
        self.head.train()
        loss = torch.zeros(())
        for _ in range(steps):
            optimizer.zero_grad()
            combined = self.head(member_logits.detach(), member_features.detach())
            loss = nn.functional.binary_cross_entropy_with_logits(combined, targets)
            loss.backward()
            optimizer.step()
        return float(loss.detach())
