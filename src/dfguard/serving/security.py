"""The service's HTTP input safety, as plain ASGI middleware: API keys, a rate limit per caller and
request body caps enforced while the body streams in. BentoML has none of these built in.

Wiring, in `service/service.py` (the middleware added first is the outermost, so callers are
authenticated before any of their body is read):

    keys_for(cfg.serve)  # fail at import, not at the first request: Starlette builds middleware lazily
    MyService.add_asgi_middleware(GuardMiddleware, cfg=cfg.serve)
    MyService.add_asgi_middleware(BodyLimitMiddleware, cfg=cfg.serve)

Every error these answer is JSON of one shape, `{"error": {"code": ..., "message": ...}}`
(`error_body`, `send_error`), and carries no detail of the server's internals.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import math
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header

from dfguard.config import ServeConfig

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

KEYS_ENV = "DFGUARD_API_KEYS"
KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_HASH_PATTERN = re.compile(r"[0-9a-fA-F]{64}")
# The header the API functions read the caller's key id from (via `bentoml.Context`); the guard sets
# it on every request, after removing whatever the client sent under that name.
KEY_ID_HEADER = b"x-dfguard-key-id"
# Where the key id also goes for code that sees the ASGI scope.
KEY_ID_STATE = "dfguard_key_id"

# BentoML's own probes, metrics and docs UI: open to anyone, and never rate limited (a prober or a
# metrics scraper must not use up a caller's allowance, nor be turned away by it).
DEFAULT_PUBLIC_PATHS = ("/livez", "/healthz", "/readyz", "/metrics", "/docs.json", "/docs", "/")
DEFAULT_PUBLIC_PREFIXES = ("/static_content/",)
DEFAULT_ADMIN_PATHS = ("/admin/reload",)
# The routes that take one upload (`/detect_job` is BentoML's synchronous call of the job), and the
# ones that take several; and the form field that carries the upload(s) on each.
DEFAULT_UPLOAD_PATHS = ("/detect", "/detect_job", "/detect_job/submit")
DEFAULT_BATCH_PATHS = ("/detect/batch",)
UPLOAD_FIELD, BATCH_FIELD = "file", "files"

MB = 1024 * 1024  # the `*_mb` settings are MiB, as `ls -lh` shows sizes
# A multipart body is its files plus boundaries and part headers (a few hundred bytes per part); this
# allowance lets a file of exactly the cap through.
MULTIPART_ALLOWANCE = 64 * 1024
# A batch may name many videos, but one request holding gigabytes ties up a worker's memory and disk
# for minutes: larger work goes through the job endpoints, one video each.
BATCH_CEILING_MB = 1024.0
# JSON bodies (job status, cancel, admin): nothing legitimate comes near this.
DEFAULT_OTHER_MAX_BYTES = 1 * MB
# Client addresses without auth can be many: beyond this many buckets the least recently used goes.
DEFAULT_MAX_BUCKETS = 10_000


def error_body(code: str, message: str) -> bytes:
    """The JSON body of every error the service answers."""
    return json.dumps({"error": {"code": code, "message": message}}).encode()


async def send_error(
    send: Send, status: int, code: str, message: str, headers: Iterable[tuple[str, str]] = ()
) -> None:
    """Answer a whole error response (`error_body`) through an ASGI `send`."""
    body = error_body(code, message)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *((name.encode("latin-1"), value.encode("latin-1")) for name, value in headers),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# --- API keys -----------------------------------------------------------------------------------------


def hash_key(secret: str) -> str:
    """The SHA-256 hex digest a key is stored and compared as. The secrets are 256-bit random tokens
    (`new_key`), so no search over the hash can find one whatever its speed: a slow password hash
    (bcrypt, scrypt) only protects guessable secrets, and would add its cost to every request."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _check_key_id(key_id: str) -> None:
    if not KEY_ID_PATTERN.fullmatch(key_id):
        raise ValueError(f"bad key id {key_id!r}: use 1-64 letters, digits, '_', '.' or '-'")


def new_key(key_id: str) -> tuple[str, str]:
    """A fresh secret for `key_id`, and the `key_id:sha256hex` line that stores it."""
    _check_key_id(key_id)
    secret = "dfg_" + secrets.token_urlsafe(32)
    return secret, f"{key_id}:{hash_key(secret)}"


@dataclass(frozen=True)
class ApiKeys:
    """The accepted keys: each key id and the hash of its secret."""

    hashes: Mapping[str, str]

    @property
    def ids(self) -> list[str]:
        return sorted(self.hashes)

    def __len__(self) -> int:
        return len(self.hashes)

    def identify(self, secret: str) -> str | None:
        """The id of the key whose secret this is, or None. Every stored hash is compared, in constant
        time, so the time taken tells nothing about which or how many keys a guess came near."""
        digest = hash_key(secret)
        found = None
        for key_id, stored in self.hashes.items():
            if hmac.compare_digest(digest, stored):
                found = key_id
        return found


def _parse_entries(entries: Iterable[str], where: Callable[[int], str], keys: dict[str, str]) -> None:
    """Add `key_id:sha256hex` entries to `keys`. An error names the entry but never echoes its text:
    a secret pasted where its hash belongs must not reach a log."""
    for number, raw in enumerate(entries, start=1):
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        key_id, colon, digest = (part.strip() for part in entry.partition(":"))
        if not colon:
            raise ValueError(f"{where(number)}: expected `key_id:sha256hex`")
        if not KEY_ID_PATTERN.fullmatch(key_id):
            raise ValueError(f"{where(number)}: bad key id: use 1-64 letters, digits, '_', '.' or '-'")
        if not _HASH_PATTERN.fullmatch(digest):
            raise ValueError(
                f"{where(number)}: key {key_id!r}: the hash must be 64 hex characters (sha256 of the key)"
            )
        if key_id in keys:
            raise ValueError(f"{where(number)}: duplicate key id {key_id!r}")
        keys[key_id] = digest.lower()


def load_keys(keys_file: str | Path, env: Mapping[str, str] | None = None) -> ApiKeys:
    """The keys of `keys_file` ("": none) and of `DFGUARD_API_KEYS` in `env` (default: the process's
    environment; entries separated by commas or newlines). Raises ValueError naming the file and line
    of a malformed entry, a bad key id, a duplicate id or a malformed hash."""
    environment = os.environ if env is None else env
    keys: dict[str, str] = {}
    if keys_file:
        path = Path(keys_file)
        if not path.is_file():
            raise FileNotFoundError(f"keys file {path} does not exist: add a key with `dfguard keys add ID`")
        _parse_entries(path.read_text().splitlines(), lambda number: f"{path} line {number}", keys)
    entries = re.split(r"[,\n]", environment.get(KEYS_ENV, ""))
    _parse_entries(entries, lambda number: f"{KEYS_ENV} entry {number}", keys)
    return ApiKeys(keys)


def add_key(keys_file: str | Path, key_id: str) -> str:
    """Create a key: append its hashed line to `keys_file` (created, with its folder, readable by its
    owner only) and return the secret, which is stored nowhere. Refuses an id the file already has."""
    path = Path(keys_file)
    text = path.read_text() if path.is_file() else ""
    if key_id in load_keys(path if text else "", env={}).hashes:
        raise ValueError(f"key id {key_id!r} is already in {path}")
    secret, line = new_key(key_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A last line without its newline would otherwise run into the new one.
    separator = "\n" if text and not text.endswith("\n") else ""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "w") as out:
        out.write(f"{separator}{line}\n")
    return secret


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def auth_required(cfg: ServeConfig) -> bool:
    """Whether callers need a key: "on" / "off" say so; "auto" requires one unless the service listens
    on a loopback address only."""
    if cfg.auth not in ("auto", "on", "off"):
        raise ValueError(f"serve.auth must be auto, on or off, not {cfg.auth!r}")
    if cfg.auth == "auto":
        return not _is_loopback(cfg.host)
    return cfg.auth == "on"


def keys_for(cfg: ServeConfig, env: Mapping[str, str] | None = None) -> ApiKeys | None:
    """The keys the service accepts, or None when auth is off. Raises ValueError when auth is required
    and there are none, so a service bound beyond localhost never runs open by mistake."""
    if not auth_required(cfg):
        return None
    keys = load_keys(cfg.keys_file, env)
    if not keys:
        raise ValueError(
            "auth is on but no API keys: add one with `dfguard keys add ID` and set serve.keys_file "
            f"(or {KEYS_ENV})"
        )
    return keys


# --- rate limit ---------------------------------------------------------------------------------------


class RateLimiter:
    """One token bucket per caller: `burst` requests at once, then `rate_per_s` sustained. Thread-safe
    (BentoML may call from several threads), and bounded: a bucket idle long enough to have refilled is
    the same as a new one, so it is dropped; past `max_buckets`, the least recently used goes too."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_buckets: int = DEFAULT_MAX_BUCKETS,
    ) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError(
                f"serve.rate_per_s must be > 0 and serve.rate_burst >= 1, not {rate_per_s}, {burst}"
            )
        self._rate = rate_per_s
        self._burst = float(burst)
        self._refill_s = burst / rate_per_s
        self._clock = clock
        self._max_buckets = max_buckets
        # caller -> (tokens, when last counted), least recently used first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def acquire(self, caller: str) -> float:
        """Take a token for `caller`: 0.0 when the request may go, else the seconds until one is due."""
        with self._lock:
            now = self._clock()
            tokens, then = self._buckets.pop(caller, (self._burst, now))
            self._evict(now)
            tokens = min(self._burst, tokens + (now - then) * self._rate)
            if tokens >= 1:
                self._buckets[caller] = (tokens - 1, now)
                return 0.0
            self._buckets[caller] = (tokens, now)
            return (1 - tokens) / self._rate

    def _evict(self, now: float) -> None:
        while self._buckets:
            oldest, (_, then) = next(iter(self._buckets.items()))
            if now - then < self._refill_s and len(self._buckets) < self._max_buckets:
                return
            del self._buckets[oldest]


# --- middleware ---------------------------------------------------------------------------------------


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    return next((value.decode("latin-1") for key, value in headers if key == name), None)


def _bearer(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The secret of an `Authorization: Bearer <secret>` header, or None."""
    scheme, _, secret = (_header(headers, b"authorization") or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return secret.strip() or None


class GuardMiddleware:
    """Authentication and a rate limit for the service's HTTP requests.

    Public paths (`public_paths` exactly, anything under `public_prefixes`) need no key and take no
    part in the rate limit. Every other path needs `Authorization: Bearer <secret>` when auth is
    required (`auth_required`): 401 without one or with a wrong one, 403 on `admin_paths` for a key
    outside `cfg.admin_key_ids` (with auth off, configured admin ids keep those paths shut). Requests are
    rate limited per key id (per client address without auth, or for a failed key): 429 with
    `Retry-After`. The caller's key id ("" without auth) goes to the app as the `x-dfguard-key-id`
    header, replacing any the client sent, and as `scope["state"]["dfguard_key_id"]`.

    `env` is where `DFGUARD_API_KEYS` is read (default: the process's environment); `clock` drives the
    rate limit (seconds, monotonic)."""

    def __init__(
        self,
        app: ASGIApp,
        cfg: ServeConfig,
        public_paths: Iterable[str] = DEFAULT_PUBLIC_PATHS,
        public_prefixes: Iterable[str] = DEFAULT_PUBLIC_PREFIXES,
        admin_paths: Iterable[str] = DEFAULT_ADMIN_PATHS,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self._keys = keys_for(cfg, env)
        self._admin_key_ids = frozenset(cfg.admin_key_ids)
        self._public_paths = frozenset(public_paths)
        self._public_prefixes = tuple(public_prefixes)
        self._admin_paths = frozenset(path.rstrip("/") for path in admin_paths)
        self._limiter = RateLimiter(cfg.rate_per_s, cfg.rate_burst, clock)
        if self._keys is not None and (unknown := self._admin_key_ids - set(self._keys.ids)):
            log.warning("serve.admin_key_ids names keys that do not exist: %s", ", ".join(sorted(unknown)))

    def _is_public(self, path: str) -> bool:
        if path in self._public_paths:
            return True
        # `..` would name a path outside the prefix to whatever resolves it further in.
        return path.startswith(self._public_prefixes) and ".." not in path.split("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = [(name, value) for name, value in scope["headers"] if name != KEY_ID_HEADER]
        path = scope["path"]
        if self._is_public(path):
            await self.app(self._with_key_id(scope, headers, ""), receive, send)
            return

        secret = _bearer(headers)
        key_id = self._keys.identify(secret) if self._keys is not None and secret else None
        client = scope.get("client")
        caller = f"key:{key_id}" if key_id else f"client:{client[0] if client else 'unknown'}"
        wait = self._limiter.acquire(caller)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            await send_error(
                send,
                429,
                "RATE_LIMITED",
                f"too many requests: retry in {retry_after} s",
                [("retry-after", str(retry_after))],
            )
            return
        if self._keys is not None and secret is None:
            await send_error(
                send,
                401,
                "UNAUTHORIZED",
                "an API key is required: send `Authorization: Bearer <key>`",
                [("www-authenticate", "Bearer")],
            )
            return
        if self._keys is not None and key_id is None:
            await send_error(
                send,
                401,
                "INVALID_API_KEY",
                "the API key is not valid",
                [("www-authenticate", 'Bearer error="invalid_token"')],
            )
            return
        # Without auth no caller can be told apart, so configured admin ids keep the admin paths shut.
        if (
            path.rstrip("/") in self._admin_paths
            and self._admin_key_ids
            and (key_id or "") not in self._admin_key_ids
        ):
            await send_error(send, 403, "FORBIDDEN", "this key may not use the admin endpoints")
            return
        await self.app(self._with_key_id(scope, headers, key_id or ""), receive, send)

    @staticmethod
    def _with_key_id(scope: Scope, headers: list[tuple[bytes, bytes]], key_id: str) -> Scope:
        inner = {**scope, "headers": [*headers, (KEY_ID_HEADER, key_id.encode())]}
        inner.setdefault("state", {})[KEY_ID_STATE] = key_id
        return inner


def size_cap_for(kind: str, cfg: ServeConfig) -> int:
    """The largest upload of a kind ("image" or "video") the service takes, in bytes."""
    caps_mb = {"image": cfg.max_image_mb, "video": cfg.max_video_mb}
    if kind not in caps_mb:
        raise ValueError(f"unknown upload kind {kind!r}: expected one of {', '.join(caps_mb)}")
    return int(caps_mb[kind] * MB)


class BodyLimitMiddleware:
    """A cap on each request's body, by path, enforced up front from `Content-Length` and again while
    the body streams in (chunked bodies have no length): past it the answer is 413 and the app is told
    the client went away. The body is counted, never buffered. A multipart form's framing is checked
    as it streams, too: a malformed one gets 400 here, where BentoML 1.4 would answer 500. So does a
    form whose upload field (`upload_field` on `upload_paths`, `batch_field` on `batch_paths`) is text,
    which BentoML would take for a URL and download (public addresses only, but past every size cap,
    and 500 when it fails), or with a file in any other field, which it would decode as JSON text (500
    for binary content); and an upload path answers 415 to a URL-encoded form.

    An upload's kind is only known from its bytes, so `upload_paths` are capped at the largest kind's
    (video); the service checks the image cap itself once it has sniffed the upload. `batch_paths` are
    capped at `batch_max_mb` (default: `max_batch_files` videos, at most `BATCH_CEILING_MB`); every
    other path at `other_max_bytes`."""

    def __init__(
        self,
        app: ASGIApp,
        cfg: ServeConfig,
        upload_paths: Iterable[str] = DEFAULT_UPLOAD_PATHS,
        batch_paths: Iterable[str] = DEFAULT_BATCH_PATHS,
        batch_max_mb: float | None = None,
        other_max_bytes: int = DEFAULT_OTHER_MAX_BYTES,
        upload_field: str = UPLOAD_FIELD,
        batch_field: str = BATCH_FIELD,
    ) -> None:
        self.app = app
        self._fields = {path: upload_field for path in upload_paths} | {
            path: batch_field for path in batch_paths
        }
        upload_cap = size_cap_for("video", cfg) + MULTIPART_ALLOWANCE
        batch_mb = min(cfg.max_batch_files * cfg.max_video_mb, BATCH_CEILING_MB)
        batch_cap = int((batch_max_mb or batch_mb) * MB) + cfg.max_batch_files * MULTIPART_ALLOWANCE
        self._caps = {path: upload_cap for path in upload_paths} | {path: batch_cap for path in batch_paths}
        self._other_max_bytes = other_max_bytes

    def cap_for_path(self, path: str) -> int:
        """The most bytes a request body to `path` may hold."""
        return self._caps.get(path.rstrip("/") or "/", self._other_max_bytes)

    def upload_field_for_path(self, path: str) -> str | None:
        """The form field that carries files on `path` (None: no field may)."""
        return self._fields.get(path.rstrip("/") or "/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.cap_for_path(scope["path"])
        # An unreadable length is left to the streaming count (servers refuse such requests anyway).
        declared = [
            int(value) for name, value in scope["headers"] if name == b"content-length" and value.isdigit()
        ]
        if declared and max(declared) > cap:
            await send_error(send, 413, "TOO_LARGE", _too_large(cap))
            return

        upload_field = self.upload_field_for_path(scope["path"])
        kind, options = parse_options_header(_header(scope["headers"], b"content-type") or "")
        # BentoML reads a URL-encoded form as it reads a multipart one, but such a form has no files:
        # its upload field could only be text, a URL BentoML would download.
        if upload_field is not None and kind == b"application/x-www-form-urlencoded":
            message = f"send the upload as multipart/form-data, the file in the `{upload_field}` field"
            await send_error(send, 415, "UNSUPPORTED_MEDIA_TYPE", message)
            return
        form = (
            _FormChecker(options.get(b"boundary", b""), upload_field)
            if kind == b"multipart/form-data"
            else None
        )

        received = 0
        refused = False
        response_started = False

        async def refuse(status: int, code: str, message: str) -> Message:
            nonlocal refused
            refused = True
            if not response_started:
                await send_error(send, status, code, message)
            # The app stops reading as it would for a client that hung up, and never sees the rest.
            return {"type": "http.disconnect"}

        async def checking_receive() -> Message:
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] != "http.request":
                return message
            nonlocal received
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > cap:
                return await refuse(413, "TOO_LARGE", _too_large(cap))
            if form is not None:
                try:
                    form.write(chunk)
                    if not message.get("more_body", False):
                        form.finalize()
                except FormFieldError as err:
                    return await refuse(400, err.code, str(err))
                except (MultipartParseError, ValueError) as err:
                    return await refuse(400, "MALFORMED_REQUEST", f"the multipart form cannot be read: {err}")
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            # After a refusal the app's own answer (likely an error about the disconnect) must not go out.
            if refused:
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, checking_receive, guarded_send)
        except Exception:
            # An app that raises on the disconnect we made up: the refusal has answered the request.
            if not refused:
                raise
            log.debug("app raised after its request body was refused", exc_info=True)


MAX_FILENAME_BYTES = 200  # an upload's file name, as sent; its name never becomes a path here


class FormFieldError(ValueError):
    """A form field dfguard refuses: `code` NOT_A_FILE (text where a file belongs), UNEXPECTED_FILE
    (a file where none does) or FILENAME_TOO_LONG."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _FormChecker:
    """A streaming parser of a multipart/form-data body that checks its framing (BentoML 1.4 answers a
    malformed form with 500, so the guard finds it first), that every part has a name, and that the
    parts named `upload_field` are files and no others are (a part is a file when its
    Content-Disposition has a filename, as Starlette decides); it keeps nothing of their content."""

    def __init__(self, boundary: bytes, upload_field: str | None) -> None:
        self._upload_field = upload_field
        self._field = bytearray()
        self._value = bytearray()
        self._disposition = b""
        callbacks = {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
        }
        self._parser = MultipartParser(boundary, callbacks=callbacks)

    def write(self, chunk: bytes) -> None:
        self._parser.write(chunk)

    def finalize(self) -> None:
        self._parser.finalize()

    def _part_begin(self) -> None:
        self._disposition = b""

    def _header_end(self) -> None:
        if bytes(self._field).lower() == b"content-disposition":
            self._disposition = bytes(self._value)
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if not options.get(b"name"):
            raise ValueError("a form part has no Content-Disposition name")
        name = options[b"name"].decode("latin-1")
        is_file = b"filename" in options
        if name == self._upload_field and not is_file:
            raise FormFieldError(
                "NOT_A_FILE", f"the form field `{name}` must be a file (a part with a filename)"
            )
        if is_file and name != self._upload_field:
            takes = f"only `{self._upload_field}` does" if self._upload_field else "this path takes none"
            raise FormFieldError("UNEXPECTED_FILE", f"the form field `{name}` takes no file: {takes}")
        # BentoML names its temporary file after the upload's name: one past the filesystem's 255-byte
        # limit would fail there with OSError (a 500) before dfguard saw the upload.
        filename = options.get(b"filename", b"")
        if len(filename) > MAX_FILENAME_BYTES:
            raise FormFieldError(
                "FILENAME_TOO_LONG",
                f"the uploaded file's name is {len(filename)} bytes long: at most {MAX_FILENAME_BYTES}",
            )


def _too_large(cap: int) -> str:
    return f"request body too large: at most {cap / MB:.1f} MiB here"
