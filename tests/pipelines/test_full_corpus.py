"""The full-size demo corpus against its specification (slow: about 5 minutes on 2 cores)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from dfguard.config import CorpusConfig, IngestConfig
from dfguard.corpus.build import build_corpus
from dfguard.ingest import run_ingest


@pytest.mark.slow
def test_default_corpus_meets_the_specification(tmp_path: Path, sources_dir: Path) -> None:
    result = build_corpus(
        CorpusConfig(sources_dir=str(sources_dir), out_dir=str(tmp_path / "demo")), progress=False
    )
    assert result.clips >= 300 and result.identities >= 20
    assert abs(result.real - result.fake) <= 0.1 * result.clips

    manifest = run_ingest(
        IngestConfig(dataset_dir=str(result.out_dir), out_dir=str(tmp_path / "manifest"))
    ).manifest
    assert len(manifest) == result.clips
    assert manifest.duration_s.between(1.9, 4.1).all()
    assert manifest.fps.between(15, 25).all()
    assert ((manifest.width >= 480) & (manifest.height >= 270)).all()
    fakes = manifest[manifest.label == "fake"]
    assert set(fakes.method) == {"FaceSwap", "SelfBlend"}
    swaps = fakes[fakes.method == "FaceSwap"]
    assert (swaps.source_identity != swaps.target_identity).all()
    people = pd.concat(
        [
            manifest[["split", col]].set_axis(["split", "who"], axis=1)
            for col in ("source_identity", "target_identity")
        ]
    )
    assert people.groupby("who").split.nunique().max() == 1
    assert set(manifest.split) == {"train", "val", "test"}
