"""`composed`: a champion's detector left untouched, plus experts the continual-learning loop added.

A loop round that learns a new kind of fake must not move the boundary that holds the old kinds: one
head asked to take in a new kind and keep the old ones forgets (docs/loop.md). So a round adds
capacity instead: an expert, one linear score over the same head input the base detector reads (for
`clip_frozen`, the cached CLIP features), fitted on the reviewers' labels (`loop.experts`). An expert
speaks only past its own threshold, fitted so that it stays silent on real people it has not seen;
where it speaks, the face's logit is the larger of the base's and the expert's. No face's score can
fall below the base's, so no old fake is lost, and a real face changes only where an expert fires.

Each expert is four numbers and a weight vector (buffers, saved as safetensors with the base): its
score `w . x + b`, the score it fires from (`threshold`), and the logit it gives there (`floor`,
rising by `slope` per unit of score above it). A round builds the next composition from the champion
by copying the base and every earlier expert unchanged and adding its own; rolling back serves the
previous composition whole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from dfguard.models.base import DetectorOutput, FrameDetector, check_frames, output_from
from dfguard.models.registry import get_model, register_model
from dfguard.transforms import Preset

EXPERT_BUFFERS = ("expert_weight", "expert_bias", "expert_threshold", "expert_floor", "expert_slope")


@register_model("composed")
class ComposedDetector(FrameDetector):
    """`base` ({"name", "kwargs"}: a frame detector's config) with `experts` experts over its head input."""

    def __init__(self, base: dict[str, Any], experts: int = 1) -> None:
        if experts < 1:
            raise ValueError(f"a composed detector holds at least one expert, got {experts}")
        built = get_model(base["name"], **base.get("kwargs", {}))
        if not isinstance(built, FrameDetector) or built.clip_model:
            raise ValueError(
                f"the base of a composed detector must be a frame detector, got {base['name']!r}"
            )
        # nn.Module.__init__ of FrameDetector would register a second backbone and head; the base
        # owns them, and `backbone`/`head` below are views of its modules.
        torch.nn.Module.__init__(self)
        self.config = {}
        self.backbone_frozen = False
        self.base = built
        self.channels_last = built.channels_last
        dim = built.head_input_dim
        self.head_input_dim = dim
        self.register_buffer("expert_weight", torch.zeros(experts, dim))
        self.register_buffer("expert_bias", torch.zeros(experts))
        # Built, not yet fitted: experts that never fire (`compose` and loading set the real ones).
        self.register_buffer("expert_threshold", torch.full((experts,), torch.inf))
        self.register_buffer("expert_floor", torch.zeros(experts))
        self.register_buffer("expert_slope", torch.ones(experts))

    @classmethod
    def build(cls, base: dict[str, Any], experts: int) -> ComposedDetector:
        """`get_model("composed", ...)`, typed: a config recorded as the registry records it."""
        model = get_model("composed", base=base, experts=experts)
        if not isinstance(model, cls):  # another class registered under the name: a programming error
            raise TypeError(f"'composed' builds {type(model).__name__}, not {cls.__name__}")
        return model

    # The base owns the modules; training and scoring code reads them under these names.
    @property
    def backbone(self) -> torch.nn.Module:  # type: ignore[override]
        return self.base.backbone

    @property
    def head(self) -> torch.nn.Module:  # type: ignore[override]
        return self.base.head

    @property
    def preset(self) -> Preset:  # type: ignore[override]
        return self.base.preset

    @property
    def feature_dim(self) -> int:  # type: ignore[override]
        return self.base.feature_dim

    @property
    def experts(self) -> int:
        return int(self.expert_weight.shape[0])

    @property
    def gradient_twin(self) -> Callable[[], torch.nn.Module] | None:
        """The base's fp32 twin judging through this composition (Grad-CAM), when the base has one."""
        make = getattr(self.base, "gradient_twin", None)
        return None if make is None else lambda: make().judged_by(self)

    def nested_configs(self) -> dict[str, Any]:
        return {"base": self.base.config}

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.base.embed(images)

    def expert_scores(self, features: torch.Tensor) -> torch.Tensor:
        """(B, E) each expert's score of head inputs (B, D)."""
        weight = self.expert_weight.to(features.dtype)
        return features @ weight.T + self.expert_bias.to(features.dtype)

    def expert_logits(self, features: torch.Tensor) -> torch.Tensor:
        """(B, E) each expert's logit, -inf where it does not fire."""
        scores = self.expert_scores(features)
        threshold = self.expert_threshold.to(scores.dtype)
        logits = self.expert_floor.to(scores.dtype) + self.expert_slope.to(scores.dtype) * (
            scores - threshold
        )
        return torch.where(scores >= threshold, logits, torch.full_like(logits, -torch.inf))

    def judge(self, features: torch.Tensor) -> DetectorOutput:
        out = self.base.judge(features)
        strongest = self.expert_logits(features).max(dim=1).values
        return output_from(torch.maximum(out.logits, strongest), out.features, out.blend_map)

    def forward(self, images: torch.Tensor) -> DetectorOutput:
        check_frames(images)
        return self.judge(self.embed(images))

    def train(self, mode: bool = True) -> ComposedDetector:
        torch.nn.Module.train(self, mode)
        self.base.train(mode)
        return self


def compose(base: FrameDetector, experts: list[dict[str, torch.Tensor | float]]) -> ComposedDetector:
    """A composed detector over `base`'s weights (a copy) with `experts` (each a dict of the
    `EXPERT_BUFFERS` names without the `expert_` prefix: weight (D,), bias, threshold, floor, slope)."""
    if isinstance(base, ComposedDetector):
        raise ValueError("compose the base detector: a composed one already holds its experts")
    model = ComposedDetector.build(base.config, len(experts))
    model.base.load_state_dict(base.state_dict())
    for name in EXPERT_BUFFERS:
        values = [
            torch.as_tensor(expert[name.removeprefix("expert_")], dtype=torch.float32) for expert in experts
        ]
        getattr(model, name).copy_(torch.stack(values))
    return model.eval()


def experts_of(model: ComposedDetector) -> list[dict[str, torch.Tensor | float]]:
    """The experts of a composed detector, in the form `compose` takes."""
    return [
        {name.removeprefix("expert_"): getattr(model, name)[k].clone() for name in EXPERT_BUFFERS}
        for k in range(model.experts)
    ]
