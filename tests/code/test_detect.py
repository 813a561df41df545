"""`dfguard detect`: verdicts per file, reports (JSON, confidence timeline, Grad-CAM) kept inside the report
folder whatever the input names, and Grad-CAM on every registered frame backbone."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dfguard.cli import main
from dfguard.inference.gradcam import grad_cam
from dfguard.inference.report import report_folder
from dfguard.models import get_model

FRAME_BACKBONES = ("efficientnet_lite0", "blend_map", "mobilenet_v2", "resnet50", "small_cnn")


def test_detect_prints_a_verdict_per_file_and_writes_reports_inside_the_report_folder(
    trained_detector: tuple[Path, Path], inference_media: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    reports = tmp_path / "reports"
    assert (
        main(["detect", str(inference_media), "--model", str(trained_detector[1]), "--report", str(reports)])
        == 0
    )
    captured = capsys.readouterr()
    # Each line: VERDICT  p(fake)=...  PATH  [drift N px]  [reason]
    lines = {
        Path(next(t for t in line.split() if t.startswith(str(inference_media)))).name: line
        for line in captured.out.splitlines()
    }
    assert re.search(r"  drift \d+\.\d\d px", lines["face.mp4"])  # a video's face track moves
    assert "drift" not in lines["portrait.png"]  # a photo does not
    verdicts = {
        Path(next(t for t in line.split() if t.startswith(str(inference_media)))).name: line.split()[0]
        for line in captured.out.splitlines()
    }
    assert verdicts.keys() == {p.name for p in inference_media.iterdir()}
    tally = sorted((verdict, list(verdicts.values()).count(verdict)) for verdict in set(verdicts.values()))
    summary = ", ".join(f"{verdict} {count}" for verdict, count in tally)
    assert captured.err.strip().endswith(f"judged {len(verdicts)} file(s): {summary}")
    assert "detect:" not in captured.err  # the printed lines are the progress: no bar beside them
    assert verdicts["corrupt.mp4"] == verdicts["empty.mp4"] == "UNREADABLE"
    assert verdicts["room.mp4"] == "NO_FACE" and verdicts["blip.mp4"] == "TOO_SHORT"
    assert verdicts["face.mp4"] in ("FAKE", "REAL", "UNCERTAIN")

    folder = report_folder(reports, inference_media / "face.mp4")
    report = json.loads((folder / "report.json").read_text())
    assert (
        report["file"] == "face.mp4"
        and len(report["frames"]) == 8
        and report["verdict"] == verdicts["face.mp4"]
    )
    timeline = cv2.imread(str(folder / "timeline.png"))
    assert timeline is not None and timeline.std() > 0
    overlays = sorted(folder.glob("gradcam_*.png"))
    assert (
        len(overlays) == 3
        and cv2.imread(str(overlays[0])).shape[1] == 2 * cv2.imread(str(overlays[0])).shape[0]
    )
    unjudged = report_folder(reports, inference_media / "room.mp4")
    assert json.loads((unjudged / "report.json").read_text())["verdict"] == "NO_FACE"
    assert not (unjudged / "timeline.png").exists()
    assert all(p.parent == reports for p in reports.iterdir())


def test_detect_on_a_folder_without_media_is_an_error(
    trained_detector: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "notes.txt").write_text("no media here")
    assert main(["detect", str(tmp_path), "--model", str(trained_detector[1]), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and f"no videos or images under {tmp_path}" in captured.err
    assert "skipped 1 file(s) that are not a supported video or image: notes.txt" in captured.err


def test_detect_on_a_folder_names_the_files_it_skips(
    trained_detector: tuple[Path, Path], inference_media: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "blip.mp4").write_bytes((inference_media / "blip.mp4").read_bytes())
    for name in ("a.psd", "b.txt", "c.svg", "d", "e.doc", "f.xyz", "g.json"):
        (tmp_path / name).write_bytes(b"not judged")
    assert main(["detect", str(tmp_path), "--model", str(trained_detector[1])]) == 0
    captured = capsys.readouterr()
    assert captured.out.split()[0] == "TOO_SHORT" and len(captured.out.splitlines()) == 1
    assert (
        "skipped 7 file(s) that are not a supported video or image: a.psd, b.txt, c.svg, d, e.doc and 2 more"
        in (captured.err)
    )


def test_detect_json_of_a_folder_shows_progress_meanwhile_and_a_tally_after(
    trained_detector: tuple[Path, Path], inference_media: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for name in ("blip.mp4", "corrupt.mp4", "empty.mp4"):
        (tmp_path / name).write_bytes((inference_media / name).read_bytes())
    command = ["detect", str(tmp_path), "--model", str(trained_detector[1]), "--json"]
    assert main(command) == 0
    captured = capsys.readouterr()
    assert [Path(item["file"]).name for item in json.loads(captured.out)] == [
        "blip.mp4",
        "corrupt.mp4",
        "empty.mp4",
    ]
    assert "detect: 100%" in captured.err and "3/3" in captured.err
    assert captured.err.strip().endswith("judged 3 file(s): TOO_SHORT 1, UNREADABLE 2")
    assert main([*command, "--no-progress"]) == 0
    assert "detect:" not in capsys.readouterr().err


def test_report_folders_cannot_escape_or_collide(tmp_path: Path) -> None:
    tricky = report_folder(tmp_path, Path("../../etc/pass wd..mp4"))
    assert tricky.parent == tmp_path and "/" not in tricky.name and not tricky.name.startswith(".")
    assert report_folder(tmp_path, Path("a/clip.mp4")) != report_folder(tmp_path, Path("b/clip.mp4"))
    assert report_folder(tmp_path, Path("..")).parent == tmp_path


def test_detect_json_of_one_file(
    trained_detector: tuple[Path, Path], inference_media: Path, capsys: pytest.CaptureFixture
) -> None:
    assert (
        main(["detect", str(inference_media / "empty.mp4"), "--model", str(trained_detector[1]), "--json"])
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["verdict"] == "UNREADABLE" and printed["reason"] == "empty file"
    assert main(["detect", str(inference_media / "absent.mp4"), "--model", str(trained_detector[1])]) == 2


@pytest.mark.parametrize("name", FRAME_BACKBONES)
def test_grad_cam_is_a_crop_sized_non_constant_map(name: str, face_scenes) -> None:
    # ImageNet weights where packages ship them (EfficientNet-Lite0, MobileNetV2), else random ones: an
    # untrained MobileNetV2 saturates its ReLU6s in eval mode and has no gradient to show.
    torch.manual_seed(0)
    model = get_model(name, input_size=64).train()
    crops = [face_scenes.frame([(who, (112, 112), 90)], size=(224, 224))[0] for who in ("obama", "biden")]
    heat = grad_cam(model, crops)
    assert heat.shape == (2, 224, 224) and heat.dtype == np.float32
    assert heat.min() >= 0 and heat.max() == pytest.approx(1.0) and heat.std() > 0.01
    assert model.training, "Grad-CAM leaves the model in the mode it found it in"
