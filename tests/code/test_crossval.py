"""`dfguard crossval`: folds that keep people whole, and a real train/calibrate/evaluate run per fold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from dfguard.cli import main
from dfguard.metrics import roc_auc
from dfguard.registry.store import embedded_uri
from dfguard.studies.crossval import fold_splits, identity_folds, thin_training


def _manifest(people: int, clips: int = 2, swaps: tuple[tuple[int, int], ...] = ()) -> pd.DataFrame:
    """`clips` real clips per person; a swap (a, b) adds a fake of person a wearing b's face."""
    rows = [
        {"video_id": f"p{p}-{c}", "label": "real", "source_identity": f"p{p}", "target_identity": f"p{p}"}
        for p in range(people)
        for c in range(clips)
    ]
    rows += [
        {"video_id": f"swap{a}-{b}", "label": "fake", "source_identity": f"p{b}", "target_identity": f"p{a}"}
        for a, b in swaps
    ]
    return pd.DataFrame(rows)


def test_folds_keep_linked_people_together_and_hold_about_as_many_videos() -> None:
    manifest = _manifest(12, swaps=((0, 1), (2, 3), (3, 4)))
    fold = identity_folds(manifest, folds=4, seed=3)
    assert set(fold) == set(manifest["video_id"]) and set(fold.values()) == {0, 1, 2, 3}
    person_fold = {}
    for video, target, source in manifest[["video_id", "target_identity", "source_identity"]].itertuples(
        index=False
    ):
        for person in (target, source):
            assert person_fold.setdefault(person, fold[video]) == fold[video], f"{person} split across folds"
    assert person_fold["p0"] == person_fold["p1"]
    assert person_fold["p2"] == person_fold["p3"] == person_fold["p4"]
    sizes = pd.Series(fold).value_counts()
    assert sizes.max() - sizes.min() <= 2, sizes.to_dict()
    assert identity_folds(manifest, 4, seed=3) == fold, "the same seed deals the same folds"
    assert any(identity_folds(manifest, 4, seed=s) != fold for s in range(4, 10)), "the seed shuffles"


def test_each_group_is_tested_once_and_validates_the_fold_before() -> None:
    video_fold = pd.Series([0, 0, 1, 2, 3, 3])
    roles = pd.DataFrame({k: fold_splits(video_fold, k, 4) for k in range(4)})
    assert (roles == "test").sum(axis=1).tolist() == [1] * 6
    assert (roles == "val").sum(axis=1).tolist() == [1] * 6
    assert roles[3].tolist() == ["val", "val", "train", "train", "test", "test"]


def test_thinning_keeps_a_share_of_the_training_people_whole_and_leaves_val_and_test() -> None:
    manifest = _manifest(12, clips=2, swaps=((0, 1),))
    video_ids = manifest["video_id"]
    splits = pd.Series(["train"] * 16 + ["val"] * 4 + ["test"] * 4 + ["train"], index=manifest.index)
    thinned = thin_training(splits, video_ids, manifest, share=0.5, seed=1)
    untouched = splits != "train"
    assert (thinned[untouched] == splits[untouched]).all(), "validation and test people stay"
    kept = manifest.loc[thinned == "train", "target_identity"]
    dropped = manifest.loc[thinned == "unused", "target_identity"]
    assert not set(kept) & set(dropped), "a person is kept or dropped whole"
    assert ("p0" in set(kept)) == ("p1" in set(kept)), "people linked by a swap go together"
    # Groups are added until half of the 17 training videos are in: at most one group (<= 5 videos) more.
    assert 17 / 2 <= (thinned == "train").sum() < 17 / 2 + 5
    assert thin_training(splits, video_ids, manifest, share=0.5, seed=1).equals(thinned), "seeded"
    assert any(not thin_training(splits, video_ids, manifest, 0.5, s).equals(thinned) for s in range(2, 8))
    assert thin_training(splits, video_ids, manifest, share=1.0, seed=1).equals(splits)
    assert (thin_training(splits, video_ids, manifest, share=0.01, seed=1) == "train").sum() >= 1
    with pytest.raises(ValueError, match="share of training people"):
        thin_training(splits, video_ids, manifest, share=0.0, seed=1)


@pytest.mark.parametrize(
    ("manifest", "folds", "message"),
    [
        (_manifest(6), 2, "at least 3 folds"),
        (_manifest(2), 3, "2 groups of people cannot fill 3 folds"),
        (_manifest(6).assign(source_identity="", target_identity=None), 3, "name no person"),
    ],
)
def test_folds_that_cannot_be_dealt_are_refused(manifest: pd.DataFrame, folds: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        identity_folds(manifest, folds, seed=0)


def _tiny_study(face_dataset, tmp_path: Path) -> tuple[Path, pd.DataFrame, list[str]]:
    """A tiny face dataset of 9 people, its manifest, and the CLI flags of a quick small_cnn study."""
    faces_dir = face_dataset(tmp_path / "faces", videos_per_split=6, frames=4)
    faces = pd.read_parquet(faces_dir / "faces.parquet")
    videos = faces.drop_duplicates("video_id")[["video_id", "label"]].reset_index(drop=True)
    # Two clips per person (a real and a fake); one swap links two people, who must stay together.
    videos["target_identity"] = [f"person{i // 2}" for i in range(len(videos))]
    videos["source_identity"] = videos["target_identity"]
    videos.loc[1, "source_identity"] = "person5"
    videos["original_path"] = videos["compression"] = ""
    videos["path"] = videos["video_id"]
    manifest = tmp_path / "manifest.parquet"
    videos.to_parquet(manifest, index=False)
    settings = {
        "train.faces_dir": faces_dir,
        "train.manifest_path": manifest,
        "train.checkpoint_dir": tmp_path / "unused",
        "train.model": "small_cnn",
        "train.input_size": 32,
        "train.epochs": 2,
        "train.batch_size": 8,
        "train.samples_per_epoch": 32,
        "train.lr": 3e-3,
        "registry.root": tmp_path / "mlflow",
    }
    flags = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    return faces_dir, videos, ["--params", str(tmp_path / "none.yaml"), *flags]


def test_crossval_tests_every_video_once_on_a_model_that_never_saw_its_people(
    face_dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    faces_dir, videos, flags = _tiny_study(face_dataset, tmp_path)
    faces = pd.read_parquet(faces_dir / "faces.parquet")
    out = tmp_path / "cv"
    assert main([*flags, "crossval", "--folds", "3", "--out", str(out), "--no-progress"]) == 0

    result = json.loads((out / "crossval.json").read_text())
    held_out = pd.read_parquet(out / "videos.parquet")
    assert sorted(held_out["video_id"]) == sorted(videos["video_id"]), "each video is tested exactly once"
    assert result["people"] == 9 and result["videos"] == 18 and len(result["per_fold"]) == 3
    assert result["train_share"] == 1.0
    assert [f["train_people"] for f in result["per_fold"]] == [3, 3, 3], "a third of 9 people trains"
    for fold, tested in held_out.groupby("fold"):
        table = pd.read_parquet(out / f"fold-{fold}" / "faces" / "faces.parquet")
        people = table.drop_duplicates("video_id").merge(videos[["video_id", "target_identity"]])
        trained_on = set(people.loc[people["split"] != "test", "target_identity"])
        assert not trained_on & set(tested["identity"]), f"fold {fold} trained or calibrated on test people"
        assert len(table) == len(faces), "a fold sees the whole face table, only the splits change"
        assert (out / f"fold-{fold}" / "faces" / "crops").is_symlink(), "crops are linked, not copied"
        fold_metrics = json.loads((out / f"fold-{fold}" / "evaluate" / "metrics.json").read_text())
        assert result["per_fold"][fold - 1]["test_video_auc"] == fold_metrics["video"]["auc"]
    linked = held_out.set_index("identity").loc[["person0", "person5"], "fold"]
    assert linked.nunique() == 1, "people linked by a swap are tested in the same fold"
    pooled = roc_auc(held_out["target"].to_numpy(), held_out["probability"].to_numpy())
    assert result["video"]["auc"] == pytest.approx(pooled, abs=1e-6)
    # Decisions are each fold's own: a video is called fake at its fold's calibrated threshold.
    thresholds = held_out["fold"].map({f["fold"]: f["threshold"] for f in result["per_fold"]})
    called_fake = held_out["probability"] >= thresholds
    assert result["video"]["accuracy"] == pytest.approx(np.mean(called_fake == held_out["target"]), abs=1e-6)
    assert result["video"]["tp"] == int((called_fake & (held_out["target"] == 1)).sum())
    assert "threshold" not in result["video"], "the pool has no single threshold"
    uncertain = np.mean(held_out["verdict"] == "UNCERTAIN")
    assert result["uncertain_fraction"] == pytest.approx(uncertain, abs=1e-6)
    aucs = [f["test_video_auc"] for f in result["per_fold"]]
    assert result["fold_auc_mean"] == pytest.approx(np.mean(aucs), abs=1e-6)
    assert (out / "roc.png").stat().st_size > 0 and (out / "identities.png").stat().st_size > 0
    client = MlflowClient(tracking_uri=embedded_uri(tmp_path / "mlflow"))
    (run,) = client.search_runs(
        [client.get_experiment_by_name("dfguard").experiment_id], "tags.`dfguard.kind` = 'crossval'"
    )
    assert run.data.metrics["video.auc"] == pytest.approx(result["video"]["auc"])
    assert run.data.metrics["fold_2.test_video_auc"] == pytest.approx(result["per_fold"][1]["test_video_auc"])
    assert run.data.params["folds"] == "3" and run.data.params["train.model"] == "small_cnn"
    logged = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "crossval")}
    assert logged == {"crossval.json", "roc.png", "identities.png"}
    printed = capsys.readouterr().out
    assert "3-fold cross-validation of small_cnn over 9 people (18 videos)" in printed
    assert "bootstrap interval (resampling identities)" in printed


def test_a_learning_curve_cross_validates_each_share_of_the_training_people(
    face_dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, flags = _tiny_study(face_dataset, tmp_path)
    out = tmp_path / "curve"
    command = ["learning-curve", "--shares", "1", "0.4", "--folds", "3", "--out", str(out), "--no-progress"]
    assert main([*flags, *command]) == 0

    curve = json.loads((out / "learning_curve.json").read_text())
    assert [point["train_share"] for point in curve["points"]] == [0.4, 1.0], "smallest share first"
    for point in curve["points"]:
        study = json.loads((out / f"share-{point['train_share']:g}" / "crossval.json").read_text())
        assert point["video_auc"] == study["video"]["auc"]
        people = [f["train_people"] for f in study["per_fold"]]
        assert point["train_people_mean"] == pytest.approx(np.mean(people), abs=0.005)
        assert study["videos"] == 18, "every share tests every video"
    fewer, full = curve["points"]
    assert fewer["train_people_mean"] < full["train_people_mean"] == 3
    assert (out / "learning_curve.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "learning curve of small_cnn (3-fold" in printed and "(40%): video AUC" in printed
