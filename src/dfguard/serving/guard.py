"""What stands between the network and the detector: API keys, a rate limit per key, and size caps on
request bodies, as plain ASGI middleware (BentoML has none of them built in).

Keys are long random secrets (`new_key`), kept only as SHA-256 digests: a fast hash is right for them,
unlike passwords, since a 256-bit random secret cannot be guessed from its digest however fast it is.
The key file holds one `key_id:sha256` per line; $DFGUARD_API_KEYS adds more in the same form.

Every refusal is JSON of one shape, `{"error": {"code": ..., "message": ...}}`, never a stack trace.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dfguard.config import ServeConfig

KEYS_ENV = "DFGUARD_API_KEYS"
KEY_ID_HEADER = b"x-dfguard-key-id"  # set by the guard for the service; a client's own is dropped
KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DIGEST = re.compile(r"^[0-9a-f]{64}$")
# Open to anyone: probes, metrics scrapers and the API's own documentation.
PUBLIC_PATHS = frozenset({"/", "/livez", "/readyz", "/metrics", "/docs", "/docs.json"})
PUBLIC_PREFIXES = ("/static_content/",)
ADMIN_PATHS = frozenset({"/admin/reload"})
MAX_BUCKETS = 10_000  # rate-limit state kept for at most this many callers; the idlest go first

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


async def send_error(
    send: Send, status: int, code: str, message: str, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    body = error_body(code, message)
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


# -- keys ----------------------------------------------------------------------------------------------
def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key(key_id: str) -> tuple[str, str]:
    """(secret, the line of the key file that admits it); the secret is shown once and never stored."""
    if not KEY_ID.match(key_id):
        raise ValueError(f"key id {key_id!r}: use 1-64 letters, digits, '_', '.' or '-'")
    secret = "dfg_" + secrets.token_urlsafe(32)
    return secret, f"{key_id}:{hash_key(secret)}"


@dataclass(frozen=True)
class ApiKeys:
    digests: dict[str, str] = field(default_factory=dict)  # key id -> sha256 of its secret

    def identify(self, secret: str) -> str | None:
        """The id of the key `secret` is, or None; compared in constant time against every key."""
        digest = hash_key(secret)
        found = None
        for key_id, known in self.digests.items():
            if hmac.compare_digest(digest, known):
                found = key_id
        return found


def _parse_keys(lines: Iterable[str], where: str, keys: dict[str, str]) -> None:
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key_id, sep, digest = line.partition(":")
        if not sep or not KEY_ID.match(key_id) or not DIGEST.match(digest):
            raise ValueError(
                f"{where} line {number}: expected key_id:sha256 (64 hex digits), got {line[:40]!r}"
            )
        if key_id in keys:
            raise ValueError(f"{where} line {number}: key id {key_id!r} appears twice")
        keys[key_id] = digest


def load_keys(keys_file: str, env: dict[str, str] | None = None) -> ApiKeys:
    """The keys of `keys_file` ("" for none) and of $DFGUARD_API_KEYS (comma- or newline-separated)."""
    keys: dict[str, str] = {}
    if keys_file:
        path = Path(keys_file)
        if not path.is_file():
            raise ValueError(f"serve.keys_file {path} does not exist: add a key with `dfguard keys add ID`")
        _parse_keys(path.read_text().splitlines(), str(path), keys)
    extra = (env if env is not None else os.environ).get(KEYS_ENV, "")
    _parse_keys(re.split(r"[,\n]", extra), f"${KEYS_ENV}", keys)
    return ApiKeys(keys)


def auth_required(cfg: ServeConfig) -> bool:
    """ "auto": keys are required as soon as the service listens beyond this machine."""
    if cfg.auth not in {"auto", "on", "off"}:
        raise ValueError(f"serve.auth is {cfg.auth!r}: use auto, on or off")
    if cfg.auth != "auto":
        return cfg.auth == "on"
    if cfg.host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(cfg.host).is_loopback
    except ValueError:  # a host name other than localhost: reachable from elsewhere
        return True


# -- rate limit -------------------------------------------------------------------------------------------
class RateLimiter:
    """A token bucket per caller: `burst` requests at once, then `rate_per_s` sustained."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError(f"rate limit {rate_per_s}/s with burst {burst}: both must be positive")
        self.rate, self.burst, self.clock = rate_per_s, float(burst), clock
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, time of the last refill)
        self._lock = threading.Lock()

    def acquire(self, caller: str) -> float:
        """0 when the request may go, else the seconds until it could."""
        now = self.clock()
        with self._lock:
            tokens, then = self._buckets.pop(caller, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            self._buckets[caller] = (tokens - 1 if wait == 0 else tokens, now)  # re-inserted: newest last
            if len(self._buckets) > MAX_BUCKETS:
                del self._buckets[next(iter(self._buckets))]
        return wait


# -- middleware --------------------------------------------------------------------------------------------
def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


class GuardMiddleware:
    """API keys and the rate limit for every path but the public ones; admin paths need an admin key.

    The caller's key id reaches the service as the header `x-dfguard-key-id` (any the client sent is
    removed first, so it cannot be forged): "" without auth.
    """

    def __init__(self, app: ASGIApp, cfg: ServeConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.required = auth_required(cfg)
        self.keys = load_keys(cfg.keys_file) if self.required else ApiKeys()
        if self.required and not self.keys.digests:
            raise ValueError("auth is on but there are no API keys: add one with `dfguard keys add ID`")
        self.admins = frozenset(cfg.admin_key_ids)
        self.limiter = RateLimiter(cfg.rate_per_s, cfg.rate_burst, clock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != KEY_ID_HEADER]
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            await self.app({**scope, "headers": headers}, receive, send)
            return
        key_id = ""
        if self.required:
            scheme, _, secret = _header(scope, b"authorization").partition(" ")
            if scheme.lower() != "bearer" or not secret.strip():
                await send_error(
                    send,
                    401,
                    "UNAUTHORIZED",
                    "send an API key: Authorization: Bearer <key>",
                    [(b"www-authenticate", b"Bearer")],
                )
                return
            found = self.keys.identify(secret.strip())
            if found is None:
                await send_error(
                    send, 401, "UNAUTHORIZED", "unknown API key", [(b"www-authenticate", b"Bearer")]
                )
                return
            key_id = found
            if path in ADMIN_PATHS and self.admins and key_id not in self.admins:
                await send_error(send, 403, "FORBIDDEN", f"key {key_id!r} may not call {path}")
                return
        client = scope.get("client")
        wait = self.limiter.acquire(key_id or (client[0] if client else "?"))
        if wait > 0:
            retry = str(max(1, math.ceil(wait))).encode()
            await send_error(
                send, 429, "RATE_LIMITED", "too many requests: slow down", [(b"retry-after", retry)]
            )
            return
        headers.append((KEY_ID_HEADER, key_id.encode()))
        await self.app({**scope, "headers": headers}, receive, send)


class BodyLimitMiddleware:
    """Refuses a request body over the cap (413) from its Content-Length, or while it streams in without
    one, before the service has read (or a decoder has seen) more than the cap.

    The cap is the largest kind's per file (an upload's kind is only known from its bytes; the service
    applies the image cap after sniffing), times `max_batch_files` for a batch.
    """

    def __init__(self, app: ASGIApp, cfg: ServeConfig) -> None:
        self.app = app
        self.per_file = int(max(cfg.max_image_mb, cfg.max_video_mb) * (1 << 20)) + (1 << 16)  # + form framing
        self.per_batch = self.per_file * cfg.max_batch_files

    def cap_for(self, path: str) -> int:
        return self.per_batch if path.endswith("/batch") else self.per_file

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.cap_for(scope["path"])
        message = f"the request body is over {cap >> 20} MB"
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > cap:
            await send_error(send, 413, "TOO_LARGE", message)
            return
        received = 0
        refused = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, refused
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > cap:
                    refused = True
                    if not started:
                        await send_error(send, 413, "TOO_LARGE", message)
                    # The app sees the body end here and fails to parse it; its answer is not sent.
                    return {"type": "http.disconnect"}
            return event

        async def guarded_send(event: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or event["type"] == "http.response.start"
            await send(event)

        await self.app(scope, counted_receive, guarded_send)
