"""Find the people in the fetched source photos: one identity per person, with every photo of them."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dfguard.corpus.sources import SOURCES_INDEX
from dfguard.faces.detector import Face, FaceDetector

log = logging.getLogger(__name__)

# Group photos have small false detections (patterns, hands); a real face scores near 1.
MIN_SOURCE_SCORE = 0.95
# The faces found are rounded to this many decimals (of a pixel): a float64 detection that differs in
# its last bits on another CPU then still gives the same corpus, unless it straddles a rounding step.
SOURCE_DECIMALS = 6


@dataclass(frozen=True)
class Appearance:
    photo: str  # path relative to the sources folder
    face: Face


@dataclass(frozen=True)
class Identity:
    name: str
    appearances: tuple[Appearance, ...]


def find_identities(
    sources_dir: Path, min_face_px: int, detector: FaceDetector | None = None
) -> list[Identity]:
    """Detect faces in every fetched photo and group them into identities, sorted by name.

    A photo declared as one person's contributes its largest face to that person; in a group photo
    every face large enough becomes its own identity, named after the photo and its left-to-right rank.
    """
    index = json.loads((sources_dir / SOURCES_INDEX).read_text())
    # Exact (float64): every render of the corpus derives from these landmarks, and float32 MTCNN moves
    # them between CPUs, so another host rendered another corpus and re-trained every model.
    detector = detector or FaceDetector(min_face_px=min(min_face_px, 40), exact=True)
    by_name: dict[str, list[Appearance]] = {}
    for photo in index["photos"]:
        image = cv2.imread(str(sources_dir / photo["file"]))
        if image is None:
            log.warning("source photo %s is unreadable; skipped", photo["file"])
            continue
        faces = [
            _rounded(f)
            for f in detector.detect(image)
            if f.score >= MIN_SOURCE_SCORE and f.height >= min_face_px
        ]
        if not faces:
            log.warning("no face of at least %d px in %s; skipped", min_face_px, photo["file"])
            continue
        if photo["identity"]:
            by_name.setdefault(photo["identity"], []).append(Appearance(photo["file"], faces[0]))
            continue
        stem = Path(photo["file"]).with_suffix("").as_posix().replace("/", "-")
        for rank, face in enumerate(sorted(faces, key=lambda f: float(f.box[0]))):
            by_name[f"{stem}-p{rank}"] = [Appearance(photo["file"], face)]
    return [Identity(name, tuple(apps)) for name, apps in sorted(by_name.items())]


def _rounded(face: Face) -> Face:
    return Face(
        np.round(face.box, SOURCE_DECIMALS),
        np.round(face.landmarks, SOURCE_DECIMALS),
        round(face.score, SOURCE_DECIMALS),
    )
