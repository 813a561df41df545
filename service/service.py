"""The dfguard detection service: BentoML wiring over `dfguard.serving` (start it with `dfguard serve`, or
`bentoml serve service:Detector` from the repository root).

Settings come from `params.yaml` (sections `serve`, `feedback`, `registry`), or the file named by
$DFGUARD_PARAMS, with $DFGUARD_OVERRIDES (a JSON object of `section.key` values, as `dfguard serve --set`
passes them) on top: the worker processes BentoML spawns import this module, so the environment is how a
setting reaches them.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Annotated, Any

import bentoml
from _bentoml_impl.tasks.result import Sqlite3Store
from bentoml.validators import ContentType
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from dfguard.config import config_from_env
from dfguard.feedback import StoreWriter, open_store
from dfguard.runtime import configure_runtime
from dfguard.serving.detection import Judgement, judge_file, store_record
from dfguard.serving.health import ReadyzMiddleware, provide_status
from dfguard.serving.models import ServedModels
from dfguard.serving.openapi import ErrorShapeMiddleware, OpenAPIMiddleware, service_document
from dfguard.serving.security import BodyLimitMiddleware, GuardMiddleware, keys_for

log = logging.getLogger("dfguard.service")

CONFIG = config_from_env()
SERVE = CONFIG.serve
# Checked here, not on the first request: Starlette builds middleware lazily.
keys_for(SERVE)

verdicts = bentoml.metrics.Counter(
    name="dfguard_verdicts",
    documentation="Answers by verdict or status, and by the model version that gave them",
    labelnames=["endpoint", "verdict", "model_version"],
)

# Finished jobs' results (and their uploads) are kept `serve.job_ttl_s`: BentoML 1.4 deletes older ones
# whenever a job finishes, after a fixed day unless this is set.
Sqlite3Store.RESULT_RETENTION = SERVE.job_ttl_s

# GET routes and the admin call (BentoML's own APIs are POST only).
extra = FastAPI(title="dfguard extras", docs_url=None, redoc_url=None, openapi_url=None)

FileUpload = Annotated[Path, ContentType("*/*")]


@bentoml.service(
    name="dfguard-detector",
    workers=SERVE.workers,
    threads=SERVE.threads,
    traffic={"timeout": 600, "concurrency": 64},
    http={"host": SERVE.host, "port": SERVE.port},
)
@bentoml.asgi_app(extra, path="/")
class Detector:
    """Deepfake detection of face images and videos: calibrated verdicts from the registry's champion."""

    def __init__(self) -> None:
        configure_runtime(logging.INFO)
        cache_dir = Path(SERVE.cache_dir) if SERVE.cache_dir else None
        self.models = ServedModels(SERVE.model_uri, CONFIG.registry, cache_dir=cache_dir)
        self.models.refresh()
        self.writer = StoreWriter(
            lambda: open_store(CONFIG.feedback), CONFIG.feedback.retry_s, CONFIG.feedback.max_pending
        )
        self._stop = threading.Event()
        if SERVE.reload_interval_s > 0 and self.models.from_registry:
            threading.Thread(target=self._watch_registry, name="dfguard-champion-watch", daemon=True).start()
        provide_status(self.status)

    @bentoml.on_shutdown
    def close(self) -> None:
        """Stop watching the registry and write what is still queued for the store."""
        self._stop.set()
        if not self.writer.close(timeout=10):
            log.warning("prediction store: %s", self.writer.stats())

    def _watch_registry(self) -> None:
        while not self._stop.wait(SERVE.reload_interval_s):
            self.models.refresh()

    def status(self) -> dict[str, Any]:
        return {**self.models.status(), "store": self.writer.stats()}

    def __is_ready__(self) -> bool:
        return self.models.current() is not None

    def __metrics__(self, content: str) -> str:
        """BentoML's metrics plus the served model and the prediction store's health."""
        served = self.models.current()
        stats = self.writer.stats()
        lines = [
            "# HELP dfguard_model_info The model being served",
            "# TYPE dfguard_model_info gauge",
            f'dfguard_model_info{{version="{served.version if served else ""}",'
            f'alias="{served.alias if served else ""}"}} {1 if served else 0}',
        ]
        for key, kind in (
            ("written", "counter"),
            ("failed_attempts", "counter"),
            ("dropped", "counter"),
            ("pending", "gauge"),
        ):
            name = f"dfguard_store_{key}" + ("_total" if kind == "counter" else "")
            lines += [f"# TYPE {name} {kind}", f"{name} {stats[key]}"]
        return content + "\n".join(lines) + "\n"

    # -- judging ------------------------------------------------------------------------------------
    def _judge(self, path: Path, explain: bool, endpoint: str, key_id: str) -> Judgement:
        served = self.models.current()
        if served is None:
            raise bentoml.exceptions.ServiceUnavailable("no model loaded yet: see /readyz")
        judgement = judge_file(served, path, SERVE, explain)
        verdicts.labels(
            endpoint=endpoint, verdict=judgement.answer["verdict"], model_version=served.version
        ).inc()
        self.writer.submit(store_record(judgement, served, key_id, CONFIG.feedback.keep_uploads))
        return judgement

    @bentoml.api(route="/detect")
    def detect(self, file: FileUpload, explain: bool = False, ctx: bentoml.Context = None) -> dict[str, Any]:
        """Judge one image or video: FAKE, REAL or UNCERTAIN with a calibrated fake probability, or a
        status saying why it was not judged (NO_FACE, FACE_TOO_SMALL, UNREADABLE, TOO_SHORT,
        UNSUPPORTED, TOO_LARGE). `explain=true` adds Grad-CAM overlays of the most suspicious faces."""
        return self._judge(file, explain, "detect", key_of(ctx)).answer

    @bentoml.api(route="/detect/batch")
    def detect_batch(self, files: list[FileUpload], ctx: bentoml.Context = None) -> dict[str, Any]:
        """Judge several files in one call: one answer per file, in order; a bad file gets its status and
        never fails the others."""
        if len(files) > SERVE.max_batch_files:
            raise bentoml.exceptions.InvalidArgument(
                f"{len(files)} files; at most {SERVE.max_batch_files} per batch"
            )
        key_id = key_of(ctx)
        return {"results": [self._judge(path, False, "detect_batch", key_id).answer for path in files]}

    @bentoml.task(route="/detect_job")
    def detect_job(
        self, file: FileUpload, explain: bool = False, ctx: bentoml.Context = None
    ) -> dict[str, Any]:
        """`/detect` as an asynchronous job, for long videos: POST /detect_job/submit returns a task_id;
        GET /detect_job/status and /detect_job/get?task_id=... follow it; PUT /detect_job/cancel stops it."""
        return self._judge(file, explain, "detect_job", key_of(ctx)).answer

    @extra.get("/model")
    def model(self) -> JSONResponse:
        served = self.models.current()
        if served is None:
            return JSONResponse({"error": {"code": "NOT_READY", "message": "no model loaded yet"}}, 503)
        return JSONResponse({**served.info, "alias": served.alias, "loaded_at": served.loaded_at})

    @extra.post("/admin/reload")
    def admin_reload(self, request: Request) -> JSONResponse:
        changed = self.models.refresh()
        return JSONResponse({"changed": changed, **self.models.status()})


def key_of(ctx: bentoml.Context | None) -> str:
    """The API key id the guard middleware set for this request ("" without auth)."""
    return ctx.request.headers.get("x-dfguard-key-id", "") if ctx is not None else ""


# Outermost first: a caller is identified and rate-limited before a byte of its body is read. The
# guard's and the body limit's errors have the service's shape already; ErrorShapeMiddleware gives it
# to BentoML's and Starlette's, and /docs.json describes them all.
Detector.add_asgi_middleware(GuardMiddleware, cfg=SERVE)
Detector.add_asgi_middleware(BodyLimitMiddleware, cfg=SERVE)
Detector.add_asgi_middleware(ReadyzMiddleware)
Detector.add_asgi_middleware(
    OpenAPIMiddleware, document=lambda: service_document(Detector.openapi_spec.asdict(), SERVE)
)
Detector.add_asgi_middleware(ErrorShapeMiddleware)
