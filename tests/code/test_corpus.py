"""The demo corpus: planning, manipulations and rendering, on the real fetched face photos."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from dfguard.config import CorpusConfig
from dfguard.corpus.build import plan_clips, swap_groups
from dfguard.corpus.identities import Identity
from dfguard.corpus.manipulate import colour_transfer, face_oval_mask, face_swap, self_blend
from dfguard.corpus.render import render_pair
from dfguard.corpus.sources import SOURCES_INDEX
from dfguard.faces.detector import FaceDetector
from dfguard.media import probe_media


def test_identities_are_found_in_the_shipped_photos(identities: list[Identity]) -> None:
    names = [identity.name for identity in identities]
    assert len(names) >= 20, names
    assert len(set(names)) == len(names)
    obama = next(identity for identity in identities if identity.name == "obama")
    assert len(obama.appearances) == 3  # three photos of one person make one identity
    for identity in identities:
        for appearance in identity.appearances:
            assert appearance.face.height >= 100
            assert appearance.face.landmarks.shape == (5, 2)


@pytest.mark.parametrize("count", [2, 3, 7, 10])
def test_swap_groups_are_pairs_or_one_triple(count: int) -> None:
    names = [f"p{i}" for i in range(count)]
    groups = swap_groups(names, seed=3)
    assert sorted(n for group in groups for n in group) == sorted(names)
    sizes = Counter(len(group) for group in groups)
    assert set(sizes) <= {2, 3} and sizes[3] == count % 2


def test_plan_is_deterministic_balanced_and_swaps_inside_groups(identities: list[Identity]) -> None:
    cfg = CorpusConfig(clips_per_identity=4)
    plans = plan_clips(identities, cfg)

    def summary(plan: object) -> tuple:
        return tuple(
            getattr(plan, k) for k in ("clip_name", "method", "source_identity", "fps", "crf", "seed")
        )

    assert [summary(p) for p in plans] == [summary(p) for p in plan_clips(identities, cfg)]
    assert len(plans) == 4 * len(identities)
    methods = Counter(plan.method for plan in plans)
    assert abs(methods["FaceSwap"] - methods["SelfBlend"]) <= len(identities) % 2 * 4
    group_of = {
        name: i
        for i, group in enumerate(swap_groups(sorted(i.name for i in identities), cfg.seed))
        for name in group
    }
    for plan in plans:
        assert cfg.fps_choices.count(plan.fps) == 1 and plan.crf in cfg.crf_choices
        assert cfg.duration_s[0] * plan.fps - 1 <= plan.n_frames <= cfg.duration_s[1] * plan.fps + 1
        if plan.method == "FaceSwap":
            assert plan.source_identity != plan.identity
            assert group_of[plan.source_identity] == group_of[plan.identity]
        else:
            assert plan.source_identity == plan.identity
    assert len({plan.real_path for plan in plans}) == len(plans)
    assert len({plan.fake_path for plan in plans}) == len(plans)


def test_plan_needs_two_people(identities: list[Identity]) -> None:
    with pytest.raises(ValueError, match="at least 2 identities"):
        plan_clips(identities[:1], CorpusConfig())


def _still(sources_dir: Path, identity: Identity) -> tuple[np.ndarray, np.ndarray]:
    appearance = identity.appearances[0]
    image = cv2.imread(str(sources_dir / appearance.photo))
    x1, y1, x2, y2 = appearance.face.box.astype(int)
    pad = (y2 - y1) // 2
    top, left = max(0, y1 - pad), max(0, x1 - pad)
    still = image[top : y2 + pad, left : x2 + pad].copy()
    return still, appearance.face.landmarks - [left, top]


def test_oval_mask_is_soft_and_covers_the_inner_face(sources_dir: Path, identities: list[Identity]) -> None:
    still, landmarks = _still(sources_dir, identities[0])
    mask = face_oval_mask(landmarks, still.shape[:2], np.random.default_rng(0))
    assert mask.dtype == np.float32 and mask.min() >= 0 and mask.max() <= 1
    for x, y in landmarks.round().astype(int):
        assert mask[y, x] > 0.9  # eyes, nose and mouth are inside
    assert mask[0, 0] == 0 and mask[-1, -1] == 0  # corners of the crop are outside
    assert ((mask > 0.05) & (mask < 0.95)).sum() > 0.05 * (mask > 0.05).sum()  # a feathered edge


def test_colour_transfer_matches_the_target_statistics() -> None:
    rng = np.random.default_rng(1)
    source = rng.integers(0, 120, (64, 64, 3), dtype=np.uint8)
    target = rng.integers(100, 255, (64, 64, 3), dtype=np.uint8)
    mask = np.ones((64, 64), np.float32)
    matched = colour_transfer(source, target, mask)
    lab = [cv2.cvtColor(image, cv2.COLOR_BGR2LAB).reshape(-1, 3).mean(axis=0) for image in (matched, target)]
    assert np.abs(lab[0] - lab[1]).max() < 3


@pytest.mark.parametrize("method", ["FaceSwap", "SelfBlend"])
def test_manipulations_change_the_face_and_leave_the_rest(
    sources_dir: Path, identities: list[Identity], method: str
) -> None:
    still, landmarks = _still(sources_dir, identities[0])
    rng = np.random.default_rng(4)
    if method == "FaceSwap":
        other, other_landmarks = _still(sources_dir, identities[1])
        layer, alpha = face_swap(
            still, landmarks.astype(np.float32), other, other_landmarks.astype(np.float32), rng
        )
    else:
        layer, alpha = self_blend(still, landmarks.astype(np.float32), rng)
    fake = still * (1 - alpha[..., None]) + layer * alpha[..., None]
    change = np.abs(fake - still.astype(np.float32)).mean(axis=2)
    assert change[alpha > 0.5 * alpha.max()].mean() > 4  # the face visibly changed
    assert change[alpha == 0].max() == 0  # nothing outside the mask did


def test_render_pair_writes_matching_real_and_fake_clips(
    tmp_path: Path, sources_dir: Path, identities: list[Identity]
) -> None:
    cfg = CorpusConfig(clips_per_identity=2, duration_s=(1.0, 1.2))
    plan = next(p for p in plan_clips(identities[:4], cfg) if p.method == "FaceSwap")
    truth = render_pair(plan, sources_dir, tmp_path)
    real, fake = probe_media(tmp_path / plan.real_path), probe_media(tmp_path / plan.fake_path)
    assert (real.width, real.height, real.fps, real.frame_count) == (640, 360, plan.fps, plan.n_frames)
    assert (fake.width, fake.height, fake.frame_count) == (real.width, real.height, real.frame_count)
    assert len(truth) == 2 * plan.n_frames

    # The real face detector finds the face where the ground truth says it is, in both clips.
    detector = FaceDetector()
    for rel in (plan.real_path, plan.fake_path):
        capture = cv2.VideoCapture(str(tmp_path / rel))
        ok, frame = capture.read()
        capture.release()
        assert ok
        faces = detector.detect(frame)
        expected = np.array(next(t["box"] for t in truth if t["path"] == rel and t["frame"] == 0))
        assert faces, rel
        centre = (faces[0].box[:2] + faces[0].box[2:]) / 2
        assert np.abs(centre - (expected[:2] + expected[2:]) / 2).max() < 0.2 * (expected[3] - expected[1])


_DETECT = """
import json, sys
import cv2
from dfguard.faces.detector import FaceDetector
faces = FaceDetector(min_face_px=40, exact=sys.argv[2] == "exact").detect(cv2.imread(sys.argv[1]))
print(json.dumps([[float(v) for v in [*f.box, *f.landmarks.ravel()]] for f in faces]))
"""


def _faces_under(isa: str, photo: Path, mode: str) -> list[list[float]]:
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": isa}
    done = subprocess.run(
        [sys.executable, "-c", _DETECT, str(photo), mode], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def test_the_corpus_sees_the_same_faces_on_any_cpu(sources_dir: Path) -> None:
    # oneDNN picks its convolution kernels by the CPU's vector width; capping it at AVX2 on this machine
    # stands in for a host without AVX-512. The corpus's detections (float64) must not move; float32
    # ones do where this CPU has AVX-512, which is what made every host render its own corpus.
    photo = sources_dir / json.loads((sources_dir / SOURCES_INDEX).read_text())["photos"][0]["file"]
    exact = _faces_under("ALL", photo, "exact")
    assert exact and exact == _faces_under("AVX2", photo, "exact")
    if "avx512f" in Path("/proc/cpuinfo").read_text():
        assert _faces_under("ALL", photo, "float32") != _faces_under("AVX2", photo, "float32")
