"""The ImageNet weight files shipped in packages load completely and give sane ImageNet predictions."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
import timm
import torch

from dfguard.models import get_model
from dfguard.models.weights import (
    EFFICIENTNET_LITE0_FILE,
    MOBILENET_V2_FILE,
    load_efficientnet_lite0_imagenet,
    shipped_file,
)
from dfguard.transforms import SYMMETRIC_MEAN, SYMMETRIC_STD, Preset, to_tensor

PHOTO = Path(__file__).resolve().parents[2] / "data/raw/sources/face_recognition/obama.jpg"
# ImageNet classes a formal portrait gets: suit, Windsor tie, groom, bow tie.
PORTRAIT_CLASSES = {834, 906, 982, 457}


def _file_tensors(package_and_path: tuple[str, str]) -> list[torch.Tensor]:
    state = torch.load(shipped_file(package_and_path), map_location="cpu", weights_only=True)
    return [v for k, v in state.items() if not k.endswith("num_batches_tracked")]


def _model_tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    return [v for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")]


def test_efficientnet_lite0_weights_fill_every_tensor() -> None:
    model = get_model("efficientnet_lite0")  # pretrained=True is the default
    file_tensors = _file_tensors(EFFICIENTNET_LITE0_FILE)[:-2]  # the file ends with the ImageNet _fc
    model_tensors = _model_tensors(model.backbone)
    assert len(model_tensors) == len(file_tensors) == 245
    for ours, theirs in zip(model_tensors, file_tensors, strict=True):
        assert torch.equal(ours, theirs)
    random_init = get_model("efficientnet_lite0", pretrained=False)
    assert not torch.equal(_model_tensors(random_init.backbone)[0], model_tensors[0])


def test_patch_model_keeps_the_imagenet_weights_of_its_stages() -> None:
    """The patch model is the pretrained Lite0's first stages: same tensors, in the same places."""
    full = get_model("efficientnet_lite0").backbone
    for stage in (3, 4):
        patch = get_model("patch", stage=stage).backbone
        kept = [full.conv_stem, full.bn1, *full.blocks[:stage]]
        expected = [t for module in kept for t in _model_tensors(module)]
        assert len(_model_tensors(patch)) == len(expected)
        for ours, theirs in zip(_model_tensors(patch), expected, strict=True):
            assert torch.equal(ours, theirs)


def test_mobilenet_v2_weights_fill_every_tensor() -> None:
    model = get_model("mobilenet_v2")
    file_tensors = _file_tensors(MOBILENET_V2_FILE)[:-2]  # minus the ImageNet classifier
    model_tensors = _model_tensors(model.backbone)
    assert len(model_tensors) == len(file_tensors) == 260
    for ours, theirs in zip(model_tensors, file_tensors, strict=True):
        assert torch.equal(ours, theirs)


@pytest.mark.skipif(not PHOTO.exists(), reason="the real photo corpus (data/raw) is not pulled")
def test_efficientnet_lite0_imagenet_predictions_are_sane() -> None:
    """With its classifier kept, the network names a formal portrait's clothing, confidently; the same
    network at random init is close to uniform."""
    image = cv2.imread(str(PHOTO))
    x = to_tensor(image, Preset(224, SYMMETRIC_MEAN, SYMMETRIC_STD))[None]
    entropies = {}
    for loaded in (True, False):
        net = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
        if loaded:
            load_efficientnet_lite0_imagenet(net)
        with torch.no_grad():
            probs = net(x).softmax(dim=1)[0]
        entropies[loaded] = float(-(probs * probs.clamp_min(1e-12).log()).sum())
        if loaded:
            assert int(probs.argmax()) in PORTRAIT_CLASSES
    assert entropies[True] < 4.0 < 5.5 < entropies[False]  # uniform over 1000 classes is 6.9
