"""`dfguard export onnx`: a frame detector as an ONNX graph (images -> logits, features), checked against
PyTorch with onnxruntime before it is accepted. The model's config.json (preprocessing contract,
preset, calibration) is written beside it: the graph alone does not say how to feed it."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dfguard.models.base import Detector, FrameDetector
from dfguard.models.io import CONFIG_NAME, load_detector

CHECK_BATCH = 3
DEFAULT_TOLERANCE = 1e-3  # max |logit difference|: float32 kernels differ in summation order


class OnnxMismatchError(RuntimeError):
    """onnxruntime's outputs differ from PyTorch's by more than the tolerance."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    max_abs_logit_diff: float


class _Outputs(nn.Module):
    """The detector's outputs as a plain tuple: ONNX graphs have named tensors, not NamedTuples."""

    def __init__(self, model: Detector) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(images)
        return out.logits, out.features


def export_onnx(
    model_dir: str | Path, out_path: str | Path, tolerance: float = DEFAULT_TOLERANCE
) -> ExportResult:
    """Export and check; raises OnnxMismatchError (and removes the file) when the check fails."""
    model, _ = load_detector(model_dir)
    if not isinstance(model, FrameDetector):
        raise ValueError(f"only frame detectors export to ONNX, not {type(model).__name__}")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    size = model.preset.input_size
    example = torch.randn(CHECK_BATCH, 3, size, size, generator=torch.Generator().manual_seed(0))
    wrapper = _Outputs(model).eval()
    torch.onnx.export(
        wrapper,
        (example,),
        str(out),
        input_names=["images"],
        output_names=["logits", "features"],
        dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=1024)}},
        dynamo=True,
        external_data=False,
    )
    try:
        diff = check_onnx(model, out, example)
        if diff > tolerance:
            raise OnnxMismatchError(f"onnxruntime logits differ from PyTorch by {diff:.2e} > {tolerance:.0e}")
    except Exception:
        out.unlink(missing_ok=True)
        raise
    shutil.copy(Path(model_dir) / CONFIG_NAME, out.with_suffix(".config.json"))
    return ExportResult(out, diff)


def check_onnx(model: Detector, onnx_path: Path, images: torch.Tensor) -> float:
    """Max |logit difference| between the ONNX graph in onnxruntime and `model` in PyTorch on `images`."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (onnx_logits, _) = session.run(None, {"images": images.numpy()})
    with torch.inference_mode():
        torch_logits = model.eval()(images).logits.numpy()
    return float(np.max(np.abs(onnx_logits - torch_logits)))
