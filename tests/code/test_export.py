"""`dfguard export onnx`: the graph's outputs match PyTorch's, and the check catches a graph that does not."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

from dfguard.cli import main
from dfguard.export.onnx import OnnxMismatchError, check_onnx, export_onnx
from dfguard.models import get_model, load_detector, save_detector


def test_onnx_export_matches_torch_and_the_check_catches_another_model(
    trained_detector: tuple[Path, Path], tmp_path: Path
) -> None:
    result = export_onnx(trained_detector[1], tmp_path / "model.onnx")
    assert result.max_abs_logit_diff < 1e-3 and result.path.stat().st_size > 0
    config = json.loads((tmp_path / "model.config.json").read_text())
    assert (
        config["contract_hash"]
        == json.loads((trained_detector[1] / "config.json").read_text())["contract_hash"]
    )

    model, _ = load_detector(trained_detector[1])
    images = torch.randn(5, 3, model.preset.input_size, model.preset.input_size)  # another batch size too
    assert check_onnx(model, result.path, images) < 1e-3
    with torch.no_grad():
        model.backbone[0][0].weight.mul_(1.5)  # a model the graph was not exported from
    assert check_onnx(model, result.path, images) > 1e-2


def test_a_failed_check_fails_loudly_and_leaves_no_file(
    trained_detector: tuple[Path, Path], tmp_path: Path
) -> None:
    with pytest.raises(OnnxMismatchError, match="differ"):
        export_onnx(trained_detector[1], tmp_path / "strict.onnx", tolerance=-1.0)
    assert not (tmp_path / "strict.onnx").exists()


def test_export_cli(
    trained_detector: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "onnx" / "model.onnx"
    assert main(["export", "onnx", "--model", str(trained_detector[1]), "--out", str(out)]) == 0
    assert "onnxruntime matches PyTorch" in capsys.readouterr().out and out.is_file()


def test_a_model_with_a_manipulation_map_exports_its_logits(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = get_model("blend_map", input_size=64)
    result = export_onnx(save_detector(model, tmp_path / "blend_map"), tmp_path / "blend_map.onnx")
    assert result.max_abs_logit_diff < 1e-3


def test_the_frozen_clip_detector_exports_as_one_graph_from_images(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = get_model("clip_frozen", head="mlp", hidden=8)
    result = export_onnx(save_detector(model, tmp_path / "clip_frozen"), tmp_path / "clip_frozen.onnx")
    # The package's INT8 graph and the head in one file, fed images as every export is.
    assert result.max_abs_logit_diff < 1e-4 and result.path.stat().st_size > 50_000_000
    graph = onnx.load(str(result.path), load_external_data=False).graph
    assert [i.name for i in graph.input] == ["images"] and [o.name for o in graph.output] == [
        "logits",
        "features",
    ]
