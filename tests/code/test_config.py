"""Config layering: dataclass defaults < params.yaml < command-line overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dfguard.config import CorpusConfig, load_config, parse_overrides, save_resolved


def _params(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_defaults_without_params_file(tmp_path: Path) -> None:
    cfg = load_config(tmp_path / "missing.yaml")
    assert cfg.corpus == CorpusConfig()


def test_params_override_defaults_and_cli_overrides_params(tmp_path: Path) -> None:
    params = _params(tmp_path, "corpus:\n  seed: 5\n  duration_s: [1.0, 2.5]\ningest:\n  split_seed: 3\n")
    cfg = load_config(params, {"corpus.seed": "9", "ingest.split_ratios": "[0.8, 0.1, 0.1]"})
    assert cfg.corpus.seed == 9
    assert cfg.corpus.duration_s == (1.0, 2.5)
    assert cfg.ingest.split_seed == 3
    assert cfg.ingest.split_ratios == (0.8, 0.1, 0.1)
    assert cfg.corpus.clips_per_identity == CorpusConfig().clips_per_identity


def test_unknown_sections_of_later_stages_are_ignored(tmp_path: Path) -> None:
    cfg = load_config(_params(tmp_path, "train:\n  epochs: 3\ncorpus:\n  seed: 2\n"))
    assert cfg.corpus.seed == 2


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("corpus:\n  sead: 1\n", {}, "unknown setting 'sead'"),
        ("corpus:\n  seed: many\n", {}, "bad value for 'seed'"),
        ("corpus:\n  duration_s: [1.0]\n", {}, "expected 2 items"),
        ("corpus: 3\n", {}, "must be a mapping"),
        ("", {"nosection.seed": "1"}, "expected section"),
        ("", {"corpus.seed": "1.5"}, "bad value"),
    ],
)
def test_bad_settings_are_named_in_the_error(
    tmp_path: Path, text: str, overrides: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(_params(tmp_path, text), overrides)


def test_parse_overrides_rejects_pairs_without_equals() -> None:
    assert parse_overrides(["corpus.seed=3", " ingest.layout = ffpp "]) == {
        "corpus.seed": "3",
        "ingest.layout": "ffpp",
    }
    with pytest.raises(ValueError, match=r"expected section\.field=value"):
        parse_overrides(["corpus.seed"])


def test_resolved_config_is_saved_beside_outputs(tmp_path: Path) -> None:
    cfg = load_config(None, {"corpus.seed": "11"}).corpus
    path = save_resolved(cfg, tmp_path / "out")
    saved = json.loads(path.read_text())
    assert saved["seed"] == 11
    assert saved["fps_choices"] == list(CorpusConfig().fps_choices)
