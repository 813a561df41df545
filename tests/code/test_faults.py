"""The platform under faults, each made real: a registry that cannot be reached (a closed port, a store
that cannot be read), a process killed with SIGKILL mid-run, writes failing for want of space (a file
size limit, RLIMIT_FSIZE, in a child process: writes then fail with EFBIG as on a full disk), SQLite
writers from several processes at once, and a detection service that is down.

Covered elsewhere, and not repeated here:
- a registry unreachable during a reload keeps the champion serving: test_service.py
  ::test_champion_moves_under_load_without_a_failed_request (its second half);
- a corrupted artefact in the registry is refused, the champion kept and the reason reported: test_service.py
  ::test_a_champion_that_cannot_load_is_refused_and_the_current_one_kept;
- a fine-tune killed mid-run (the loop restarts it from the champion, by design): test_loop.py
  ::test_a_loop_killed_mid_fine_tune_leaves_things_consistent_and_the_next_run_completes;
- a write failing and retried in order by the service's store writer: test_feedback_store.py
  ::test_writer_rides_out_an_outage; threads of one process writing one SQLite file:
  ::test_concurrent_writers_on_one_file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from launch_helpers import DFGUARD, dfguard_server
from registry_helpers import evaluation, register_tiny, save_tiny_model, store_from
from review_helpers import seed

from dfguard.config import OVERRIDES_ENV, PARAMS_ENV, ExtractConfig, FeedbackConfig, RegistryConfig
from dfguard.faces.dataset import run_extract
from dfguard.feedback import DB_URL_ENV, open_store
from dfguard.feedback.db import write_transaction
from dfguard.promotion import GatePolicy, loadable, promote, rollback
from dfguard.registry import CHALLENGER, CHAMPION, CHAMPION_URI, PREVIOUS, current_aliases, move_alias
from dfguard.registry.aliases import PENDING_TAG
from dfguard.registry.store import DB_NAME, MODEL_NAME
from dfguard.review.users import add_user
from dfguard.runtime import TELEMETRY_OFF
from dfguard.serving.launch import free_port
from dfguard.serving.models import CACHE, CACHE_RECORD, REGISTRY, ServedModels
from dfguard.training.checkpoint import CHECKPOINT_NAME, load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
CACHED = CHAMPION_URI.removeprefix("models:/")  # the cache folder of the champion's URI


def _run_python(
    script: str, *args: str, cwd: Path, fsize_limit: int | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -c script args` in a child started in `cwd`; with `fsize_limit`, no file it writes may grow
    beyond that many bytes (RLIMIT_FSIZE, SIGXFSZ ignored: a write past it fails with EFBIG, as on a
    full disk). The hard limit stays: the child may lift its own limit, as freeing space would."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, resource.RLIM_INFINITY))

    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **TELEMETRY_OFF},
        cwd=cwd,
        preexec_fn=limit if fsize_limit is not None else None,  # setrlimit and signal only: fork-safe
    )


def _partials(folder: Path) -> list[Path]:
    """Files or folders a write left half-done (`.partial`, `.tmp`)."""
    return [p for p in folder.rglob("*") if p.name.endswith((".partial", ".tmp"))]


# -- 1. the registry unreachable when the service starts ---------------------------------------------
def _image() -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (96, 96, 3), np.uint8)
    return cv2.imencode(".png", pixels)[1].tobytes()


@contextmanager
def _served(root: Path, name: str, registry: dict, cache_dir: Path) -> Iterator[str]:
    """`dfguard serve` (auth off on localhost, a 1 s champion check) with the `registry` section; its URL."""
    params = root / f"{name}.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "registry": registry,
                "feedback": {"root": str(root / "feedback")},
                "serve": {"cache_dir": str(cache_dir), "reload_interval_s": 1.0},
            }
        )
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"BENTOML_HOME": str(root / "bentoml"), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    with dfguard_server(
        ["--params", str(params), "serve", "--port", str(port)], url, root / f"{name}.log", root, env
    ):
        yield url


def _registry_with_a_champion(
    template_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, RegistryConfig, str]:
    """A local registry whose champion is a tiny model (version `first`)."""
    client, registry = store_from(template_db, tmp_path / "mlflow", monkeypatch)
    first = register_tiny(client, save_tiny_model(tmp_path / "v1", seed=1), evaluation(0.7))
    move_alias(client, CHAMPION, first)
    return client, registry, first


@pytest.mark.slow  # two starts of the service: about a minute on 2 cores
def test_a_service_started_while_the_registry_is_down_serves_its_cached_champion(
    tmp_path: Path, template_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, registry, first = _registry_with_a_champion(template_db, tmp_path, monkeypatch)
    cache_dir = tmp_path / "cache"
    with _served(tmp_path, "reachable", {"root": registry.root}, cache_dir) as url:
        ready = httpx.get(f"{url}/readyz").json()
        assert (ready["served_from"], ready["model"]["version"]) == (REGISTRY, first)
    assert json.loads((cache_dir / CACHED / CACHE_RECORD).read_text())["version"] == first
    # The champion moves while the service is down; then it starts with the registry out of reach.
    move_alias(
        client, CHAMPION, register_tiny(client, save_tiny_model(tmp_path / "v2", seed=2), evaluation(0.8))
    )
    closed = {"tracking_uri": f"http://127.0.0.1:{free_port()}"}
    with _served(tmp_path, "unreachable", closed, cache_dir) as url:
        ready = httpx.get(f"{url}/readyz").json()
        model = httpx.get(f"{url}/model").json()
        answer = httpx.post(f"{url}/detect", files={"file": ("a.png", _image())}, timeout=120)
    assert ready["ready"] and ready["served_from"] == CACHE and ready["model"]["version"] == first
    assert ready["registry"]["reachable"] is False and ready["registry"]["last_error"]
    assert model["served_from"] == CACHE and model["version"] == first and model["cache"]["cached_at"]
    assert answer.status_code == 200 and answer.json()["model"]["version"] == first
    log = (tmp_path / "unreachable.log").read_text()
    assert f"serving the cached copy of version {first}" in log and "registry unreachable" in log


def _models(registry: RegistryConfig, tmp_path: Path) -> ServedModels:
    return ServedModels(CHAMPION_URI, registry, workdir=tmp_path / "work", cache_dir=tmp_path / "cache")


def test_the_cached_champion_serves_until_the_registry_can_be_read_again(
    tmp_path: Path, template_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, registry, first = _registry_with_a_champion(template_db, tmp_path, monkeypatch)
    assert _models(registry, tmp_path).refresh()  # a service that loaded the champion, and cached it
    second = register_tiny(client, save_tiny_model(tmp_path / "v2", seed=2), evaluation(0.8))
    move_alias(client, CHAMPION, second)
    db = Path(registry.root) / DB_NAME
    backup = tmp_path / "mlflow.db.bak"
    shutil.copyfile(db, backup)
    db.write_bytes(b"this is not a database" * 100)

    restarted = _models(registry, tmp_path)
    assert restarted.refresh()
    served = restarted.current()
    assert served is not None and (served.source, served.version) == (CACHE, first)
    assert restarted.status()["registry"]["reachable"] is False

    shutil.copyfile(backup, db)  # the registry is back: the next check moves to its champion
    assert restarted.refresh()
    served = restarted.current()
    assert served is not None and (served.source, served.version) == (REGISTRY, second)
    assert restarted.status()["registry"]["reachable"] is True
    record = json.loads((tmp_path / "cache" / CACHED / CACHE_RECORD).read_text())
    copies = [p.name for p in (tmp_path / "cache" / CACHED).iterdir() if p.is_dir()]
    assert record["version"] == second and copies == [record["copy"]]  # the older copy is gone


def test_a_cached_copy_is_served_only_whole_and_unchanged(
    tmp_path: Path, template_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    down = RegistryConfig(tracking_uri=f"http://127.0.0.1:{free_port()}")
    nothing_cached = _models(down, tmp_path)
    assert not nothing_cached.refresh() and nothing_cached.current() is None
    assert "nothing cached yet" in nothing_cached.status()["registry"]["cache_error"]

    client, registry = store_from(template_db, tmp_path / "mlflow", monkeypatch)
    move_alias(client, CHAMPION, register_tiny(client, save_tiny_model(tmp_path / "v1"), evaluation(0.7)))
    assert _models(registry, tmp_path).refresh()
    record = json.loads((tmp_path / "cache" / CACHED / CACHE_RECORD).read_text())
    weights = tmp_path / "cache" / CACHED / record["copy"] / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit of a weight still loads: only the digest tells
    weights.write_bytes(bytes(data))
    tampered = _models(down, tmp_path)
    assert not tampered.refresh() and tampered.current() is None
    error = tampered.status()["registry"]["cache_error"]
    assert "model.safetensors" in error and "SHA-256" in error

    assert _models(registry, tmp_path).refresh()  # the next load from the registry repairs the copy
    repaired = _models(down, tmp_path)
    assert repaired.refresh() and repaired.current().source == CACHE


# -- 3. a training run killed mid-epoch ---------------------------------------------------------------
def test_a_training_run_killed_mid_epoch_resumes_from_its_checkpoint(tmp_path: Path, face_dataset) -> None:
    faces = face_dataset(tmp_path / "faces")
    params = tmp_path / "params.yaml"
    train = {
        "faces_dir": str(faces),
        "manifest_path": "",
        "out_dir": str(tmp_path / "model"),
        "checkpoint_dir": str(tmp_path / "checkpoints"),
        "model": "small_cnn",
        "input_size": 32,
        "epochs": 3,
        "frozen_epochs": 1,
        "batch_size": 8,
        "samples_per_epoch": 256,  # about a second an epoch: long enough to be killed inside
        "patience": 5,
        "workers": 0,
    }
    params.write_text(yaml.safe_dump({"train": train}))
    command = [str(DFGUARD), "--params", str(params), "train", "--no-progress"]
    env = {**os.environ, **TELEMETRY_OFF}
    with (tmp_path / "killed.log").open("wb") as out:
        first = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    deadline = time.monotonic() + 300
    while not list((tmp_path / "checkpoints").glob(f"*/{CHECKPOINT_NAME}")):
        assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "killed.log").read_text()
        time.sleep(0.05)
    first.kill()  # SIGKILL: nothing of the run's own clean-up runs
    assert first.wait(timeout=30) == -signal.SIGKILL
    (checkpoint,) = (tmp_path / "checkpoints").glob(f"*/{CHECKPOINT_NAME}")
    saved = load_checkpoint(checkpoint.parent)
    assert saved is not None and saved["epoch"] == 1, "killed after epoch 2 ended, not inside it"
    assert not (tmp_path / "model").exists()

    resumed = subprocess.run(
        [*command, "--resume"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming after epoch 1 from {checkpoint.parent}" in resumed.stderr
    assert "epoch 1:" not in resumed.stderr and "epoch 3:" in resumed.stderr  # epoch 1 is not redone
    history = json.loads((tmp_path / "model" / "history.json").read_text())
    assert [record["epoch"] for record in history] == [1, 2, 3]


# -- 4. a promotion killed between its alias moves -----------------------------------------------------
PROMOTE_AND_DIE = """
import os, signal, sys
from dfguard.config import RegistryConfig
from dfguard.promotion import GatePolicy, promote
from dfguard.registry import configure

root, version, when = sys.argv[1:]
client = configure(RegistryConfig(root=root))
die = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
if when == "between the alias moves":
    set_alias, moved = client.set_registered_model_alias, []
    def set_then_die(*args):
        if moved:
            die()
        moved.append(set_alias(*args))
    client.set_registered_model_alias = set_then_die
promote(client, version, GatePolicy(), verify=die if when == "in the verification" else None)
"""


@pytest.mark.parametrize(
    ("when", "next_step"), [("between the alias moves", "rollback"), ("in the verification", "promote")]
)
def test_a_promotion_killed_half_way_is_undone_by_the_next_change(
    tmp_path: Path,
    template_db: Path,
    monkeypatch: pytest.MonkeyPatch,
    model_dir: Path,
    when: str,
    next_step: str,
) -> None:
    client, registry = store_from(template_db, tmp_path / "mlflow", monkeypatch)
    first = register_tiny(client, model_dir, evaluation(0.90))
    promote(client, first, GatePolicy())
    second = register_tiny(client, model_dir, evaluation(0.91))
    promote(client, second, GatePolicy())
    third = register_tiny(client, model_dir, evaluation(0.93))
    before = {CHAMPION: second, PREVIOUS: first, CHALLENGER: third}
    assert current_aliases(client) == before

    killed = _run_python(PROMOTE_AND_DIE, registry.root, third, when, cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    # Half-moved (previous == champion; or an unverified champion), and the registry says so.
    assert current_aliases(client) != before
    assert json.loads(client.get_registered_model(MODEL_NAME).tags[PENDING_TAG]) == before

    if next_step == "rollback":  # from the champion as it was, not from the half-moved aliases
        assert rollback(client) == {CHAMPION: first, PREVIOUS: second, CHALLENGER: third}
    else:  # the challenger again, verified this time
        assert promote(client, third, GatePolicy(), verify=loadable(client)).promoted
        assert current_aliases(client) == {CHAMPION: third, PREVIOUS: second}
    assert PENDING_TAG not in client.get_registered_model(MODEL_NAME).tags


# -- 5. out of space while extracting faces or storing predictions ------------------------------------
EXTRACT = "from dfguard.cli import main; import sys; sys.exit(main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def face_media(tmp_path_factory: pytest.TempPathFactory, face_scenes) -> tuple[Path, pd.DataFrame]:
    """A clip of one person and a portrait of another (train), with their manifest."""
    root = tmp_path_factory.mktemp("face-media")
    frames = [face_scenes.frame([("obama", (150 + 3 * i, 120), 90)])[0] for i in range(6)]
    face_scenes.video(root / "clip.mp4", frames)
    cv2.imwrite(str(root / "portrait.jpg"), face_scenes.frame([("biden", (160, 120), 110)])[0])
    manifest = pd.DataFrame(
        {
            "video_id": ["clip0000000000000000", "portrait000000000000"],
            "path": ["clip.mp4", "portrait.jpg"],
            "label": "real",
            "method": "",
            "split": "train",
            "media_kind": ["video", "image"],
        }
    )
    return root, manifest


def _extraction(tmp_path: Path, media_dir: Path, manifest: pd.DataFrame) -> ExtractConfig:
    """The settings extracting `manifest` into `tmp_path / "faces"`, also written as the params file
    `tmp_path / "params.yaml"` for `dfguard extract` in a child."""
    manifest.to_parquet(tmp_path / "manifest.parquet", index=False)
    cfg = ExtractConfig(
        manifest_path=str(tmp_path / "manifest.parquet"),
        dataset_dir=str(media_dir),
        out_dir=str(tmp_path / "faces"),
        frames_train=3,
        crop_size=96,
        workers=1,
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"extract": dataclasses.asdict(cfg)}))
    return cfg


def _extract_out_of_space(tmp_path: Path, fsize_limit: int, *settings: str) -> subprocess.CompletedProcess:
    """`dfguard extract` with the params of `_extraction` (and `--set` `settings`), no file beyond
    `fsize_limit` bytes."""
    pairs = [arg for pair in settings for arg in ("--set", pair)]
    command = ["--params", str(tmp_path / "params.yaml"), *pairs, "extract", "--no-progress"]
    return _run_python(EXTRACT, *command, cwd=tmp_path, fsize_limit=fsize_limit)


def _crops_of_the_tables(faces_dir: Path) -> list[Path]:
    return [faces_dir / crop for crop in pd.read_parquet(faces_dir / "faces.parquet")["crop"]]


def test_extraction_out_of_space_stops_with_a_clear_error_and_leaves_no_half_item(
    tmp_path: Path, face_media
) -> None:
    cfg = _extraction(tmp_path, *face_media)
    # A crop is larger than 4 kB: the first write fails, in a worker of the process pool.
    full = _extract_out_of_space(tmp_path, 4096, "extract.workers=2")
    assert full.returncode == 2, full.stderr[-3000:]
    assert "dfguard: error: could not write the faces of" in full.stderr and "File too large" in full.stderr
    faces_dir = Path(cfg.out_dir)
    assert not list((faces_dir / ".cache").iterdir()), "an item was recorded as done"
    assert not list((faces_dir / "crops").iterdir()) and not _partials(faces_dir)
    assert not (faces_dir / "faces.parquet").exists()

    result = run_extract(cfg, progress=False)  # space again: every item is done, whole
    assert (result.extracted, result.failed) == (2, 0)
    crops = _crops_of_the_tables(faces_dir)
    assert crops and all(cv2.imread(str(crop)) is not None for crop in crops)


def test_out_of_space_while_writing_the_tables_keeps_the_last_whole_ones(tmp_path: Path, face_media) -> None:
    media_dir, manifest = face_media
    run_extract(_extraction(tmp_path, media_dir, manifest), progress=False)
    faces_dir = tmp_path / "faces"
    tables = {p.name: p.read_bytes() for p in faces_dir.iterdir() if p.is_file()}
    # One item leaves the manifest: nothing to extract, every table to rewrite, and no space for it.
    cfg = _extraction(tmp_path, media_dir, manifest[:1])
    full = _extract_out_of_space(tmp_path, 1)
    assert full.returncode == 2 and "could not write the dataset's tables" in full.stderr, full.stderr[-3000:]
    assert {p.name: p.read_bytes() for p in faces_dir.iterdir() if p.is_file()} == tables
    assert all(crop.is_file() for crop in _crops_of_the_tables(faces_dir)), "the old tables lost crops"
    assert not _partials(faces_dir)

    run_extract(cfg, progress=False)
    assert pd.read_parquet(faces_dir / "faces.parquet")["video_id"].unique().tolist() == [
        manifest.video_id[0]
    ]
    assert [p.name for p in (faces_dir / "crops").iterdir()] == [manifest.video_id[0]]


# Records as the service makes them (a judged image with its crop and upload, or a status without).
RECORDS = """
import hashlib, uuid
from datetime import UTC, datetime
import numpy as np
from dfguard.feedback import PredictionRecord

def make_record(seed, files=True):  # a fresh prediction id every time
    upload = np.random.default_rng(seed).bytes(20_000) if files else bytes(seed % 256 for _ in range(8))
    crop = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    judged = {"verdict": "FAKE", "probability": 0.9, "features": [0.1, 0.2],
              "faces": [{"frame_index": 0, "track_id": 0, "box": [0, 0, 64, 64], "probability": 0.9}]}
    status = {"verdict": "NO_FACE", "probability": None, "reason": "no face found"}
    return PredictionRecord.from_prediction(
        judged if files else status, [crop] if files else [], prediction_id=uuid.uuid4().hex,
        created_at=datetime.now(UTC), content_sha256=hashlib.sha256(upload).hexdigest(),
        media_kind="image", upload=upload if files else None, upload_suffix=".png" if files else "",
    )
"""

STORE_WHEN_FULL = (
    RECORDS
    + """
import json, resource, sys, time
import sqlalchemy as sa
from dfguard.config import FeedbackConfig
from dfguard.feedback import StoreWriter, open_store
from dfguard.feedback.schema import prediction_crops

def wait(condition):
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, writer.stats()
        time.sleep(0.02)

def rows():
    with store.engine.connect() as connection:
        crops = connection.execute(sa.select(sa.func.count()).select_from(prediction_crops)).scalar()
    return {"predictions": store.count(), "crops": crops}

store = open_store(FeedbackConfig(root=sys.argv[1]))
writer = StoreWriter(store, retry_s=0.05)
report = []
# First the crop and the upload fail to be written; then, for the same image judged again (its files
# on disk already), the database's own write of the prediction and its crop row.
for attempt in range(2):
    resource.setrlimit(resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
    record = make_record(7)
    failed = writer.stats()["failed_attempts"]
    writer.submit(record)
    wait(lambda: writer.stats()["failed_attempts"] >= failed + 3)
    report.append({"id": record.prediction_id, "while_full": writer.stats(), "rows": rows()})
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert writer.flush(timeout=30)
    report[-1]["after"] = {**writer.stats(), "rows": rows()}
writer.close(timeout=5)
print(json.dumps(report))
"""
)


def test_a_prediction_write_out_of_space_leaves_no_half_row_and_is_retried(tmp_path: Path) -> None:
    root = tmp_path / "feedback"
    result = _run_python(STORE_WHEN_FULL, str(root), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    files, database = json.loads(result.stdout)
    assert "File too large" in files["while_full"]["last_error"]
    assert "OperationalError" in database["while_full"]["last_error"]  # SQLite: disk I/O error
    for n, seen in enumerate((files, database)):
        assert seen["while_full"]["pending"] == 1, seen  # held, not dropped
        assert seen["rows"] == {"predictions": n, "crops": n}, seen  # nothing of it, not half of it
        assert seen["after"]["rows"] == {"predictions": n + 1, "crops": n + 1}, seen
        assert seen["after"]["pending"] == seen["after"]["dropped"] == 0
    with open_store(FeedbackConfig(root=str(root))) as store:
        for seen in (files, database):
            (crop,) = store.get(seen["id"])["crops"]
            assert cv2.imread(str(crop["path"])) is not None
    assert not _partials(root)


# -- 6. the prediction store's SQLite file written by several processes at once ------------------------
WRITE_MANY = (
    RECORDS
    + """
import json, sys
from dfguard.config import FeedbackConfig
from dfguard.feedback import StoreWriter, open_store

root, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
writer = StoreWriter(lambda: open_store(FeedbackConfig(root=root)), retry_s=0.05)
records = [make_record(first + i, files=i % 2 == 0) for i in range(count)]
for record in records:
    writer.submit(record)
print(json.dumps({"queued": True}), flush=True)
assert writer.flush(timeout=120)
writer.close(timeout=5)
print(json.dumps({"ids": [r.prediction_id for r in records], "stats": writer.stats()}))
"""
)


def test_several_processes_write_one_sqlite_store_while_it_is_locked_and_lose_nothing(tmp_path: Path) -> None:
    cfg = FeedbackConfig(root=str(tmp_path / "feedback"))
    processes, count = 3, 40
    with open_store(cfg) as store:
        # Another writer (a purge, a dashboard's label) holds the write lock while they start.
        with write_transaction(store.engine):
            writers = [
                subprocess.Popen(
                    [sys.executable, "-c", WRITE_MANY, str(cfg.root), str(1000 * k), str(count)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env={**os.environ, **TELEMETRY_OFF},
                    cwd=tmp_path,
                )
                for k in range(processes)
            ]
            for writer in writers:
                assert json.loads(writer.stdout.readline())["queued"]
            time.sleep(1.0)  # they are all waiting for the lock now
        outcomes = []
        for writer in writers:
            out, err = writer.communicate(timeout=180)
            assert writer.returncode == 0, err[-3000:]
            outcomes.append(json.loads(out.strip().splitlines()[-1]))
        ids = [i for outcome in outcomes for i in outcome["ids"]]
        assert all(
            outcome["stats"]["written"] == count and outcome["stats"]["dropped"] == 0 for outcome in outcomes
        )
        assert store.count() == len(set(ids)) == processes * count
        assert all(store.get(i) is not None for i in ids)


# -- 7. the dashboard with the detection service down --------------------------------------------------
def test_the_dashboard_says_the_service_is_down_and_labels_still_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, served_records
) -> None:
    from streamlit.testing.v1 import AppTest

    service_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    params = tmp_path / "params.yaml"
    feedback = FeedbackConfig(root=str(tmp_path / "feedback"))
    params.write_text(
        yaml.safe_dump(
            {
                "feedback": {"root": feedback.root},
                "registry": {"root": str(tmp_path / "mlflow")},
                "dashboard": {"second_review_share": 0.0, "service_url": service_url},
            }
        )
    )
    monkeypatch.setenv(PARAMS_ENV, str(params))
    monkeypatch.setenv(OVERRIDES_ENV, "{}")
    monkeypatch.delenv(DB_URL_ENV, raising=False)
    main = sys.modules["__main__"]  # AppTest leaves the page as __main__: spawned processes would run it
    try:
        with open_store(feedback) as store:
            add_user(store, "ann", "reviewer", "correct horse battery")
            seed(store, served_records, 3)
            app = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60).run()
            app.text_input(key="sign_in_name").input("ann")
            app.text_input(key="sign_in_password").input("correct horse battery")
            app.button[0].click().run()
            app.switch_page("views/check.py").run()
            app.file_uploader(key="check_upload").set_value(("a.png", _image(), "image/png")).run()
            assert not app.exception, app.exception
            (error,) = [element.value for element in app.error]
            assert error.startswith(f"The service did not judge it: {service_url}") and "refused" in error
            app.switch_page("views/queue.py").run()
            app.button(key="label_real").click().run()
            assert not app.exception, app.exception
            assert store.labels()["label"].tolist() == ["real"]
    finally:
        sys.modules["__main__"] = main
