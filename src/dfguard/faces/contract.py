"""The preprocessing contract: everything that decides what a face crop looks like, with a stable hash.

It is saved as JSON with every face dataset and later with every model trained on one, so the
predictor can apply exactly the preprocessing a model saw (published detectors lose their accuracy
when crops silently change). The hash is SHA-256 over the canonical JSON (sorted keys, no spaces),
so it is the same in every process, on every machine and Python version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from dfguard.config import ExtractConfig
from dfguard.faces.align import TEMPLATE, TEMPLATE_NAME
from dfguard.faces.detector import MTCNN_PYRAMID_FACTOR, MTCNN_THRESHOLDS

# Bump when the code changes what the same settings produce (a new sampling rule, another resampling
# filter), so old crops are not mixed with new ones under an unchanged hash.
CONTRACT_VERSION = 1
DETECTORS = ("mtcnn",)
CROP_FORMATS = ("png", "jpg")
HASH_CHARS = 16


@dataclass(frozen=True)
class PreprocessingContract:
    version: int
    detector: str
    detector_stage_thresholds: tuple[float, ...]
    detector_pyramid_factor: float
    min_score: float
    search_face_px: int
    min_face_px: int
    detect_face_px: int
    orientation_search: bool
    sampling: str  # how frame numbers are chosen
    frames_train: int
    frames_val: int
    frames_test: int
    alignment: str
    template: str
    template_points: tuple[tuple[float, float], ...]  # in units of the face square
    margin: float
    crop_size: int
    crop_format: str
    crop_jpeg_quality: int  # 0 for lossless formats

    @classmethod
    def from_config(cls, cfg: ExtractConfig) -> PreprocessingContract:
        """The contract `cfg` asks for; raises ValueError for settings that cannot work."""
        problems = []
        if cfg.detector not in DETECTORS:
            problems.append(f"detector {cfg.detector!r} is not one of {DETECTORS}")
        if cfg.crop_format not in CROP_FORMATS:
            problems.append(f"crop_format {cfg.crop_format!r} is not one of {CROP_FORMATS}")
        if min(cfg.frames_train, cfg.frames_val, cfg.frames_test) < 1:
            problems.append("frames per video must be at least 1 for every split")
        if not 12 <= cfg.detect_face_px <= cfg.search_face_px <= cfg.min_face_px:
            problems.append("expected 12 <= detect_face_px <= search_face_px <= min_face_px")
        if cfg.margin < 1 or cfg.crop_size < 16:
            problems.append("margin must be at least 1 and crop_size at least 16")
        if not 1 <= cfg.jpeg_quality <= 100:
            problems.append("jpeg_quality must be 1-100")
        if problems:
            raise ValueError("extract settings: " + "; ".join(problems))
        return cls(
            version=CONTRACT_VERSION,
            detector=cfg.detector,
            detector_stage_thresholds=MTCNN_THRESHOLDS,
            detector_pyramid_factor=MTCNN_PYRAMID_FACTOR,
            min_score=cfg.min_score,
            search_face_px=cfg.search_face_px,
            min_face_px=cfg.min_face_px,
            detect_face_px=cfg.detect_face_px,
            orientation_search=cfg.orientation_search,
            sampling="segment-centres",
            frames_train=cfg.frames_train,
            frames_val=cfg.frames_val,
            frames_test=cfg.frames_test,
            alignment="similarity-5pt-umeyama",
            template=TEMPLATE_NAME,
            template_points=tuple((round(float(x), 6), round(float(y), 6)) for x, y in TEMPLATE),
            margin=cfg.margin,
            crop_size=cfg.crop_size,
            crop_format=cfg.crop_format,
            crop_jpeg_quality=cfg.jpeg_quality if cfg.crop_format == "jpg" else 0,
        )

    def frames_for(self, split: str, media_kind: str = "video") -> int:
        """Frames sampled from one item of a split; an image has one."""
        if media_kind == "image":
            return 1
        by_split = {"train": self.frames_train, "val": self.frames_val, "test": self.frames_test}
        if split not in by_split:
            raise ValueError(f"unknown split {split!r}: expected one of {sorted(by_split)}")
        return by_split[split]

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))  # tuples as lists, as in the file

    @property
    def hash(self) -> str:
        return _digest(self.to_dict())

    def media_key(self, n_frames: int) -> str:
        """The hash of the contract as it applies to one item: its own frame count, not every split's.

        Extraction results are cached under it, so changing the test split's frame count redoes the
        test videos only, and images (always one frame) are never redone for a frame-count change.
        """
        fields = {k: v for k, v in self.to_dict().items() if not k.startswith("frames_")}
        return _digest({**fields, "frames": n_frames})

    def to_json(self) -> str:
        """The contract and its hash, as the JSON file saved with datasets and models."""
        return json.dumps({**self.to_dict(), "hash": self.hash}, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> PreprocessingContract:
        """Read `to_json` output back, checking the contents against the recorded hash."""
        data = json.loads(text)
        recorded = data.pop("hash", None)
        data["detector_stage_thresholds"] = tuple(data["detector_stage_thresholds"])
        data["template_points"] = tuple(tuple(point) for point in data["template_points"])
        contract = cls(**data)
        if recorded is not None and recorded != contract.hash:
            raise ValueError(f"contract hash {recorded} does not match its contents ({contract.hash})")
        return contract


def _digest(data: dict[str, Any]) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_CHARS]
