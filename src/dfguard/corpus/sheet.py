"""A contact sheet of the corpus: real and fake frames side by side, with face close-ups and their
difference, so a person can judge at a glance whether the fakes look like manipulations or noise."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

TILE_W, TILE_H, CROP = 320, 180, 180


def _frame(path: Path, index: int) -> np.ndarray:
    capture = cv2.VideoCapture(str(path))
    capture.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = capture.read()
    capture.release()
    if not ok:
        raise ValueError(f"cannot read frame {index} of {path}")
    return frame


def _face_crop(frame: np.ndarray, box: list[float]) -> np.ndarray:
    x1, y1, x2, y2 = box
    side = 1.3 * max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    matrix = np.array(
        [[CROP / side, 0, CROP / 2 - cx * CROP / side], [0, CROP / side, CROP / 2 - cy * CROP / side]]
    )
    return cv2.warpAffine(frame, matrix, (CROP, CROP), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT)


def _label(image: np.ndarray, text: str) -> np.ndarray:
    out = image.copy()
    cv2.putText(out, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def contact_sheet(
    corpus_dir: Path, entries: list[dict], truth: list[dict], out_path: Path, rows_per_method: int = 3
) -> Path:
    """Write a JPEG grid: per row a real frame, its fake, both face crops and their amplified difference."""
    fakes_by_method: dict[str, list[dict]] = {}
    for entry in entries:
        if entry["label"] == "fake":
            fakes_by_method.setdefault(entry["method"], []).append(entry)
    boxes = {(row["path"], row["frame"]): row["box"] for row in truth}
    frame_counts: dict[str, int] = {}
    for row in truth:
        frame_counts[row["path"]] = max(frame_counts.get(row["path"], 0), row["frame"] + 1)
    rows = []
    for method, fakes in sorted(fakes_by_method.items()):
        step = max(1, len(fakes) // rows_per_method)
        for fake in fakes[::step][:rows_per_method]:
            middle = frame_counts[fake["path"]] // 2
            real_frame = _frame(corpus_dir / fake["original_path"], middle)
            fake_frame = _frame(corpus_dir / fake["path"], middle)
            box = boxes[(fake["path"], middle)]
            real_crop, fake_crop = _face_crop(real_frame, box), _face_crop(fake_frame, box)
            difference = cv2.convertScaleAbs(cv2.absdiff(real_crop, fake_crop), alpha=4)
            tiles = [
                _label(cv2.resize(real_frame, (TILE_W, TILE_H), interpolation=cv2.INTER_AREA), "real"),
                _label(cv2.resize(fake_frame, (TILE_W, TILE_H), interpolation=cv2.INTER_AREA), method),
                _label(real_crop, "real face"),
                _label(fake_crop, "fake face"),
                _label(difference, "|diff| x4"),
            ]
            rows.append(np.hstack(tiles))
    if not rows:
        raise ValueError("no fake clips to show")
    cv2.imwrite(str(out_path), np.vstack(rows), [cv2.IMWRITE_JPEG_QUALITY, 88])
    return out_path
