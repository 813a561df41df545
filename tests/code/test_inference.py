"""The Predictor on real media: every status, uploads and decoded frames, aggregation, calibrated verdicts,
and the model folders it refuses. The model is a tiny `small_cnn` trained on a tiny face dataset."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy.special import expit

from dfguard.calibration import UNCERTAIN, Calibrator, MotionFusion
from dfguard.config import ExtractConfig
from dfguard.faces.contract import PreprocessingContract
from dfguard.faces.frames import read_sampled
from dfguard.inference.predictor import (
    FACE_TOO_SMALL,
    MIN_VIDEO_FRAMES,
    NO_FACE,
    TOO_SHORT,
    UNREADABLE,
    Predictor,
)
from dfguard.models import Detector, get_model, save_detector
from dfguard.models.scoring import score_crop_files, score_crops, track_clip_logits
from dfguard.transforms import to_batch


def _with_config(model_dir: Path, out: Path, **changes: object) -> Path:
    """A copy of a model folder with top-level config.json keys replaced (None removes one)."""
    shutil.copytree(model_dir, out)
    config = json.loads((out / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_predictor_statuses_on_real_media(trained_detector: tuple[Path, Path], inference_media: Path) -> None:
    predictor = Predictor(trained_detector[1])
    face = predictor.predict(inference_media / "face.mp4")
    assert face.judged and face.verdict in ("FAKE", "REAL", "UNCERTAIN")
    assert 0.0 <= face.probability <= 1.0 and len(face.faces) == 8
    assert {f.status for f in face.frames} == {"OK"}
    assert [f.timestamp_s for f in face.frames] == sorted(f.timestamp_s for f in face.frames)
    assert face.seconds.keys() >= {"decode", "faces", "motion", "classify"}
    assert face.model["contract_hash"] == predictor.contract.hash and len(face.model["weights_sha256"]) == 64
    assert face.temporal_std >= 0 and 0 <= face.flip_rate <= 1 and len(face.features) == 256
    assert face.drift is not None and face.drift >= 0  # 8 frames of one face: its motion is measured
    image = predictor.predict(inference_media / "portrait.png")
    assert image.judged and len(image.frames) == 1
    assert image.drift is None  # a photo has no motion
    assert predictor.predict(inference_media / "tiny_face.mp4").verdict == FACE_TOO_SMALL
    assert predictor.predict(inference_media / "thumbnail.png").verdict == FACE_TOO_SMALL
    assert predictor.predict(inference_media / "room.mp4").verdict == NO_FACE
    assert predictor.predict(inference_media / "blip.mp4").verdict == TOO_SHORT
    for bad in ("corrupt.mp4", "empty.mp4", "missing.mp4"):
        prediction = predictor.predict(inference_media / bad)
        assert prediction.verdict == UNREADABLE and prediction.reason, bad
    assert json.dumps(face.to_dict())  # the report format is plain JSON


def test_too_short_counts_the_videos_frames_not_the_frames_sampled(
    trained_detector: tuple[Path, Path], inference_media: Path
) -> None:
    predictor = Predictor(trained_detector[1])
    few = predictor.predict(inference_media / "face.mp4", n_frames=MIN_VIDEO_FRAMES - 2)
    assert few.judged and len(few.frames) == MIN_VIDEO_FRAMES - 2


def test_uploads_and_decoded_frames_are_judged_like_files(
    trained_detector: tuple[Path, Path], inference_media: Path
) -> None:
    predictor = Predictor(trained_detector[1])
    path = inference_media / "face.mp4"
    expected = predictor.predict(path)
    upload = predictor.predict_bytes(path.read_bytes(), "../../etc/passwd/clip.MP4")
    assert upload.probability == pytest.approx(expected.probability, abs=1e-6)
    sampled = read_sampled(path, predictor.contract.frames_for("test"))
    decoded = predictor.predict_frames(sampled.frames, sampled.indices, sampled.timestamps_s)
    assert decoded.probability == pytest.approx(expected.probability, abs=1e-6)
    assert [f.timestamp_s for f in decoded.frames] == [f.timestamp_s for f in expected.frames]
    assert predictor.predict_bytes(path.read_bytes(), "clip.exe").verdict == UNREADABLE
    assert predictor.predict_bytes(b"", "clip.mp4").verdict == UNREADABLE


def test_an_animated_gif_and_an_iphone_photo_are_judged_like_a_video_and_a_photo(
    trained_detector: tuple[Path, Path], inference_media: Path, tmp_path: Path
) -> None:
    """The face clip re-encoded as a looping GIF (a 256-colour palette, 50 ms a frame) and the portrait
    as HEIF: each is judged from its own frames, whose faces are where the original file's are."""
    predictor = Predictor(trained_detector[1])
    clip = read_sampled(inference_media / "face.mp4", 8)
    pictures = [Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)) for frame in clip.frames]
    gif = tmp_path / "face.gif"
    pictures[0].save(gif, save_all=True, append_images=pictures[1:], duration=50, loop=0)
    judged = predictor.predict(gif)
    assert judged.judged and len(judged.frames) == 8 and {f.status for f in judged.frames} == {"OK"}
    assert [f.timestamp_s for f in judged.frames] == pytest.approx([0.05 * i for i in range(8)])
    original = predictor.predict(inference_media / "face.mp4")
    assert len(judged.faces) == len(original.faces) == 8
    # The GIF's 256-colour palette moves MTCNN's box edges by a few pixels (up to 4.4 of a ~100 px face
    # here); a frame read out of place or at the wrong scale moves them far more.
    offsets = np.abs(np.subtract([f.box for f in judged.faces], [f.box for f in original.faces]))
    assert offsets.mean() < 2 and offsets.max() < 6, offsets
    upload = predictor.predict_bytes(gif.read_bytes(), "reaction.GIF")
    assert upload.probability == pytest.approx(judged.probability, abs=1e-6)

    portrait = cv2.imread(str(inference_media / "portrait.png"))
    heic = tmp_path / "portrait.heic"
    Image.fromarray(cv2.cvtColor(portrait, cv2.COLOR_BGR2RGB)).save(heic, quality=90)
    photo, original_photo = predictor.predict(heic), predictor.predict(inference_media / "portrait.png")
    assert photo.judged and len(photo.frames) == 1
    assert len(photo.faces) == len(original_photo.faces) == 1
    assert np.allclose(photo.faces[0].box, original_photo.faces[0].box, atol=4)


def test_a_large_image_is_judged_shrunk_and_its_faces_are_placed_in_its_own_pixels(
    trained_detector: tuple[Path, Path],
    inference_media: Path,
    tmp_path: Path,
) -> None:
    portrait = cv2.imread(str(inference_media / "portrait.png"))
    height, width = portrait.shape[:2]
    large = tmp_path / "large.png"
    cv2.imwrite(str(large), cv2.resize(portrait, (width * 3, height * 3), interpolation=cv2.INTER_NEAREST))
    original = Predictor(trained_detector[1]).predict(inference_media / "portrait.png")
    # The budget is the portrait's own size: reading brings the large copy back to the portrait.
    judged = Predictor(trained_detector[1], max_frame_pixels=width * height).predict(large)
    assert judged.judged and len(judged.faces) == len(original.faces) == 1
    assert judged.probability == pytest.approx(original.probability, abs=0.02)
    assert np.allclose(judged.faces[0].box, np.array(original.faces[0].box) * 3, atol=3)


def test_a_video_scores_the_most_suspicious_face_per_frame_then_the_models_frame_rule(
    trained_detector: tuple[Path, Path],
) -> None:
    predictor = Predictor(trained_detector[1])
    faces = pd.DataFrame({"video_id": "v", "frame": [0, 0, 1, 2], "logit": [-2.0, 1.0, 0.0, -1.0]})
    assert expit(predictor.video_logits(faces)["logit"].iloc[0]) == pytest.approx(np.mean(expit([1, 0, -1])))
    predictor.aggregation = {"frames": "max"}
    assert predictor.video_logits(faces)["logit"].iloc[0] == pytest.approx(1.0)


def test_a_calibrated_model_scales_its_logits_and_gives_verdicts_by_its_band(
    trained_detector: tuple[Path, Path], inference_media: Path, tmp_path: Path
) -> None:
    uncalibrated = Predictor(trained_detector[1])
    raw = uncalibrated.predict(inference_media / "face.mp4")
    face_logits = uncalibrated.score_crops(raw.crops).logits
    temperature = 2.0
    scaled = float(expit(raw.logit / temperature))

    def calibrated_with(threshold: float) -> Predictor:
        folder = tmp_path / f"calibrated-{threshold:.3f}"
        return Predictor(
            _with_config(trained_detector[1], folder, calibration=_calibrator(temperature, threshold))
        )

    at_threshold = calibrated_with(scaled).predict(inference_media / "face.mp4")
    assert at_threshold.logit == pytest.approx(raw.logit, abs=1e-6)
    assert at_threshold.probability == pytest.approx(scaled, abs=1e-6)
    assert at_threshold.verdict == UNCERTAIN and at_threshold.model["calibrated"]
    assert [f.probability for f in at_threshold.faces] == pytest.approx(
        expit(face_logits / temperature), abs=1e-5
    )
    assert calibrated_with(scaled - 0.2).predict(inference_media / "face.mp4").verdict == "FAKE"
    assert calibrated_with(min(scaled + 0.2, 0.999)).predict(inference_media / "face.mp4").verdict == "REAL"


def _calibrator(temperature: float, threshold: float) -> dict[str, object]:
    return dataclasses.asdict(
        Calibrator(
            temperature=temperature,
            threshold=threshold,
            real_below=threshold - 0.05,
            fake_from=threshold + 0.05,
            target_precision=0.9,
            target_met=True,
            n_validation=10,
            ece_before=0.1,
            ece_after=0.05,
            nll_before=0.5,
            nll_after=0.4,
            uncertain_fraction=0.1,
            decided_accuracy=0.95,
        )
    )


def test_a_photo_is_judged_on_the_photo_calibration_not_on_video_statistics(
    trained_detector: tuple[Path, Path], inference_media: Path, tmp_path: Path
) -> None:
    # The video calibration expects a fused motion logit; a photo has no motion, and is judged by its
    # appearance on the calibration fitted for photos (its own temperature and threshold).
    raw = Predictor(trained_detector[1]).predict(inference_media / "portrait.png")
    fusion = MotionFusion(appearance_weight=0.5, drift_weight=2.0, bias=-1.0, missing_log_drift=-2.0)
    photo_threshold = float(expit(raw.logit / 0.5)) - 0.2  # the photo's appearance is FAKE on it
    model = _with_config(
        trained_detector[1],
        tmp_path / "calibrated",
        calibration=_calibrator(2.0, 0.999),  # nothing is FAKE on the video calibration
        photo_calibration=_calibrator(0.5, photo_threshold),
        motion=dataclasses.asdict(fusion),
    )
    predictor = Predictor(model)
    photo = predictor.predict(inference_media / "portrait.png")
    assert photo.calibration == "photo" and photo.drift is None
    assert photo.logit == pytest.approx(raw.logit, abs=1e-6)  # the appearance alone
    assert photo.probability == pytest.approx(float(expit(raw.logit / 0.5)), abs=1e-6)
    assert photo.verdict == "FAKE"

    video = predictor.predict(inference_media / "face.mp4")
    assert video.calibration == "video" and video.drift is not None
    fused = fusion.fuse(np.array([video.appearance_logit]), np.array([video.drift]))[0]
    # (from the reported, rounded appearance logit and drift)
    assert video.probability == pytest.approx(float(expit(fused / 2.0)), abs=1e-3)
    assert video.verdict == "REAL"

    # Which items the photo calibration judges: a photo always; a video without a drift only when the
    # video calibration expects one (the model fuses motion).
    drift, frames = np.array([np.nan, np.nan, 0.2]), np.array([1, 8, 8])
    assert predictor.judged_as_photo(drift, frames).tolist() == [True, True, False]
    unfused = Predictor(_with_config(model, tmp_path / "unfused", motion=None))
    assert unfused.judged_as_photo(drift, frames).tolist() == [True, False, False]

    # Without a photo calibration (models calibrated before it existed) a photo is judged as before.
    older = Predictor(_with_config(model, tmp_path / "older", photo_calibration=None))
    assert older.predict(inference_media / "portrait.png").calibration == "video"


def test_model_folders_the_predictor_cannot_serve_are_refused(
    trained_detector: tuple[Path, Path], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="contract"):
        Predictor(_with_config(trained_detector[1], tmp_path / "no-contract", contract=None))


def _clip_model() -> Detector:
    return get_model("temporal", frame_model={"name": "small_cnn", "kwargs": {"widths": [4, 8]}}).eval()


def test_a_clip_model_judges_the_face_track_as_one_clip(inference_media: Path, tmp_path: Path) -> None:
    contract = PreprocessingContract.from_config(ExtractConfig())
    model = _clip_model()
    folder = save_detector(model, tmp_path / "temporal", {"contract": contract.to_dict()})
    prediction = Predictor(folder).predict(inference_media / "face.mp4")
    assert prediction.judged and len(prediction.faces) == len(prediction.crops) >= MIN_VIDEO_FRAMES
    assert len({face.track_id for face in prediction.faces}) == 1, "one person on screen"
    in_frame_order = np.argsort([face.frame_index for face in prediction.faces], kind="stable")
    clip = to_batch([prediction.crops[i] for i in in_frame_order], model.preset).unsqueeze(0)
    single = to_batch(prediction.crops, model.preset).unsqueeze(1)
    with torch.no_grad():
        assert prediction.logit == pytest.approx(model(clip).logits.item(), abs=1e-5)
        # Per-face scores are the model's view of each face alone (uncalibrated here: sigmoid).
        alone = expit(model(single).logits.numpy())
    assert [face.probability for face in prediction.faces] == pytest.approx(alone, abs=1e-5)


def test_a_video_is_as_suspicious_as_its_most_suspicious_track() -> None:
    model = _clip_model()
    rng = np.random.default_rng(4)
    crops = [rng.integers(0, 256, (40, 40, 3), np.uint8) for _ in range(5)]
    faces = pd.DataFrame(
        {"video_id": ["v", "v", "v", "v", "w"], "track_id": [0, 1, 0, 1, 0], "frame": [1, 0, 0, 1, 0]}
    )
    scores = score_crops(model, crops)
    logits = track_clip_logits(model, faces, scores.embeddings)

    def clip_logit(rows: list[int]) -> float:
        with torch.no_grad():
            return model(to_batch([crops[r] for r in rows], model.preset).unsqueeze(0)).logits.item()

    # Track 0 of v is rows 2 then 0 in frame order; track 1 is rows 1 then 3.
    assert logits["v"] == pytest.approx(max(clip_logit([2, 0]), clip_logit([1, 3])), abs=1e-5)
    assert logits["w"] == pytest.approx(clip_logit([4]), abs=1e-5)
    # Each face alone is a clip of one, from the same single backbone pass.
    assert scores.logits == pytest.approx([clip_logit([row]) for row in range(5)], abs=1e-5)
    with pytest.raises(ValueError, match="not a clip model"):
        track_clip_logits(get_model("small_cnn"), faces, scores.embeddings)
    with pytest.raises(ValueError, match="need 5, got 4"):
        track_clip_logits(model, faces, scores.embeddings[:4])
    assert score_crops(get_model("small_cnn"), crops).embeddings is None


def test_a_clip_model_runs_its_backbone_once_per_face(inference_media: Path, tmp_path: Path) -> None:
    contract = PreprocessingContract.from_config(ExtractConfig())
    model = _clip_model()
    folder = save_detector(model, tmp_path / "temporal", {"contract": contract.to_dict()})
    predictor = Predictor(folder)
    embedded: list[int] = []
    predictor.model.backbone.register_forward_hook(lambda _m, inputs, _o: embedded.append(len(inputs[0])))
    prediction = predictor.predict(inference_media / "face.mp4")
    assert prediction.judged and sum(embedded) == len(prediction.faces)


def test_crop_files_score_a_batch_at_a_time_like_crops_in_memory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _clip_model()
    rng = np.random.default_rng(5)
    crops = [rng.integers(0, 256, (40, 40, 3), np.uint8) for _ in range(5)]
    paths = []
    for index, crop in enumerate(crops):
        paths.append(str(tmp_path / f"{index}.png"))
        assert cv2.imwrite(paths[-1], crop)
    whole = score_crops(model, crops)
    batched = score_crop_files(model, paths, batch_size=2, progress="score test")
    assert batched.logits == pytest.approx(whole.logits, abs=1e-5)
    assert batched.embeddings is not None and whole.embeddings is not None
    assert batched.embeddings == pytest.approx(whole.embeddings, abs=1e-5)
    bar = capsys.readouterr().err
    assert "score test" in bar and "3/3" in bar, "a labelled bar over the 3 batches"
    score_crop_files(model, paths, batch_size=2)
    assert capsys.readouterr().err == "", "no bar without a label"
    assert len(score_crop_files(model, []).logits) == 0
