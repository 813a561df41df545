"""The service's answers and the document that describes them: every error in one JSON shape, and a
`/docs.json` that says what the service really answers.

BentoML 1.4 answers its own errors in three shapes (`{"error": str}`, `{"error": str, "detail": [...]}`
for a validation error, and a one-element list for an `InvalidArgument`), Starlette and FastAPI in two
more (text, `{"detail": str}`); the guard middleware answers `{"error": {"code", "message"}}`
(`security.error_body`). `ErrorShapeMiddleware` rewrites the others into that one shape, so a client
reads every error the same way.

BentoML's OpenAPI document knows nothing of the middleware (401, 403, 413, 415, 429), describes its errors
as `{"error": str}`, and its task status with values it never answers. `service_document` corrects it,
and `OpenAPIMiddleware` serves the corrected document at `/docs.json` in place of BentoML's.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from _bentoml_impl.tasks.result import ResultStatus

from dfguard.config import ServeConfig
from dfguard.serving.health import READYZ
from dfguard.serving.security import (
    DEFAULT_ADMIN_PATHS,
    DEFAULT_PUBLIC_PATHS,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    auth_required,
    error_body,
)

DOCS_PATH = "/docs.json"
# Paths that answer 503 while no model is loaded, besides the judging operations (those with a body).
NOT_READY_PATHS = ("/model",)
ERROR_SCHEMA = "Error"
SECURITY_SCHEME = "apiKey"
# The codes of errors the service's own code does not name (BentoML's, Starlette's), by status.
CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "INVALID_ARGUMENT",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
    503: "NOT_READY",
}
# An error body is a few hundred bytes; anything longer is cut to this in the message.
MAX_MESSAGE_CHARS = 500


def _is_our_shape(body: Any) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, dict) and isinstance(error.get("code"), str) and "message" in error


def _validation_message(detail: list) -> str:
    """`file: Field required; explain: Input should be a valid boolean` from pydantic's error list."""
    parts = []
    for item in detail:
        if isinstance(item, dict):
            where = ".".join(str(part) for part in item.get("loc", ()))
            parts.append(f"{where}: {item.get('msg', '')}" if where else str(item.get("msg", "")))
    return "; ".join(parts)


def normalized_error(status: int, body: bytes) -> bytes | None:
    """The body of an error answer (`status` >= 400) in the service's shape, or None when it has it
    already. What the original said is kept as the message (pydantic's list as `detail` too)."""
    try:
        parsed: Any = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        parsed = None
    if _is_our_shape(parsed):
        return None
    if isinstance(parsed, list) and len(parsed) == 1:  # BentoML's InvalidArgument: a one-element list
        parsed = parsed[0]
    detail = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        message, detail = parsed["error"], parsed.get("detail")
        if isinstance(detail, list) and (fields := _validation_message(detail)):
            message = f"{message}: {fields}"
    elif isinstance(parsed, dict) and isinstance(parsed.get("detail"), str):
        message = parsed["detail"]
    else:
        # A server error's text may be a traceback (Starlette's debug page): only its status goes out.
        message = body.decode("utf-8", "replace").strip() if status < 500 else ""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    message = (message or phrase)[:MAX_MESSAGE_CHARS]
    code = CODES.get(status, phrase.upper().replace(" ", "_"))
    if detail is None:
        return error_body(code, message)
    return json.dumps({"error": {"code": code, "message": message, "detail": detail}}).encode()


class ErrorShapeMiddleware:
    """Rewrites every error answer (status >= 400) that is not in the service's shape into it
    (`normalized_error`). Other answers stream through untouched; an error's body is held until it is
    whole (they are small), then sent once with its new length."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def shaping_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            shaped = normalized_error(start["status"], body)
            headers = list(start.get("headers", []))
            if shaped is not None:
                body = shaped
                kept = [(k, v) for k, v in headers if k.lower() not in (b"content-length", b"content-type")]
                headers = [
                    *kept,
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ]
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, shaping_send)


# --- the document -------------------------------------------------------------------------------------


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "title": ERROR_SCHEMA,
        "description": "Every error the service answers",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "description": "e.g. INVALID_ARGUMENT, RATE_LIMITED"},
                    "message": {"type": "string"},
                    "detail": {"description": "what a validation error found, field by field"},
                },
            }
        },
    }


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}}},
    }


def _task_status_schema() -> dict[str, Any]:
    """What BentoML answers of a job: only `task_id` and `status` on submit and retry, the times too on
    `/status`; the status values are its `ResultStatus`, not the ones its document lists."""
    return {
        "type": "object",
        "title": "TaskStatusResponse",
        "required": ["task_id", "status"],
        "properties": {
            "task_id": {"type": "string"},
            "status": {"type": "string", "enum": [status.value for status in ResultStatus]},
            "created_at": {"type": "string"},
            "executed_at": {"type": "string", "nullable": True},
            "completed_at": {"type": "string", "nullable": True},
        },
    }


def service_document(
    bentoml_spec: dict[str, Any],
    cfg: ServeConfig,
    public_paths: Iterable[str] = DEFAULT_PUBLIC_PATHS,
    admin_paths: Iterable[str] = DEFAULT_ADMIN_PATHS,
) -> dict[str, Any]:
    """BentoML's OpenAPI document of the service (`Service.openapi_spec.asdict()`), corrected to what the
    service answers: the one error shape for every error status; `/readyz`'s 503; 400, 413 and 429 (and
    401 with a bearer scheme when `cfg` requires keys) on every guarded operation, 403 on the admin ones
    when admin keys are named, 415 on the upload ones; 503 where no model may be loaded yet; BentoML's
    job statuses as it answers them; and one operation id per operation."""
    document = copy.deepcopy(bentoml_spec)
    public, admin = frozenset(public_paths), frozenset(admin_paths)
    guarded_base = {400: "Bad Request", 413: "Request body too large", 429: "Too many requests"}
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in ("InvalidArgument", "NotFound", "InternalServerError"):
        schemas.pop(name, None)
    schemas[ERROR_SCHEMA] = _error_schema()
    schemas["TaskStatusResponse"] = _task_status_schema()
    keys = auth_required(cfg)
    if keys:
        document["components"]["securitySchemes"] = {SECURITY_SCHEME: {"type": "http", "scheme": "bearer"}}
    seen_ids: set[str] = set()
    for path, item in document["paths"].items():
        for operation in item.values():
            # BentoML 1.4 gives cancel the retry's operation id: the path names it instead.
            if (operation_id := operation.get("operationId")) is not None:
                if operation_id in seen_ids:
                    service = operation_id.split("__")[0]
                    operation["operationId"] = f"{service}__{path.strip('/').replace('/', '_')}"
                seen_ids.add(operation["operationId"])
            responses = operation.setdefault("responses", {})
            for status in list(responses):
                if int(status) >= 400:
                    responses[status] = _error_response(responses[status].get("description", ""))
            if path == READYZ:
                responses["503"] = {
                    "description": "Not ready (no model loaded yet): the same detail",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            if path in public:
                continue
            guarded = dict(guarded_base)
            if keys:
                guarded[401] = "Missing or invalid API key"
                operation["security"] = [{SECURITY_SCHEME: []}]
            if path in admin and cfg.admin_key_ids:
                guarded[403] = "This key may not use the admin endpoints"
            if "requestBody" in operation:
                guarded[415] = "A URL-encoded form, which cannot carry the upload"
            if "requestBody" in operation or path in NOT_READY_PATHS:
                guarded[503] = "No model loaded yet"
            for status, description in guarded.items():
                responses.setdefault(str(status), _error_response(description))
    return document


class OpenAPIMiddleware:
    """Answers `GET /docs.json` with `document()` (made once, on the first request: BentoML builds its
    own spec from the service, which is complete only once the module is imported)."""

    def __init__(self, app: ASGIApp, document: Callable[[], dict[str, Any]]) -> None:
        self.app = app
        self._document = document
        self._body: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != DOCS_PATH or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        if self._body is None:
            self._body = json.dumps(self._document()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(self._body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self._body})
