"""`GET /readyz` with its reasons: BentoML's own answers 200 or 503 with a fixed text, where an operator
needs to see which model is served and whether the registry and the prediction store answer.

The service registers its status function with `provide_status` when its instance starts (one per
worker process); the middleware answers from it, or passes the request on to BentoML's `/readyz` while
no instance has started.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

READYZ = "/readyz"
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_status: Callable[[], dict[str, Any]] | None = None


def provide_status(status: Callable[[], dict[str, Any]]) -> None:
    """Set the function whose dict `/readyz` answers (its key `ready` decides 200 or 503)."""
    global _status
    _status = status


class ReadyzMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status = _status
        if scope["type"] != "http" or scope["path"] != READYZ or scope["method"] != "GET" or status is None:
            await self.app(scope, receive, send)
            return
        detail = await anyio.to_thread.run_sync(status)
        body = json.dumps(detail, default=str).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send(
            {"type": "http.response.start", "status": 200 if detail.get("ready") else 503, "headers": headers}
        )
        await send({"type": "http.response.body", "body": body})
