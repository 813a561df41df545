"""A clip-level detector: per-frame backbone features, pooled over time, one logit per clip.

Temporal models catch what single frames hide (flicker of the blend boundary, identity wobble). The
backbone is that of any registered frame detector; pooling is a bidirectional LSTM (averaged over
time) or attention pooling (a learned weight per frame, so a few manipulated frames can dominate).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dfguard.models.base import Detector, DetectorOutput, FrameDetector, as_channels_last, output_from
from dfguard.models.registry import get_model, register_model

POOLINGS = ("lstm", "attention")


class TemporalHead(nn.Module):
    def __init__(self, feature_dim: int, pooling: str, hidden: int, dropout: float) -> None:
        super().__init__()
        self.pooling = pooling
        if pooling == "lstm":
            self.lstm = nn.LSTM(feature_dim, hidden, batch_first=True, bidirectional=True)
            self.out_dim = 2 * hidden
        else:
            self.attention = nn.Sequential(nn.Linear(feature_dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))
            self.out_dim = feature_dim
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.out_dim, 1))

    def pool(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, D) frame features -> (B, out_dim) clip features."""
        if self.pooling == "lstm":
            return self.lstm(frames)[0].mean(dim=1)
        weights = torch.softmax(self.attention(frames), dim=1)  # (B, T, 1)
        return (weights * frames).sum(dim=1)


@register_model("temporal")
class TemporalDetector(Detector):
    """Input (B, T, 3, H, W) clips of T aligned face crops, normalised by the frame model's preset."""

    clip_model = True

    def __init__(
        self,
        frame_model: dict[str, Any] | None = None,
        pooling: str = "lstm",
        hidden: int = 128,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r} is not one of {POOLINGS}")
        spec = frame_model or {"name": "efficientnet_lite0"}
        frame = get_model(spec["name"], **spec.get("kwargs", {}))
        if not isinstance(frame, FrameDetector):
            raise ValueError(f"temporal model needs a frame detector, got {spec['name']!r}")
        self.frame_config = frame.config
        # Only the frame model's backbone is kept: its per-frame head would be an unused parameter.
        self.backbone = frame.backbone
        self.channels_last = frame.channels_last
        self.preset = frame.preset
        self.head = TemporalHead(frame.feature_dim, pooling, hidden, dropout)
        self.feature_dim = self.head.out_dim

    def nested_configs(self) -> dict[str, Any]:
        return {"frame_model": self.frame_config}

    def embed_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) face crops -> (N, E) backbone embeddings, the per-frame half of `forward`."""
        return self.backbone(as_channels_last(frames, self.channels_last))

    def judge(self, embeddings: torch.Tensor) -> DetectorOutput:
        """(B, T, E) embeddings of B clips -> one output per clip, the temporal half of `forward`.
        Serving embeds each face once and judges it alone and within its track from the same
        embeddings, instead of running the backbone twice."""
        features = self.head.pool(embeddings)
        return output_from(self.head.classifier(features).squeeze(1), features)

    def forward(self, clips: torch.Tensor) -> DetectorOutput:
        if clips.ndim != 5:
            raise ValueError(f"expected a (B, T, 3, H, W) batch of clips, got shape {tuple(clips.shape)}")
        batch, steps = clips.shape[:2]
        return self.judge(self.embed_frames(clips.flatten(0, 1)).view(batch, steps, -1))
