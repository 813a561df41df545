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
from dfguard.models.clip import WIDTH, clip_onnx_path, token_outputs, unsaturated_graph
from dfguard.models.clip_frozen import CLS_BLOCKS, ClipFrozen, features_of_states
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


class _FrozenHead(nn.Module):
    """`clip_frozen` after its INT8 graph: the token states after each of its blocks -> (logits,
    features)."""

    def __init__(self, model: ClipFrozen) -> None:
        super().__init__()
        self.model = model

    def forward(self, *states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model.judge(features_of_states(states))
        return out.logits, out.features


def _export_frozen_clip(model: ClipFrozen, out: Path) -> None:
    """One graph: the package's INT8 graph (its int8 weights moved to uint8, which gives the same
    products on every CPU, see `models.clip.unsaturated_graph`) feeding the head, exported at the INT8
    graph's opset. Its input is `images`, as every exported detector's."""
    import onnx
    from onnx import compose

    clip = onnx.load_from_string(unsaturated_graph(clip_onnx_path()))
    _, states = token_outputs(clip, CLS_BLOCKS)
    head_inputs = [f"head_block{block}" for block in CLS_BLOCKS]
    opset = next(o.version for o in clip.opset_import if o.domain in ("", "ai.onnx"))
    head_path = out.with_suffix(".head.onnx")
    try:
        torch.onnx.export(
            _FrozenHead(model).eval(),
            tuple(torch.zeros(2, 197, WIDTH) for _ in CLS_BLOCKS),
            str(head_path),
            input_names=head_inputs,
            output_names=["logits", "features"],
            dynamic_axes={name: {0: "batch"} for name in (*head_inputs, "logits", "features")},
            opset_version=opset,
            dynamo=False,
        )
        head = onnx.load(str(head_path))
    finally:
        head_path.unlink(missing_ok=True)
    head.ir_version = clip.ir_version
    merged = compose.merge_models(
        clip,
        head,
        io_map=list(zip(states, head_inputs, strict=True)),
        outputs=["logits", "features"],
    )
    for node in merged.graph.node:
        node.input[:] = ["images" if name == "pixel_values" else name for name in node.input]
    merged.graph.input[0].name = "images"
    onnx.save(merged, str(out))


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
    if isinstance(model, ClipFrozen):
        _export_frozen_clip(model, out)
        return _checked(model, model_dir, out, example, tolerance)
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
    return _checked(model, model_dir, out, example, tolerance)


def _checked(
    model: Detector, model_dir: str | Path, out: Path, example: torch.Tensor, tolerance: float
) -> ExportResult:
    """The export at `out` checked against `model` on `example` (removed if it fails), its config
    beside it."""
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
    # An INT8 graph scales its activations per call: it is run, as the model runs it, one image a call.
    calls = [images[i : i + 1] for i in range(len(images))] if isinstance(model, ClipFrozen) else [images]
    onnx_logits = np.concatenate([session.run(["logits"], {"images": x.numpy()})[0] for x in calls])
    with torch.inference_mode():
        torch_logits = model.eval()(images).logits.numpy()
    return float(np.max(np.abs(onnx_logits - torch_logits)))
