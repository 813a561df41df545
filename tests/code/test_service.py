"""The detection service through a real `dfguard serve` (BentoML) on a free localhost port, with a model
trained on a tiny face dataset registered as champion in a real MLflow store, a real prediction store,
and real HTTP clients (httpx and `bentoml.SyncHTTPClient`)."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import threading
import time
import zlib
from pathlib import Path

import httpx
import pytest
from registry_helpers import evaluation, register_tiny, save_tiny_model
from service_helpers import (
    ADMIN_SECRET,
    BURST_SECRET,
    JOB_TTL_S,
    MAX_VIDEO_MB,
    RATE_BURST,
    SECRET,
    Service,
)

from dfguard.feedback import open_store
from dfguard.registry import configure, move_alias
from dfguard.registry.store import DB_NAME
from dfguard.serving.client import ServiceError


def _stored(service: Service, prediction_id: str, timeout_s: float = 20.0) -> dict:
    """The store's row of a prediction (the service writes in the background: poll for it)."""
    deadline = time.monotonic() + timeout_s
    with open_store(service.feedback) as store:
        while time.monotonic() < deadline:
            row = store.get(prediction_id)
            if row is not None:
                return row
            time.sleep(0.2)
    raise AssertionError(f"prediction {prediction_id} never reached the store")


def _png_bomb() -> bytes:
    """A valid PNG header claiming 100000 x 100000 pixels over a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def test_detect_judges_a_face_video_and_stores_it(service, inference_media):
    with service.client() as client:
        response = client.post(
            "/detect", files={"file": ("clip.mp4", (inference_media / "face.mp4").read_bytes())}
        )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["verdict"] in {"FAKE", "REAL", "UNCERTAIN"}
    assert 0.0 <= answer["probability"] <= 1.0
    assert answer["faces"] and answer["frames"]
    assert answer["media"]["kind"] == "video"
    assert answer["model"]["version"] and answer["model"]["alias"] == "champion"
    assert set(answer["quality"]) >= {"face_px", "sharpness", "brightness", "blockiness"}
    assert answer["seconds"]["total"] > 0
    row = _stored(service, answer["prediction_id"])
    assert row["verdict"] == answer["verdict"]
    assert row["client_key_id"] == "client"
    assert row["content_sha256"] == hashlib.sha256((inference_media / "face.mp4").read_bytes()).hexdigest()
    assert row["crops"] and all(Path(crop["path"]).is_file() for crop in row["crops"])
    assert row["features"]


@pytest.mark.parametrize(
    ("name", "make", "expected"),
    [
        ("empty.mp4", lambda media: b"", "UNREADABLE"),
        ("random.mp4", lambda media: os.urandom(4096), "UNSUPPORTED"),
        ("notes.txt", lambda media: b"just some text, not media\n" * 20, "UNSUPPORTED"),
        ("truncated.mp4", lambda media: (media / "face.mp4").read_bytes()[:600], "UNREADABLE"),
        ("bomb.png", lambda media: _png_bomb(), "UNREADABLE"),
        ("room.mp4", lambda media: (media / "room.mp4").read_bytes(), "NO_FACE"),
        ("tiny.mp4", lambda media: (media / "tiny_face.mp4").read_bytes(), "FACE_TOO_SMALL"),
        ("blip.mp4", lambda media: (media / "blip.mp4").read_bytes(), "TOO_SHORT"),
        ("big.png", lambda media: b"\x89PNG\r\n\x1a\n" + os.urandom(int(1.5 * (1 << 20))), "TOO_LARGE"),
    ],
)
def test_bad_uploads_get_a_status_not_an_error(service, inference_media, name, make, expected):
    with service.client() as client:
        response = client.post("/detect", files={"file": (name, make(inference_media))})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["verdict"] == expected, answer["reason"]
    assert answer["probability"] is None and answer["reason"]
    assert _stored(service, answer["prediction_id"])["verdict"] == expected


def test_content_decides_the_kind_and_names_never_make_paths(service, inference_media):
    portrait = (inference_media / "portrait.png").read_bytes()
    hostile = "../../../etc/passwd; rm -rf $HOME `id`.mp4"
    with service.client() as client:
        answer = client.post("/detect", files={"file": (hostile, portrait, "video/mp4")}).json()
    assert answer["media"]["kind"] == "image"
    assert answer["verdict"] in {"FAKE", "REAL", "UNCERTAIN"}
    row = _stored(service, answer["prediction_id"])
    stored = sorted(p.name for p in (service.root / "feedback").rglob("*") if p.is_file())
    assert not any("passwd" in name or name == "rm" for name in stored)
    assert row["media_kind"] == "image"


def test_an_upload_over_the_video_cap_is_refused_while_streaming(service):
    body = b"\x00\x00\x00\x18ftypmp42" + os.urandom(int((MAX_VIDEO_MB + 1) * (1 << 20)))
    with service.client() as client:
        response = client.post("/detect", files={"file": ("big.mp4", body)})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "TOO_LARGE"


def test_batch_answers_every_file_even_a_bad_one(service, inference_media):
    files = [
        ("files", ("a.png", (inference_media / "portrait.png").read_bytes())),
        ("files", ("b.mp4", b"\x00garbage" * 100)),
        ("files", ("c.mp4", (inference_media / "room.mp4").read_bytes())),
    ]
    with service.client() as client:
        response = client.post("/detect/batch", files=files)
    assert response.status_code == 200, response.text
    verdicts = [result["verdict"] for result in response.json()["results"]]
    assert verdicts[0] in {"FAKE", "REAL", "UNCERTAIN"}
    assert verdicts[1:] == ["UNSUPPORTED", "NO_FACE"]


def test_too_many_files_in_a_batch_is_a_client_error(service, inference_media):
    files = [("files", (f"{i}.png", (inference_media / "portrait.png").read_bytes())) for i in range(5)]
    with service.client() as client:
        response = client.post("/detect/batch", files=files)
    assert response.status_code == 400


def _finished_job(client: httpx.Client, media: Path) -> str:
    submitted = client.post(
        "/detect_job/submit", files={"file": ("clip.mp4", (media / "face.mp4").read_bytes())}
    )
    assert submitted.status_code == 200, submitted.text
    task_id = submitted.json()["task_id"]
    deadline = time.monotonic() + 120
    status = "in_progress"
    while status == "in_progress" and time.monotonic() < deadline:
        time.sleep(0.5)
        status = client.get("/detect_job/status", params={"task_id": task_id}).json()["status"]
    assert status == "completed"
    return task_id


def test_async_job_lifecycle(service, inference_media):
    with service.client() as client:
        task_id = _finished_job(client, inference_media)
        result = client.get("/detect_job/get", params={"task_id": task_id})
        assert result.json()["verdict"] in {"FAKE", "REAL", "UNCERTAIN"}
        cancelled = client.post(
            "/detect_job/submit", files={"file": ("clip.mp4", (inference_media / "face.mp4").read_bytes())}
        ).json()["task_id"]
        # BentoML 1.4 marks the job cancelled (its answer says the work itself runs on, locally).
        client.put("/detect_job/cancel", params={"task_id": cancelled})
        assert client.get("/detect_job/status", params={"task_id": cancelled}).json()["status"] == "canceled"
        # Results are kept serve.job_ttl_s: a job finishing later clears the expired ones.
        time.sleep(JOB_TTL_S + 1)
        _finished_job(client, inference_media)
        assert client.get("/detect_job/status", params={"task_id": task_id}).status_code == 404
        assert client.get("/detect_job/status", params={"task_id": "no-such-task"}).status_code == 404


def test_sync_http_client(service, inference_media):
    import bentoml

    with bentoml.SyncHTTPClient(service.url, token=SECRET, timeout=120) as client:
        answer = client.detect(file=inference_media / "portrait.png")
    assert answer["verdict"] in {"FAKE", "REAL", "UNCERTAIN"}
    assert answer["calibration"] in {"photo", "none"}


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "UNAUTHORIZED"),
        ({"Authorization": "Basic abc"}, "UNAUTHORIZED"),
        ({"Authorization": "Bearer wrong"}, "INVALID_API_KEY"),
    ],
)
def test_auth_refuses_missing_and_wrong_keys(service, headers, code):
    response = httpx.post(f"{service.url}/detect", headers=headers, files={"file": ("a.png", b"x")})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code


def test_health_and_docs_are_open_and_describe_the_service(service):
    assert httpx.get(f"{service.url}/livez").status_code == 200
    ready = httpx.get(f"{service.url}/readyz").json()
    assert ready["ready"] and ready["model"]["alias"] == "champion"
    docs = httpx.get(f"{service.url}/docs.json").json()
    assert "/detect" in docs["paths"] and "/detect/batch" in docs["paths"]
    assert "calibrated" in docs["paths"]["/detect"]["post"]["description"]


def test_model_endpoint_and_metrics(service, inference_media):
    with service.client() as client:
        model = client.get("/model").json()
        client.post("/detect", files={"file": ("a.mp4", (inference_media / "room.mp4").read_bytes())})
    assert model["contract_hash"] and model["contract"]
    assert "champion" in model["aliases"]
    metrics = httpx.get(f"{service.url}/metrics").text
    assert "dfguard_verdicts_total" in metrics and 'verdict="NO_FACE"' in metrics
    assert "dfguard_model_info{" in metrics and "dfguard_store_written_total" in metrics


def test_admin_reload_needs_an_admin_key(service):
    with service.client() as client:
        assert client.post("/admin/reload").status_code == 403
    with service.client(ADMIN_SECRET) as admin:
        response = admin.post("/admin/reload")
    assert response.status_code == 200 and response.json()["ready"]


def test_rate_limit_answers_429_with_retry_after(service):
    with service.client(BURST_SECRET) as client:
        codes = [client.get("/model") for _ in range(3 * RATE_BURST)]
    limited = [r for r in codes if r.status_code == 429]
    assert limited, [r.status_code for r in codes]
    assert int(limited[0].headers["Retry-After"]) >= 1
    assert limited[0].json()["error"]["code"] == "RATE_LIMITED"


def test_the_python_client_waits_out_a_rate_limit(service, inference_media):
    from dfguard.serving.client import DetectionClient

    with service.client(BURST_SECRET) as client:  # the key's bucket emptied
        assert any(client.get("/model").status_code == 429 for _ in range(3 * RATE_BURST))
    patient = DetectionClient(service.url, BURST_SECRET)
    impatient = DetectionClient(service.url, BURST_SECRET, retries=0)
    try:
        with service.client(BURST_SECRET) as client:
            while client.get("/model").status_code != 429:
                pass
        with pytest.raises(ServiceError, match="429 RATE_LIMITED"):
            impatient.detect(inference_media / "portrait.png")
        answer = patient.detect(inference_media / "portrait.png")  # after its Retry-After: answered
        assert answer["verdict"] in ("FAKE", "REAL", "UNCERTAIN")
    finally:
        patient.close()
        impatient.close()


def test_champion_moves_under_load_without_a_failed_request(service, inference_media, tmp_path):
    """A new champion is registered while clients keep calling: every request succeeds, and the answers
    move from the old version to the new one. Then the registry breaks: the service keeps serving and
    says so in /readyz."""
    client_mlflow = configure(service.registry)
    before = httpx.get(f"{service.url}/readyz").json()["model"]["version"]
    new_version = register_tiny(client_mlflow, save_tiny_model(tmp_path / "v2", seed=3), evaluation(0.8))
    photo = (inference_media / "portrait.png").read_bytes()
    failures, seen = [], []
    stop = threading.Event()

    def call() -> None:
        with service.client() as client:
            while not stop.is_set():
                response = client.post("/detect", files={"file": ("p.png", photo)})
                if response.status_code != 200:
                    failures.append(response.status_code)
                else:
                    seen.append(response.json()["model"]["version"])

    worker = threading.Thread(target=call)
    worker.start()
    try:
        time.sleep(1.0)
        move_alias(client_mlflow, "champion", new_version)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not seen or seen[-1] != new_version):
            time.sleep(0.3)
    finally:
        stop.set()
        worker.join()
    assert not failures
    assert before in seen and seen[-1] == new_version

    db = Path(service.registry.root) / DB_NAME
    backup = tmp_path / "mlflow.db.bak"
    shutil.copyfile(db, backup)
    try:
        db.write_bytes(b"this is not a database" * 100)
        deadline = time.monotonic() + 30
        ready = httpx.get(f"{service.url}/readyz").json()
        while ready["registry"]["reachable"] is not False and time.monotonic() < deadline:
            time.sleep(0.3)
            ready = httpx.get(f"{service.url}/readyz").json()
        assert ready["registry"]["reachable"] is False and ready["registry"]["last_error"]
        with service.client() as client:
            response = client.post("/detect", files={"file": ("p.png", photo)})
        assert response.status_code == 200 and response.json()["model"]["version"] == new_version
    finally:
        shutil.copyfile(backup, db)


def test_detect_cli_against_the_service(service, inference_media, capsys):
    from dfguard.cli import main

    code = main(
        [
            "detect",
            str(inference_media / "portrait.png"),
            "--server",
            service.url,
            "--api-key",
            SECRET,
            "--json",
        ]
    )
    assert code == 0
    import json

    answer = json.loads(capsys.readouterr().out)
    assert answer["verdict"] in {"FAKE", "REAL", "UNCERTAIN"} and answer["prediction_id"]
    assert answer["file"].endswith("portrait.png")
    assert (
        main(["detect", str(inference_media / "portrait.png"), "--server", service.url, "--api-key", "nope"])
        == 2
    )
    assert "INVALID_API_KEY" in capsys.readouterr().err


def test_explain_adds_grad_cam_overlays(service, inference_media):
    import base64

    import cv2
    import numpy as np

    with service.client() as client:
        answer = client.post(
            "/detect",
            data={"explain": "true"},
            files={"file": ("a.mp4", (inference_media / "face.mp4").read_bytes())},
        ).json()
    assert 1 <= len(answer["explanations"]) <= 3
    shown = answer["explanations"][0]
    image = cv2.imdecode(np.frombuffer(base64.b64decode(shown["png_base64"]), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[1] == 2 * image.shape[0]  # the crop beside its overlay
    assert shown["evidence_for"] in {"fake", "real"}


def test_a_champion_that_cannot_load_is_refused_and_the_current_one_kept(service, inference_media, tmp_path):
    client_mlflow = configure(service.registry)
    serving = httpx.get(f"{service.url}/readyz").json()["model"]["version"]
    broken = tmp_path / "broken"
    shutil.copytree(save_tiny_model(tmp_path / "ok", seed=5), broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    bad_version = register_tiny(client_mlflow, broken, evaluation(0.9))
    move_alias(client_mlflow, "champion", bad_version)
    try:
        with service.client(ADMIN_SECRET) as admin:
            reloaded = admin.post("/admin/reload").json()
        assert reloaded["changed"] is False
        assert bad_version in reloaded["registry"]["refused_versions"]
        with service.client() as client:
            answer = client.post(
                "/detect", files={"file": ("p.png", (inference_media / "portrait.png").read_bytes())}
            )
        assert answer.status_code == 200 and answer.json()["model"]["version"] == serving
    finally:
        move_alias(client_mlflow, "champion", serving)


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        (
            "POST",
            "/detect",
            {
                "content": b"--x\r\nnot really multipart",
                "headers": {"Content-Type": "multipart/form-data; boundary=x"},
            },
        ),
        ("POST", "/detect", {"json": {"file": "/etc/passwd"}}),
        (
            "POST",
            "/detect",
            {"content": b"\xff" * 1000, "headers": {"Content-Type": "application/octet-stream"}},
        ),
        (
            "POST",
            "/detect",
            {"data": {"explain": "maybe"}, "files": {"file": ("a.png", b"\x89PNG\r\n\x1a\n")}},
        ),
        ("POST", "/detect/batch", {"files": {"nothing": ("a.png", b"x")}}),
        ("GET", "/detect", {}),
        ("GET", "/static_content/../../../etc/passwd", {}),
        ("GET", "/detect_job/get", {"params": {"task_id": "'; DROP TABLE result; --"}}),
    ],
)
def test_hostile_requests_get_a_client_error_never_a_500(service, method, path, kwargs):
    with service.client() as client:
        response = client.request(method, path, **kwargs)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert "Traceback" not in response.text


def test_a_composed_champion_is_served_and_its_expert_speaks(service, inference_media, tmp_path):
    """What the loop registers (a base detector plus an expert) is what `bentoml serve` loads and
    judges with: an expert that fires on every face lifts the verdict to FAKE, and the answer names the
    composition."""
    import json

    import torch

    from dfguard.models import load_detector, save_detector
    from dfguard.models.composed import compose
    from dfguard.models.io import CONFIG_NAME, RESERVED_KEYS

    base_dir = save_tiny_model(tmp_path / "base", seed=5)
    base, config = load_detector(base_dir)
    fires_always = {
        "weight": torch.zeros(base.head_input_dim),
        "bias": 1.0,
        "threshold": 0.0,  # every score (1.0) is past it
        "floor": 6.0,
        "slope": 0.0,
    }
    extra = {k: v for k, v in config.items() if k not in RESERVED_KEYS}
    composed_dir = save_detector(compose(base, [fires_always]), tmp_path / "composed", extra)
    assert json.loads((composed_dir / CONFIG_NAME).read_text())["model"]["name"] == "composed"
    client_mlflow = configure(service.registry)
    version = register_tiny(client_mlflow, composed_dir, evaluation(0.8))
    move_alias(client_mlflow, "champion", version)
    photo = (inference_media / "portrait.png").read_bytes()
    deadline, answer = time.monotonic() + 60, {}
    with service.client() as client:
        while time.monotonic() < deadline:
            answer = client.post("/detect", files={"file": ("p.png", photo)}).json()
            if answer.get("model", {}).get("version") == version:
                break
            time.sleep(0.3)
    assert answer["model"]["version"] == version and answer["model"]["name"] == "composed"
    assert answer["verdict"] == "FAKE" and answer["probability"] > 0.99  # logit 6 on an uncalibrated model
