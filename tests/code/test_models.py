"""The detector registry and interface: every model trains a step, freezes, saves and loads."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from dfguard.models import (
    DEFAULT_MODEL,
    Detector,
    DetectorOutput,
    freeze_backbone,
    get_model,
    list_models,
    load_detector,
    register_model,
    save_detector,
)
from dfguard.models.ensemble import EnsembleDetector
from dfguard.models.frame import SmallCNN
from dfguard.models.io import start_from
from dfguard.transforms import to_batch

SIZE = 64
TINY_CNN = {"name": "small_cnn", "kwargs": {"widths": [8, 16]}}
# Settings that keep every model small and offline for shape tests (the ImageNet files are tested apart).
TINY_CONFIGS: dict[str, dict] = {
    "efficientnet_lite0": {"pretrained": False},
    "blend_map": {"pretrained": False},
    "patch": {"pretrained": False},
    "mobilenet_v2": {"pretrained": False},
    "resnet50": {},
    "small_cnn": {"widths": [8, 16, 32]},
    "clip_vit_b16": {"pretrained": False, "tune_backbone": True, "input_size": SIZE},
    "clip_frozen": {},  # no weights below its head: the INT8 graph ships in a package (224 px only)
    "temporal": {"frame_model": TINY_CNN, "hidden": 8},
    "ensemble": {"members": [TINY_CNN, {"name": "small_cnn", "kwargs": {"widths": [4, 8]}}]},
}


def _inputs(name: str, batch: int = 2, generator: torch.Generator | None = None) -> torch.Tensor:
    size = 224 if name == "clip_frozen" else SIZE
    shape = (batch, 3, 3, size, size) if name == "temporal" else (batch, 3, size, size)
    return torch.randn(shape, generator=generator)


def test_builtin_models_are_registered() -> None:
    assert set(TINY_CONFIGS) <= set(list_models())
    assert DEFAULT_MODEL == "efficientnet_lite0"


def test_duplicate_registration_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("small_cnn")(SmallCNN)


def test_unknown_name_lists_registered_models() -> None:
    with pytest.raises(ValueError, match="unknown model 'nope'") as info:
        get_model("nope")
    for name in list_models():
        assert name in str(info.value)


def test_unknown_setting_raises() -> None:
    with pytest.raises(ValueError, match="small_cnn"):
        get_model("small_cnn", depth=3)


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_forward_and_one_training_step(name: str) -> None:
    torch.manual_seed(0)
    model = get_model(name, **TINY_CONFIGS[name])
    assert isinstance(model, Detector)
    assert model.config["name"] == name
    json.dumps(model.config)  # rebuildable from plain JSON
    model.train()
    out = model(_inputs(name))
    assert isinstance(out, DetectorOutput)
    assert out.logits.shape == (2,) and out.probability.shape == (2,)
    assert out.features.shape == (2, model.feature_dim)
    torch.testing.assert_close(out.probability, torch.sigmoid(out.logits))

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    head_before = [p.detach().clone() for p in model.head_parameters()]
    loss = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, torch.tensor([0.0, 1.0]))
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(head_before, model.head_parameters(), strict=True))
    assert all(p.grad is not None for p in model.backbone_parameters())  # every parameter is used


def test_temporal_attention_pooling_and_shape_checks() -> None:
    model = get_model("temporal", frame_model=TINY_CNN, pooling="attention", hidden=8)
    assert model(_inputs("temporal", batch=3)).logits.shape == (3,)
    with pytest.raises(ValueError, match="clips"):
        model(_inputs("small_cnn"))
    with pytest.raises(ValueError, match="pooling"):
        get_model("temporal", frame_model=TINY_CNN, pooling="max")


def test_ensemble_rejects_members_with_different_input_sizes() -> None:
    members = [TINY_CNN, {"name": "small_cnn", "kwargs": {"widths": [8], "input_size": 128}}]
    with pytest.raises(ValueError, match="input size"):
        get_model("ensemble", members=members)


def test_ensemble_feeds_each_member_its_own_normalisation() -> None:
    """EfficientNet-Lite0 expects [-1, 1] inputs, the small CNN ImageNet statistics: each member must see
    exactly what its own preset makes of the crop."""
    torch.manual_seed(0)
    lite = {"name": "efficientnet_lite0", "kwargs": {"pretrained": False, "input_size": SIZE}}
    cnn = {"name": "small_cnn", "kwargs": {"widths": [8, 16], "input_size": SIZE}}
    model = get_model("ensemble", members=[lite, cnn]).eval()
    crop = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    with torch.no_grad():
        logits, _ = model.member_outputs(to_batch([crop], model.preset))
        for k, member in enumerate(model.backbone):
            own = member(to_batch([crop], member.preset)).logits
            torch.testing.assert_close(logits[:, k], own, rtol=1e-4, atol=1e-4)


def test_freeze_backbone_trains_only_the_head() -> None:
    torch.manual_seed(0)
    model = get_model("small_cnn", widths=[8, 16])
    freeze_backbone(model, True)
    model.train()
    assert not model.backbone.training and model.head.training  # BatchNorm statistics stay fixed
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = [p.detach().clone() for p in model.head_parameters()]
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    out = model(_inputs("small_cnn"))
    torch.nn.functional.binary_cross_entropy_with_logits(out.logits, torch.tensor([0.0, 1.0])).backward()
    optimizer.step()
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, backbone_before[key]), key
    assert any(not torch.equal(a, b) for a, b in zip(head_before, model.head_parameters(), strict=True))

    freeze_backbone(model, False)
    assert all(p.requires_grad for p in model.backbone_parameters())
    assert model.train().backbone.training


def test_ensemble_gate_learns_to_trust_the_informative_member() -> None:
    torch.manual_seed(0)
    model = get_model("ensemble", members=TINY_CONFIGS["ensemble"]["members"])
    assert isinstance(model, EnsembleDetector)
    labels = torch.randint(0, 2, (400,))
    informative = (labels * 2 - 1) * 3.0 + torch.randn(400)
    member_logits = torch.stack([informative, 4 * torch.randn(400)], dim=1)
    features = torch.randn(400, model.feature_dim)
    with torch.no_grad():
        before = torch.nn.functional.binary_cross_entropy_with_logits(
            model.head(member_logits, features), labels.float()
        )
    after = model.fit_gate(member_logits, features, labels, steps=150, lr=0.05)
    assert after < 0.5 * float(before)


def _assert_pure_safetensors(path: Path) -> None:
    """A safetensors file is an 8-byte header length, a JSON header, then raw tensor bytes; nothing
    in it can run code on load (no pickle opcodes to interpret)."""
    data = path.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    assert 8 + header_len + max(ends) == len(data)  # every byte is the header or tensor data


@pytest.mark.parametrize("name", ["small_cnn", "temporal", "ensemble", "efficientnet_lite0", "clip_frozen"])
def test_save_load_round_trip(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = get_model(name, **TINY_CONFIGS[name]).eval()
    contract = {"preprocessing": {"crop_size": 224, "margin": 1.3, "hash": "abc"}}
    folder = save_detector(model, tmp_path / "model", extra_config=contract)
    _assert_pure_safetensors(folder / "model.safetensors")

    loaded, config = load_detector(folder)
    assert config["preprocessing"] == contract["preprocessing"]
    assert config["model"] == json.loads(json.dumps(model.config))
    assert config["preset"] == model.preset.to_dict()
    assert not loaded.training
    x = _inputs(name, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = model(x), loaded(x)
    for a, b in zip(expected, got, strict=True):
        assert (a is None and b is None) or torch.equal(a, b)


def test_saving_the_same_weights_writes_the_same_bytes(tmp_path: Path) -> None:
    """DVC and the registry tell models apart by file digests: a re-save must not change them."""
    torch.manual_seed(0)
    model = get_model("small_cnn", widths=[4])
    files = {
        save_detector(model, tmp_path / str(i)).joinpath("model.safetensors").read_bytes() for i in range(8)
    }
    assert len(files) == 1


def _damage(folder: Path, how: str) -> None:
    config = json.loads((folder / "config.json").read_text())
    if how == "no weights":
        (folder / "model.safetensors").unlink()
    elif how == "truncated weights":
        (folder / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:100])
    elif how == "config not JSON":
        (folder / "config.json").write_text("{half a")
    elif how == "config without a model":
        (folder / "config.json").write_text(json.dumps({"preset": config["preset"]}))
    elif how == "other architecture":
        config["model"]["kwargs"]["widths"] = [4, 8]
        (folder / "config.json").write_text(json.dumps(config))
    elif how == "other widths":
        config["model"]["kwargs"]["widths"] = [6]
        (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("how", "error", "message"),
    [
        ("no weights", FileNotFoundError, "is not a model folder: it has no model.safetensors"),
        ("truncated weights", ValueError, "model.safetensors is not a readable safetensors file"),
        ("config not JSON", ValueError, "config.json is not valid JSON"),
        ("config without a model", ValueError, "config.json does not name a model"),
        ("other architecture", ValueError, "tensors missing"),
        ("other widths", ValueError, "does not fit the small_cnn its config.json describes"),
    ],
)
def test_a_damaged_model_folder_says_which_file_is_wrong(
    tmp_path: Path, how: str, error: type[Exception], message: str
) -> None:
    """A folder copied half-way or edited by hand: a clear error naming the file, not a parser's trace."""
    folder = save_detector(get_model("small_cnn", widths=[4]), tmp_path / "model")
    _damage(folder, how)
    with pytest.raises(error, match=message):
        load_detector(folder)


def test_save_rejects_reserved_extra_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="extra_config"):
        save_detector(get_model("small_cnn", widths=[4]), tmp_path, extra_config={"model": {}})


def test_resnet50_user_weights_load_and_are_not_needed_to_reload(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = get_model("resnet50", channels_last=False)
    weights = tmp_path / "resnet50-user.safetensors"
    state = {k: v.contiguous() for k, v in source.backbone.state_dict().items()}
    state["fc.weight"] = torch.zeros(1000, 2048)  # an ImageNet classifier the detector drops
    save_file(state, str(weights))

    model = get_model("resnet50", weights_path=str(weights))
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key

    folder = save_detector(model.eval(), tmp_path / "saved")
    weights.unlink()  # a serving machine does not have the user's initial file
    loaded, _ = load_detector(folder)
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(model(x).logits, loaded(x).logits)


def test_a_model_starts_from_a_saved_copy_of_itself_or_from_its_frame_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    saved = save_detector(get_model(TINY_CNN["name"], **TINY_CNN["kwargs"]), tmp_path / "frame")
    source = load_detector(saved)[0].state_dict()
    torch.manual_seed(1)  # other initial weights, so a copy is visible
    same = get_model(TINY_CNN["name"], **TINY_CNN["kwargs"])
    start_from(same, saved)
    assert all(torch.equal(same.state_dict()[k], v) for k, v in source.items())
    clip = get_model("temporal", frame_model=TINY_CNN, hidden=8)
    head_before = [p.clone() for p in clip.head.parameters()]
    start_from(clip, saved)
    backbone = {k.removeprefix("backbone."): v for k, v in source.items() if k.startswith("backbone.")}
    assert all(torch.equal(clip.backbone.state_dict()[k], v) for k, v in backbone.items())
    assert all(torch.equal(a, b) for a, b in zip(head_before, clip.head.parameters(), strict=True))
    with pytest.raises(ValueError, match="can start the same model"):
        start_from(get_model("small_cnn", widths=[8, 32]), saved)


def test_patch_model_scores_patches_smaller_than_the_face() -> None:
    """Each location of the patch model's last feature map sees a patch of the crop, not all of it: a
    change in one corner leaves the far corner's features as they were (the whole network would not)."""
    torch.manual_seed(0)
    model = get_model("patch", pretrained=False, stage=3, input_size=128).eval()
    image = torch.randn(1, 3, 128, 128)
    changed = image.clone()
    changed[..., 96:, 96:] = torch.randn(1, 3, 32, 32)
    feature_maps = model.backbone[:-2]  # before pooling
    with torch.no_grad():
        before, after = feature_maps(image), feature_maps(changed)
    assert before.shape[-2:] == (16, 16)  # stage 3: stride 8
    torch.testing.assert_close(before[..., :4, :4], after[..., :4, :4])
    assert not torch.allclose(before[..., -2:, -2:], after[..., -2:, -2:])
    with pytest.raises(ValueError, match="stage must be within"):
        get_model("patch", pretrained=False, stage=8)
