"""The command line: clear errors for bad input, and each command's output on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from dfguard.cli import main


def test_ingest_of_a_missing_folder_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["--params", str(tmp_path / "none.yaml"), "ingest", str(tmp_path / "nope"), "--no-progress"])
    assert code == 2
    assert "nope" in capsys.readouterr().err


def test_bad_override_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["--params", str(tmp_path / "none.yaml"), "--set", "corpus.seeed=1", "corpus", "build"])
    assert code == 2
    assert "unknown setting 'seeed'" in capsys.readouterr().err


def test_ingest_command_flags_override_params(tmp_path: Path, media) -> None:
    media.video("real/alice/a.mp4")
    media.video("real/bob/b.mp4")
    media.video("fake/FaceSwap/c.mp4")
    media.corrupt("fake/FaceSwap/broken.mp4")
    params = tmp_path / "params.yaml"
    params.write_text("ingest:\n  dataset_dir: /somewhere/else\n  layout: ffpp\n")
    out = tmp_path / "manifest"
    code = main(
        [
            "--params",
            str(params),
            "ingest",
            str(media.root),
            "--out",
            str(out),
            "--layout",
            "generic",
            "--no-progress",
        ]
    )
    assert code == 0
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert sorted(manifest.path) == ["fake/FaceSwap/c.mp4", "real/alice/a.mp4", "real/bob/b.mp4"]
    assert pd.read_csv(out / "skipped.csv").path.tolist() == ["fake/FaceSwap/broken.mp4"]
    assert json.loads((out / "resolved_config.json").read_text())["layout"] == "generic"
