"""The `extract` flow: a real Prefect flow run (temporary server) fanning items out to worker processes,
caching them by content hash + contract, and producing the same dataset as `dfguard extract`."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dfguard.config import ExtractConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def params(tmp_path_factory: pytest.TempPathFactory, face_scenes) -> Path:
    """A params file whose extract section points at two clips and a corrupt file."""
    root = tmp_path_factory.mktemp("extract-flow")
    rows = []
    for k, name in enumerate(("obama", "biden")):
        frames = [face_scenes.frame([(name, (150 + 4 * i, 120), 90)])[0] for i in range(8)]
        face_scenes.video(root / f"clip{k}.mp4", frames)
        rows.append((f"clip{k}.mp4", "train"))
    (root / "broken.mp4").write_bytes(b"\x00garbage" * 300)
    rows.append(("broken.mp4", "test"))
    manifest = pd.DataFrame(
        {
            "video_id": [hashlib.sha256((root / rel).read_bytes()).hexdigest()[:20] for rel, _ in rows],
            "path": [rel for rel, _ in rows],
            "label": "real",
            "method": "",
            "split": [split for _, split in rows],
            "media_kind": "video",
        }
    )
    manifest.to_parquet(root / "manifest.parquet", index=False)
    settings = yaml.safe_load((REPO / "params.yaml").read_text())
    settings["extract"] = {
        **settings["extract"],
        "manifest_path": str(root / "manifest.parquet"),
        "dataset_dir": str(root),
        "out_dir": str(root / "faces"),
        "frames_train": 4,
        "frames_test": 4,
        "workers": 2,
    }
    (root / "params.yaml").write_text(yaml.safe_dump(settings))
    return root / "params.yaml"


def _crop_mtimes(out_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(out_dir)): p.stat().st_mtime_ns for p in (out_dir / "crops").rglob("*.png")}


def test_flow_extracts_in_worker_processes_then_reuses_its_cache(prefect_server: None, params: Path) -> None:
    from pipelines.extract import extract_flow

    out_dir = Path(yaml.safe_load(params.read_text())["extract"]["out_dir"])
    first = extract_flow(params_path=str(params), runner="process", workers=2, record_version=False)
    assert (first["items"], first["extracted"], first["failed"]) == (3, 3, 1)
    faces = pd.read_parquet(out_dir / "faces.parquet")
    assert sorted(faces.path.unique()) == ["clip0.mp4", "clip1.mp4"]
    assert len(faces) == 8 and faces.subject.all()
    failures = pd.read_csv(out_dir / "failures.csv")
    assert failures.path.tolist() == ["broken.mp4"]

    crops = _crop_mtimes(out_dir)
    second = extract_flow(params_path=str(params), runner="process", workers=2, record_version=False)
    assert (second["extracted"], second["cached"]) == (0, 3)
    assert _crop_mtimes(out_dir) == crops, "a cached item was extracted again"

    # An item whose on-disk result is gone is redone (the flow's cache must not claim it exists).
    gone = faces.video_id.iloc[0]
    for cache_file in (out_dir / ".cache").glob(f"{gone}-*"):
        cache_file.unlink()
    third = extract_flow(params_path=str(params), runner="thread", workers=1, record_version=False)
    assert (third["extracted"], third["cached"]) == (1, 2)
    assert pd.read_parquet(out_dir / "faces.parquet").equals(faces)


def test_flow_makes_the_dataset_the_cli_function_makes(
    prefect_server: None, params: Path, tmp_path: Path
) -> None:
    from dfguard.config import load_config
    from dfguard.faces.dataset import run_extract
    from pipelines.extract import extract_flow

    cfg: ExtractConfig = load_config(params).extract
    flowed = extract_flow(params_path=str(params), runner="thread", workers=1, record_version=False)
    direct = run_extract(dataclasses.replace(cfg, out_dir=str(tmp_path / "direct")), progress=False)
    assert flowed["faces"] == direct.faces
    pd.testing.assert_frame_equal(
        pd.read_parquet(Path(cfg.out_dir) / "faces.parquet"), pd.read_parquet(direct.faces_table)
    )


def test_flow_fans_out_on_a_dask_cluster(prefect_server: None, params: Path, tmp_path: Path) -> None:
    from pipelines.extract import extract_flow

    settings = yaml.safe_load(params.read_text())
    settings["extract"]["out_dir"] = str(tmp_path / "faces")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(settings))
    result = extract_flow(
        params_path=str(tmp_path / "params.yaml"), runner="dask", workers=2, record_version=False
    )
    assert (result["extracted"], result["failed"], result["faces"]) == (3, 1, 8)
