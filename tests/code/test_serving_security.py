"""The service's input safety (`dfguard.serving.security`) around a tiny real ASGI app, driven over
httpx's ASGI transport: key files, auth, the key id header, admin paths, the rate limit and body caps."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from dfguard.config import ServeConfig
from dfguard.serving.security import (
    MB,
    BodyLimitMiddleware,
    GuardMiddleware,
    RateLimiter,
    add_key,
    auth_required,
    error_body,
    hash_key,
    keys_for,
    load_keys,
    new_key,
    size_cap_for,
)

SECRET = "dfg_test-secret-for-ci"
ADMIN_SECRET = "dfg_test-secret-for-ops"
KEYS_ENV = {"DFGUARD_API_KEYS": f"ci:{hash_key(SECRET)},ops:{hash_key(ADMIN_SECRET)}"}
SERVE = ServeConfig(auth="on", admin_key_ids=("ops",), rate_per_s=1000.0, rate_burst=1000)


class EchoApp:
    """Reads the whole body and answers what it saw: the key id (header and scope state) and the body's
    length. Records every chunk it was handed."""

    def __init__(self) -> None:
        self.received = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RuntimeError("client went away")
            self.received += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = [value.decode() for name, value in scope["headers"] if name == b"x-dfguard-key-id"]
        body = json.dumps(
            {
                "key_headers": headers,
                "key_state": scope.get("state", {}).get("dfguard_key_id"),
                "bytes": self.received,
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def call(app, method: str, path: str, **kwargs) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def error_code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


# --- keys ---------------------------------------------------------------------------------------------


def test_new_key_line_identifies_its_secret(tmp_path: Path) -> None:
    secret, line = new_key("ci.runner-1")
    assert secret.startswith("dfg_") and len(secret) > 40
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# the service's keys\n\n{line}\nops:{hash_key(ADMIN_SECRET).upper()}\n")
    keys = load_keys(keys_file, env={})
    assert keys.ids == ["ci.runner-1", "ops"]
    assert keys.identify(secret) == "ci.runner-1" and keys.identify(ADMIN_SECRET) == "ops"
    assert keys.identify("dfg_guess") is None
    with pytest.raises(ValueError, match="bad key id"):
        new_key("no spaces")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (f"ci:{hash_key('a')}\nno-colon-here\n", r"keys line 2: expected `key_id:sha256hex`"),
        (f"# c\nbad id:{hash_key('a')}\n", r"keys line 2: bad key id"),
        (f"ci:{hash_key('a')}\nci:{hash_key('b')}\n", r"keys line 2: duplicate key id 'ci'"),
        (f"ci:{SECRET}\n", r"keys line 1: key 'ci': the hash must be 64 hex"),
    ],
)
def test_malformed_key_files_name_file_and_line(tmp_path: Path, text: str, error: str) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(text)
    with pytest.raises(ValueError, match=error) as raised:
        load_keys(keys_file, env={})
    # A secret pasted where its hash belongs is not echoed into the error (and so into logs).
    assert SECRET not in str(raised.value)


def test_env_keys_join_the_file_and_duplicates_across_them_fail(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"file-key:{hash_key('f')}\n")
    env = {"DFGUARD_API_KEYS": f"ci:{hash_key(SECRET)}\nops:{hash_key(ADMIN_SECRET)}, "}
    assert load_keys(keys_file, env).ids == ["ci", "file-key", "ops"]
    assert load_keys("", env).identify(SECRET) == "ci"
    with pytest.raises(ValueError, match="DFGUARD_API_KEYS entry 1: duplicate key id 'file-key'"):
        load_keys(keys_file, {"DFGUARD_API_KEYS": f"file-key:{hash_key('g')}"})
    with pytest.raises(FileNotFoundError, match="dfguard keys add"):
        load_keys(tmp_path / "missing", env={})


def test_auth_required_and_keys_for() -> None:
    assert not auth_required(ServeConfig(host="127.0.0.1"))
    assert not auth_required(ServeConfig(host="::1")) and not auth_required(ServeConfig(host="localhost"))
    assert auth_required(ServeConfig(host="0.0.0.0")) and auth_required(ServeConfig(host="detector.lan"))
    assert auth_required(ServeConfig(auth="on")) and not auth_required(
        ServeConfig(host="0.0.0.0", auth="off")
    )
    with pytest.raises(ValueError, match=r"serve\.auth"):
        auth_required(ServeConfig(auth="maybe"))
    assert keys_for(ServeConfig(), env=KEYS_ENV) is None
    with pytest.raises(ValueError, match="auth is on but no API keys: add one with `dfguard keys add ID`"):
        keys_for(ServeConfig(host="0.0.0.0"), env={})


def test_add_key_appends_a_hashed_owner_only_line(tmp_path: Path) -> None:
    keys_file = tmp_path / "service" / "api_keys"
    secret = add_key(keys_file, "ci")
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    assert keys_file.read_text() == f"ci:{hash_key(secret)}\n" and secret not in keys_file.read_text()
    keys_file.write_text(keys_file.read_text().rstrip("\n"))  # a hand edit that lost the last newline
    other = add_key(keys_file, "ops")
    assert load_keys(keys_file, env={}).identify(other) == "ops"
    with pytest.raises(ValueError, match="'ci' is already in"):
        add_key(keys_file, "ci")


# --- guard --------------------------------------------------------------------------------------------


def test_auth_missing_wrong_and_right_key() -> None:
    app = GuardMiddleware(EchoApp(), SERVE, env=KEYS_ENV)
    missing = call(app, "POST", "/detect")
    assert missing.status_code == 401 and error_code(missing) == "UNAUTHORIZED"
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.headers["content-type"] == "application/json"
    for wrong in (bearer("dfg_wrong"), {"Authorization": f"Basic {SECRET}"}):
        response = call(app, "POST", "/detect", headers=wrong)
        assert response.status_code == 401 and "www-authenticate" in response.headers
        assert error_code(response) in {"INVALID_API_KEY", "UNAUTHORIZED"}
    assert error_code(call(app, "POST", "/detect", headers=bearer("dfg_wrong"))) == "INVALID_API_KEY"
    right = call(app, "POST", "/detect", headers=bearer(SECRET), content=b"x")
    assert right.status_code == 200
    assert right.json() == {"key_headers": ["ci"], "key_state": "ci", "bytes": 1}


def test_a_forged_key_id_header_never_reaches_the_app() -> None:
    forged = {"X-Dfguard-Key-Id": "ops"}
    with_auth = GuardMiddleware(EchoApp(), SERVE, env=KEYS_ENV)
    response = call(with_auth, "POST", "/detect", headers={**bearer(SECRET), **forged})
    assert response.json()["key_headers"] == ["ci"]
    assert call(with_auth, "GET", "/livez", headers=forged).json()["key_headers"] == [""]
    without_auth = GuardMiddleware(EchoApp(), ServeConfig(auth="off"))
    assert call(without_auth, "POST", "/detect", headers=forged).json() == {
        "key_headers": [""],
        "key_state": "",
        "bytes": 0,
    }


def test_public_paths_are_open_and_everything_else_is_not() -> None:
    app = GuardMiddleware(EchoApp(), SERVE, env=KEYS_ENV)
    for path in ("/livez", "/readyz", "/metrics", "/docs", "/docs.json", "/", "/static_content/app.js"):
        assert call(app, "GET", path).status_code == 200, path
    for path in (
        "/model",
        "/detect_job/status",
        "/livez/x",
        "/static_content/../admin/reload",
        "/static_content",
    ):
        assert call(app, "GET", path).status_code == 401, path
    only_model = GuardMiddleware(EchoApp(), SERVE, public_paths=["/model"], public_prefixes=(), env=KEYS_ENV)
    assert call(only_model, "GET", "/model").status_code == 200
    assert call(only_model, "GET", "/livez").status_code == 401


def test_admin_paths_need_an_admin_key() -> None:
    app = GuardMiddleware(EchoApp(), SERVE, env=KEYS_ENV)
    for path in ("/admin/reload", "/admin/reload/"):
        refused = call(app, "POST", path, headers=bearer(SECRET))
        assert refused.status_code == 403 and error_code(refused) == "FORBIDDEN"
    assert call(app, "POST", "/admin/reload", headers=bearer(ADMIN_SECRET)).status_code == 200
    every_key = GuardMiddleware(EchoApp(), replace(SERVE, admin_key_ids=()), env=KEYS_ENV)
    assert call(every_key, "POST", "/admin/reload", headers=bearer(SECRET)).status_code == 200
    custom = GuardMiddleware(EchoApp(), SERVE, admin_paths={"/admin/purge"}, env=KEYS_ENV)
    assert call(custom, "POST", "/admin/purge", headers=bearer(SECRET)).status_code == 403
    assert call(custom, "POST", "/admin/reload", headers=bearer(SECRET)).status_code == 200


def test_rate_limit_answers_429_then_recovers() -> None:
    now = [100.0]
    cfg = replace(SERVE, rate_per_s=0.5, rate_burst=2)
    app = GuardMiddleware(EchoApp(), cfg, env=KEYS_ENV, clock=lambda: now[0])
    assert [call(app, "GET", "/model", headers=bearer(SECRET)).status_code for _ in range(2)] == [200, 200]
    limited = call(app, "GET", "/model", headers=bearer(SECRET))
    assert limited.status_code == 429 and error_code(limited) == "RATE_LIMITED"
    assert limited.headers["retry-after"] == "2"
    # Another key has its own bucket, and the public paths take from none.
    assert call(app, "GET", "/model", headers=bearer(ADMIN_SECRET)).status_code == 200
    assert call(app, "GET", "/livez").status_code == 200
    now[0] += 2.0
    assert call(app, "GET", "/model", headers=bearer(SECRET)).status_code == 200
    assert call(app, "GET", "/model", headers=bearer(SECRET)).status_code == 429
    # Without auth the client's address is the caller.
    open_app = GuardMiddleware(EchoApp(), replace(cfg, auth="off"), clock=lambda: now[0])
    assert [call(open_app, "GET", "/model").status_code for _ in range(3)] == [200, 200, 429]


def test_rate_limiter_forgets_idle_callers_and_stays_bounded() -> None:
    now = [0.0]
    limiter = RateLimiter(rate_per_s=1.0, burst=1, clock=lambda: now[0], max_buckets=2)
    assert limiter.acquire("a") == 0.0 and limiter.acquire("a") == pytest.approx(1.0)
    limiter.acquire("b")
    limiter.acquire("c")  # past max_buckets: the least recently used ("a") goes
    assert len(limiter._buckets) == 2 and limiter.acquire("a") == 0.0
    now[0] += 5.0  # every bucket has refilled: idle ones are dropped as the next caller comes
    limiter.acquire("d")
    assert list(limiter._buckets) == ["d"]
    with pytest.raises(ValueError, match="rate_per_s"):
        RateLimiter(rate_per_s=0.0, burst=1)


def test_lifespan_passes_through() -> None:
    seen = []

    async def app(scope, receive, send) -> None:
        seen.append(scope["type"])

    async def go() -> None:
        for middleware in (GuardMiddleware(app, SERVE, env=KEYS_ENV), BodyLimitMiddleware(app, SERVE)):
            await middleware({"type": "lifespan"}, None, None)

    asyncio.run(go())
    assert seen == ["lifespan", "lifespan"]


# --- body limits --------------------------------------------------------------------------------------

SMALL = ServeConfig(max_image_mb=0.5, max_video_mb=1.0, max_batch_files=3)


def test_size_caps_per_kind_and_route() -> None:
    assert size_cap_for("image", SMALL) == MB // 2 and size_cap_for("video", SMALL) == MB
    with pytest.raises(ValueError, match="unknown upload kind"):
        size_cap_for("audio", SMALL)
    limits = BodyLimitMiddleware(EchoApp(), SMALL)
    assert MB < limits.cap_for_path("/detect") == limits.cap_for_path("/detect_job/submit") < 1.1 * MB
    assert 3 * MB < limits.cap_for_path("/detect/batch") < 3.3 * MB
    assert limits.cap_for_path("/model") == MB
    big = replace(SMALL, max_video_mb=500.0, max_batch_files=16)
    assert BodyLimitMiddleware(EchoApp(), big).cap_for_path("/detect/batch") < 1.1 * 1024 * MB
    assert (
        2 * MB < BodyLimitMiddleware(EchoApp(), SMALL, batch_max_mb=2).cap_for_path("/detect/batch") < 3 * MB
    )


def test_a_declared_length_over_the_cap_is_refused_before_reading() -> None:
    echo = EchoApp()
    app = BodyLimitMiddleware(echo, SMALL, other_max_bytes=10)
    refused = call(app, "POST", "/detect", content=b"x" * (2 * MB))
    assert refused.status_code == 413 and error_code(refused) == "TOO_LARGE"
    assert echo.received == 0
    assert call(app, "POST", "/detect_job/cancel", content=b"x" * 11).status_code == 413
    assert call(app, "POST", "/detect", content=b"x" * MB).json()["bytes"] == MB


def test_a_streamed_body_past_the_cap_is_cut_off() -> None:
    async def chunks(count: int) -> AsyncIterator[bytes]:
        for _ in range(count):
            yield b"x" * (256 * 1024)

    echo = EchoApp()
    app = BodyLimitMiddleware(echo, SMALL)
    # 20 chunks of 256 KiB, no Content-Length: cut off after the fifth passes the 1 MiB (+ framing) cap.
    refused = call(app, "POST", "/detect", content=chunks(20))
    assert refused.status_code == 413 and refused.content == error_body(
        "TOO_LARGE", refused.json()["error"]["message"]
    )
    assert echo.received == 4 * 256 * 1024
    echo.received = 0
    assert call(app, "POST", "/detect", content=chunks(4)).json()["bytes"] == MB


def test_guard_and_body_limit_stacked_as_the_service_adds_them() -> None:
    echo = EchoApp()
    app = GuardMiddleware(BodyLimitMiddleware(echo, SMALL), replace(SMALL, auth="on"), env=KEYS_ENV)
    # The guard answers before a byte of an unauthenticated upload is read.
    assert call(app, "POST", "/detect", content=b"x" * (2 * MB)).status_code == 401
    assert call(app, "POST", "/detect", headers=bearer(SECRET), content=b"x" * (2 * MB)).status_code == 413
    assert echo.received == 0


def test_an_app_reading_on_after_the_cut_off_sends_nothing_more() -> None:
    """An app may poll `receive` again (Starlette's `is_disconnected`) and then answer an error of its
    own: the client's body is not read further, and the one answer stays the 413."""
    sent = []

    async def stubborn(scope, receive, send) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        assert (await receive())["type"] == "http.disconnect"
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b"Traceback ..."})

    limits = BodyLimitMiddleware(stubborn, SMALL)

    async def recording(scope, receive, send) -> None:
        async def record(message) -> None:
            sent.append(message.get("status"))
            await send(message)

        await limits(scope, receive, record)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"x" * (256 * 1024)

    response = call(recording, "POST", "/detect", content=chunks())
    assert response.status_code == 413 and sent == [413, None]


def test_keys_files_of_dfguard_keys_add_load_here(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from dfguard.cli import main

    keys_file = tmp_path / "api_keys"
    args = ["--params", str(tmp_path / "none.yaml"), "--set", f"serve.keys_file={keys_file}", "keys"]
    assert main([*args, "add", "ci"]) == 0
    secret = next(word for word in capsys.readouterr().out.split() if word.startswith("dfg_"))
    assert load_keys(keys_file, env={}).identify(secret) == "ci"
    assert main([*args, "list"]) == 0 and capsys.readouterr().out.split() == ["ci"]
