"""Config layering: dataclass defaults < params.yaml < command-line overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dfguard.config import (
    PARAMS_FILE,
    Config,
    ConfigError,
    CorpusConfig,
    load_config,
    parse_overrides,
    save_resolved,
    shareable,
)

REPO_PARAMS = Path(__file__).resolve().parents[2] / PARAMS_FILE


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


def test_the_repositorys_params_file_loads() -> None:
    cfg = load_config(REPO_PARAMS)
    assert cfg.train.epochs == 8
    assert cfg.ingest.out_dir == Config().ingest.out_dir


def test_an_unknown_section_in_params_is_an_error_naming_the_nearest(tmp_path: Path) -> None:
    # `trian:` used to be dropped silently, leaving every train default in force.
    with pytest.raises(ConfigError, match=r"unknown section 'trian' \(did you mean 'train'\?\)"):
        load_config(_params(tmp_path, "trian:\n  epochs: 3\ncorpus:\n  seed: 2\n"))


def test_an_unknown_setting_in_a_known_section_names_the_nearest(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"params\.yaml:train: unknown setting 'epoch'.*did you mean 'epochs'\?"
    ):
        load_config(_params(tmp_path, "train:\n  epoch: 3\n"))


@pytest.mark.parametrize(
    ("dotted", "message"),
    [
        ("trian.lr", r"override 'trian\.lr': unknown section 'trian' \(did you mean 'train'\?\)"),
        ("train.lrr", r"override 'train\.lrr': unknown setting 'lrr' .*\(did you mean 'lr'\?\)"),
        # No near name in the section: the section that does hold the setting is named instead.
        ("train.min_score", r"unknown setting 'min_score' .*\(did you mean 'extract\.min_score'\?\)"),
    ],
)
def test_an_unknown_override_is_an_error_naming_the_nearest(dotted: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, {dotted: "1"})


def test_without_a_near_name_the_error_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown section 'zzz'; sections: corpus, ingest, "):
        load_config(_params(tmp_path, "zzz:\n  a: 1\n"))
    with pytest.raises(ConfigError, match=r"unknown setting 'zzz' in section 'corpus'; known: sources_dir, "):
        load_config(None, {"corpus.zzz": "1"})


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("corpus:\n  sead: 1\n", {}, "unknown setting 'sead'"),
        ("corpus:\n  seed: many\n", {}, "bad value for 'seed'"),
        ("corpus:\n  duration_s: [1.0]\n", {}, "expected 2 items"),
        ("corpus: 3\n", {}, "must be a mapping"),
        ("", {"nosection.seed": "1"}, "unknown section 'nosection'"),
        ("", {"corpus": "1"}, r"expected section\.field"),
        ("", {"corpus.seed": "1.5"}, "bad value"),
    ],
)
def test_bad_settings_are_named_in_the_error(
    tmp_path: Path, text: str, overrides: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_params(tmp_path, text), overrides)


def test_parse_overrides_rejects_pairs_without_equals() -> None:
    assert parse_overrides(["corpus.seed=3", " ingest.layout = ffpp "]) == {
        "corpus.seed": "3",
        "ingest.layout": "ffpp",
    }
    with pytest.raises(ConfigError, match=r"expected section\.field=value"):
        parse_overrides(["corpus.seed"])


def test_resolved_config_is_saved_beside_outputs(tmp_path: Path) -> None:
    cfg = load_config(None, {"corpus.seed": "11"}).corpus
    path = save_resolved(cfg, tmp_path / "out")
    saved = json.loads(path.read_text())
    assert saved["seed"] == 11
    assert saved["fps_choices"] == list(CorpusConfig().fps_choices)


def test_passwords_in_urls_never_reach_the_saved_or_logged_config(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        {
            "feedback.db_url": "postgresql+psycopg://reviewer:s3cr%2Ft@db.example:5432/dfguard",
            "registry.tracking_uri": "http://mlflow.internal:5000",
        },
    )
    shared = shareable(cfg)
    assert shared["feedback"]["db_url"] == "postgresql+psycopg://reviewer:***@db.example:5432/dfguard"
    assert shared["registry"]["tracking_uri"] == "http://mlflow.internal:5000"  # no password: unchanged
    saved = save_resolved(cfg.feedback, tmp_path).read_text()
    assert "s3cr" not in saved and "reviewer:***@db.example" in saved
