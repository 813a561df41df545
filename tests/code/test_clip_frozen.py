"""`clip_frozen`: the feature store, the `embed` stage (incremental, exact), and a head trained on the
cached features that serves the same numbers from the crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dfguard.config import EmbedConfig, TrainConfig
from dfguard.faces.crops import read_crop
from dfguard.faces.table import read_faces
from dfguard.inference.gradcam import grad_cam
from dfguard.models import get_model, load_detector
from dfguard.models.clip import clip_preset
from dfguard.models.clip_frozen import (
    CLS_BLOCKS,
    FEATURE_DIM,
    ClipInt8Backbone,
    backbone_id,
    feature_store,
    features_of_states,
)
from dfguard.models.features import FeatureStore, input_key, use_store
from dfguard.models.scoring import score_crop_files
from dfguard.training.data import load_faces
from dfguard.training.embed import read_variants, run_embed, sbi_variant
from dfguard.training.run import train_detector
from dfguard.transforms import to_batch


def test_the_store_appends_new_keys_only_and_refuses_another_backbones_features(tmp_path) -> None:
    store = FeatureStore(tmp_path / "store", "backbone A", 4)
    assert len(store) == 0
    rows = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert store.add(["a", "b", "c"], rows) == 3
    assert store.add(["b", "d"], rows[:2] + 100) == 1  # b is kept as it was
    found, features = FeatureStore(tmp_path / "store", "backbone A", 4).lookup(["d", "x", "b"])
    assert found.tolist() == [True, False, True]
    np.testing.assert_array_equal(features, np.stack([rows[1] + 100, rows[1]]))
    with pytest.raises(ValueError, match="backbone A"):
        FeatureStore(tmp_path / "store", "backbone B", 4).lookup(["a"])
    # Its owner, finding another layout there, starts afresh; the same layout is kept.
    assert not FeatureStore(tmp_path / "store", "backbone A", 4).discard_if_other()
    assert FeatureStore(tmp_path / "store", "backbone B", 4).discard_if_other()
    assert len(FeatureStore(tmp_path / "store", "backbone B", 4)) == 0


def test_the_int8_features_of_every_block_match_the_fp32_twins(face_scenes) -> None:
    """The INT8 path (what training and serving read) and the fp32 twin (what Grad-CAM explains)
    compute the same features block by block: each 768-value slice above 0.95 cosine on real faces
    (different faces sit near 0.6)."""
    crops = [face_scenes.frame([(who, (112, 112), 90)], size=(224, 224))[0] for who in ("obama", "biden")]
    pixels = to_batch(crops, clip_preset())
    int8 = ClipInt8Backbone().encode(pixels.numpy())
    with torch.no_grad():
        twin = get_model("clip_frozen").gradient_twin()
        fp32 = features_of_states(twin.tower.forward_blocks(pixels, CLS_BLOCKS)).numpy()
    assert int8.shape == fp32.shape == (len(crops), FEATURE_DIM)
    for start in range(0, FEATURE_DIM, 768):
        a, b = int8[:, start : start + 768], fp32[:, start : start + 768]
        cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert cosine.min() > 0.95, (start // 768, cosine)


def test_a_key_is_the_exact_input_of_one_backbone() -> None:
    pixels = np.zeros((3, 8, 8), np.float32)
    changed = pixels.copy()
    changed[0, 0, 0] = 1e-6
    assert input_key(pixels, "A") == input_key(pixels.copy(), "A")
    assert input_key(pixels, "A") != input_key(changed, "A")
    assert input_key(pixels, "A") != input_key(pixels, "B")


def test_a_self_blend_variant_is_a_function_of_the_crop_alone() -> None:
    crop = np.random.default_rng(3).integers(0, 255, (96, 96, 3), np.uint8)
    first, again, other = (
        sbi_variant(crop, 0, 1.3),
        sbi_variant(crop.copy(), 0, 1.3),
        sbi_variant(crop, 1, 1.3),
    )
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other) and not np.array_equal(first, crop)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, face_dataset):
    """(face dataset, feature store folder, first run's result): `dfguard embed` over a tiny dataset."""
    root = tmp_path_factory.mktemp("embed")
    faces_dir = face_dataset(root / "faces", videos_per_split=4, frames=2)
    cfg = EmbedConfig(faces_dir=str(faces_dir), out_dir=str(root / "features"), sbi_variants=2)
    return faces_dir, root / "features", run_embed(cfg, progress=False)


def test_embed_caches_every_crop_and_two_self_blends_of_each_real_then_computes_nothing_again(
    embedded,
) -> None:
    faces_dir, features_dir, first = embedded
    faces = read_faces(faces_dir)
    reals = int((faces["target"] == 0).sum())
    assert (first.crops, first.self_blends, first.computed) == (len(faces), 2 * reals, len(faces) + 2 * reals)
    assert len(read_variants(features_dir)) == 2 * reals
    again = run_embed(
        EmbedConfig(faces_dir=str(faces_dir), out_dir=str(features_dir), sbi_variants=2), progress=False
    )
    assert again.computed == 0


def test_cached_features_are_the_ones_the_backbone_computes(embedded) -> None:
    faces_dir, features_dir, _ = embedded
    paths = [str(faces_dir / crop) for crop in read_faces(faces_dir)["crop"][:3]]
    backbone = ClipInt8Backbone()
    batch = to_batch([read_crop(p) for p in paths], clip_preset()).numpy()
    _, cached, computed = backbone.features_of(batch, feature_store(features_dir))
    assert not computed.any()
    np.testing.assert_allclose(cached, backbone.encode(batch), rtol=1e-5, atol=1e-5)
    assert cached.shape == (3, FEATURE_DIM) and backbone_id().startswith("clip_vit_b16 int8")


def test_a_head_trains_on_the_cached_features_and_serves_the_same_scores_from_crops(
    embedded, tmp_path
) -> None:
    faces_dir, features_dir, _ = embedded
    cfg = TrainConfig(
        faces_dir=str(faces_dir),
        features_dir=str(features_dir),
        out_dir=str(tmp_path / "model"),
        checkpoint_dir=str(tmp_path / "checkpoints"),
        model="clip_frozen",
        input_size=224,
        head="mlp",
        head_hidden=16,
        head_epochs=5,
    )
    result = train_detector(cfg, progress=False)
    assert result.epochs_run == 5 and 1 <= result.best_epoch <= 5
    weights = load_file(str(result.model_dir / "model.safetensors"))
    # The head and its standardisation only: the backbone is the package's graph, never copied in.
    assert sum(t.numel() for t in weights.values()) == 2 * FEATURE_DIM + FEATURE_DIM * 16 + 16 + 16 + 1
    model, config = load_detector(result.model_dir)
    assert config["model"]["kwargs"]["head"] == "mlp"
    paths = load_faces(faces_dir, "val")["crop_path"].tolist()
    use_store(None)
    computed = score_crop_files(model, paths).logits
    use_store(features_dir)
    try:
        cached = score_crop_files(model, paths).logits
    finally:
        use_store(None)
    np.testing.assert_allclose(cached, computed, rtol=1e-4, atol=1e-4)
    assert float(model.feature_scale.min()) > 0


def test_clip_frozen_reads_224_px_crops_only_and_names_its_heads() -> None:
    with pytest.raises(ValueError, match=r"train\.input_size=224"):
        get_model("clip_frozen", input_size=128)
    with pytest.raises(ValueError, match="linear, mlp"):
        get_model("clip_frozen", head="transformer")


def test_grad_cam_explains_the_frozen_model_through_its_fp32_twin(face_scenes) -> None:
    torch.manual_seed(0)
    model = get_model("clip_frozen")
    crops = [face_scenes.frame([(who, (112, 112), 90)], size=(224, 224))[0] for who in ("obama", "biden")]
    twin_logits = model.gradient_twin()(to_batch(crops, clip_preset()))[0].logits.detach()
    int8_logits = model(to_batch(crops, clip_preset())).logits
    # The twin is the same detector in fp32: the head's call agrees with the INT8 graph's.
    np.testing.assert_allclose(twin_logits.numpy(), int8_logits.detach().numpy(), atol=0.5)
    heat = grad_cam(model, crops)
    assert heat.shape == (2, 224, 224) and heat.dtype == np.float32
    assert heat.min() >= 0 and heat.max() == pytest.approx(1.0) and heat.std() > 0.01
    assert not any(p.grad is not None for p in model.parameters()), "nothing accumulates on the model"


def test_features_a_process_already_computed_still_reach_a_new_store(embedded, tmp_path) -> None:
    faces_dir, _, _ = embedded  # this process computed every crop's features already
    fresh = run_embed(
        EmbedConfig(faces_dir=str(faces_dir), out_dir=str(tmp_path / "fresh"), sbi_variants=0), False
    )
    assert fresh.computed == fresh.crops == len(FeatureStore(tmp_path / "fresh", backbone_id(), FEATURE_DIM))
