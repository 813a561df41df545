"""The security review's standing checks (docs/security.md): bandit over the code that ships, every
bandit skip named and justified, no unpickling or code evaluation anywhere in that code, and no secret
in the logs of the paths that refuse a caller, a reviewer or a database."""

from __future__ import annotations

import ast
import asyncio
import json
import logging
import re
import subprocess
import sys
import time
import tokenize
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from dfguard.config import FeedbackConfig, ServeConfig
from dfguard.feedback import PredictionRecord, StoreWriter, open_store
from dfguard.feedback.store import DB_URL_ENV
from dfguard.review.users import add_user, authenticate
from dfguard.serving.security import BodyLimitMiddleware, GuardMiddleware, hash_key, load_keys

ROOT = Path(__file__).resolve().parents[2]
# The code that ships: the library, the service, the dashboard and the flows (not the tests).
SHIPPED = ("src", "service", "dashboard", "pipelines")
BANDIT = Path(sys.executable).parent / "bandit"


def _shipped_files() -> list[Path]:
    return sorted(path for folder in SHIPPED for path in (ROOT / folder).rglob("*.py"))


# --- bandit ---------------------------------------------------------------------------------------------


def test_bandit_finds_nothing_in_the_shipped_code() -> None:
    # -c pyproject.toml: a [tool.bandit] section there (skips, excludes) applies here as in `make`.
    result = subprocess.run(
        [str(BANDIT), "-r", *SHIPPED, "-c", "pyproject.toml", "-f", "json", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(result.stdout)
    findings = [
        f"{issue['filename']}:{issue['line_number']} {issue['test_id']} {issue['issue_text']}"
        for issue in report["results"]
    ]
    assert findings == [], "\n".join(findings)
    assert report["errors"] == [], report["errors"]
    assert result.returncode == 0, result.stderr
    # A `# nosec` whose words bandit cannot read as test ids is logged here and skips less than meant.
    assert "Test in comment" not in result.stderr, result.stderr


# `# nosec B603 B607  # why`: named test ids (a bare `# nosec` would hide every future finding on the
# line), then the reason after a second `#` (bandit reads every word before it as a test id).
NOSEC = re.compile(r"#\s*nosec\b")
JUSTIFIED_NOSEC = re.compile(r"#\s*nosec(?:\s+B\d{3})+\s+#\s*\S.{9,}")


def test_every_bandit_skip_names_its_test_and_says_why() -> None:
    unjustified = []
    for path in _shipped_files():
        with path.open("rb") as handle:
            for token in tokenize.tokenize(handle.readline):
                comment = token.string if token.type == tokenize.COMMENT else ""
                if NOSEC.search(comment) and not JUSTIFIED_NOSEC.fullmatch(comment):
                    unjustified.append(f"{path.relative_to(ROOT)}:{token.start[0]}: {comment}")
    assert unjustified == [], "\n".join(unjustified)


# --- no unpickling, no evaluated code -----------------------------------------------------------------

# Modules whose loading runs code from the data: none of them may even be imported.
PICKLING_MODULES = frozenset(
    {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
)
# Calls that unpickle, or run code from a file or a download, whatever their arguments.
FORBIDDEN_CALLS = frozenset(
    {
        "eval",
        "exec",
        "builtins.eval",
        "builtins.exec",
        "pandas.read_pickle",
        "torch.hub.load",
        "yaml.unsafe_load",
        "yaml.unsafe_load_all",
        "yaml.full_load",
        "yaml.full_load_all",
    }
)
SAFE_YAML_LOADERS = frozenset({"yaml.SafeLoader", "yaml.CSafeLoader"})


def _dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """The full dotted name a call's function refers to (`np.load` -> `numpy.load`), or None."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id, node.id)
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value, aliases)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((keyword.value for keyword in call.keywords if keyword.arg == name), None)


def _is_constant(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_loads(source: str) -> list[str]:
    """`line: what` for every import of a pickling module and every call that unpickles or evaluates
    code in `source`: `torch.load` without `weights_only=True`, `numpy.load` unless `allow_pickle` is
    absent or False, `yaml.load` without a safe loader, MLflow's model flavours (pyfunc and friends
    unpickle), `read_pickle` on anything, `eval` and `exec`."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[(alias.asname or alias.name).split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
                if alias.name.split(".")[0] in PICKLING_MODULES:
                    found.append(f"{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            if node.module.split(".")[0] in PICKLING_MODULES:
                found.append(f"{node.lineno}: from {node.module} import")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, aliases)
        if name is None:
            continue
        problem = None
        if name in FORBIDDEN_CALLS or name.endswith(".read_pickle"):
            problem = name
        elif name == "torch.load" and not _is_constant(_keyword(node, "weights_only"), True):
            problem = "torch.load without weights_only=True"
        elif name == "numpy.load" and (allow := _keyword(node, "allow_pickle")) is not None:
            problem = None if _is_constant(allow, False) else "numpy.load with allow_pickle"
        elif name in ("yaml.load", "yaml.load_all"):
            loader = _keyword(node, "Loader")
            if loader is None and len(node.args) > 1:
                loader = node.args[1]
            if loader is None or _dotted(loader, aliases) not in SAFE_YAML_LOADERS:
                problem = f"{name} without yaml.SafeLoader"
        elif name.startswith("mlflow.") and name.endswith(".load_model"):
            problem = f"{name} (MLflow model flavours unpickle)"
        if problem:
            found.append(f"{node.lineno}: {problem}")
    return sorted(found, key=lambda entry: int(entry.split(":")[0]))


@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle\npickle.loads(b'')",
        "from joblib import load",
        "import cloudpickle as cp",
        "import torch\ntorch.load('w.pt')",
        "import torch\ntorch.load('w.pt', weights_only=False)",
        "from torch import load\nload('w.pt', map_location='cpu')",
        "import numpy as np\nnp.load('a.npy', allow_pickle=True)",
        "import numpy\nnumpy.load('a.npy', allow_pickle=flag)",
        "import pandas as pd\npd.read_pickle('f.pkl')",
        "frame.read_pickle('f.pkl')",
        "import yaml\nyaml.load(text)",
        "import yaml\nyaml.load(text, Loader=yaml.Loader)",
        "import yaml\nyaml.unsafe_load(text)",
        "eval('1 + 1')",
        "exec(code)",
        "import mlflow\nmlflow.pyfunc.load_model('models:/m@champion')",
        "import torch\ntorch.hub.load('repo', 'model')",
    ],
)
def test_the_scan_catches_each_unsafe_load(snippet: str) -> None:
    assert unsafe_loads(snippet), snippet


@pytest.mark.parametrize(
    "snippet",
    [
        "import torch\ntorch.load('w.pt', map_location='cpu', weights_only=True)",
        "import numpy as np\nnp.load('a.npy', mmap_mode='r', allow_pickle=False)\nnp.load('b.npy')",
        "import yaml\nyaml.safe_load(text)\nyaml.load(text, Loader=yaml.SafeLoader)",
        "from yaml import CSafeLoader, load\nload(text, CSafeLoader)",
        "model.eval()\nrunner.exec(job)",
        "from safetensors.torch import load_file\nload_file('model.safetensors')",
    ],
)
def test_the_scan_passes_safe_loads(snippet: str) -> None:
    assert unsafe_loads(snippet) == []


def test_the_shipped_code_never_unpickles_nor_evaluates_code() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{entry}"
        for path in _shipped_files()
        for entry in unsafe_loads(path.read_text())
    ]
    assert found == [], "\n".join(found)


# --- no secret in the logs ------------------------------------------------------------------------------

SECRET = "dfg_the-ci-key-secret-0123456789abcdef"
ADMIN_SECRET = "dfg_the-ops-key-secret-0123456789abcdef"
GUESS = "dfg_a-wrong-guess-at-a-key-0123456789"


class ReadingApp:
    """Reads the body and answers 200 (the detection API's place)."""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        while (message := await receive())["type"] == "http.request" and message.get("more_body"):
            pass
        if message["type"] == "http.disconnect":
            raise RuntimeError("client went away")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def _requests(app, calls: list[tuple[str, str, dict]]) -> list[httpx.Response]:
    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            return [await client.request(method, path, **kwargs) for method, path, kwargs in calls]

    return asyncio.run(go())


def test_refused_callers_leave_no_key_secret_in_logs_or_answers(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    env = {"DFGUARD_API_KEYS": f"ci:{hash_key(SECRET)},ops:{hash_key(ADMIN_SECRET)}"}
    # "gone" names no key: the guard warns about it at start, so the logs below are not empty.
    cfg = ServeConfig(auth="on", admin_key_ids=("ops", "gone"), rate_per_s=0.01, rate_burst=6, max_video_mb=1)
    guarded = GuardMiddleware(BodyLimitMiddleware(ReadingApp(), cfg=cfg), cfg=cfg, env=env)
    bearer = {"Authorization": f"Bearer {SECRET}"}
    responses = _requests(
        guarded,
        [
            ("POST", "/detect", {}),
            ("POST", "/detect", {"headers": {"Authorization": f"Bearer {GUESS}"}}),
            ("POST", "/detect", {"headers": {"Authorization": f"Basic {SECRET}"}}),
            ("POST", "/admin/reload", {"headers": bearer}),
            ("POST", "/detect", {"headers": bearer, "content": b"x" * (2 << 20)}),
            ("POST", "/detect", {"headers": bearer, "content": b"x"}),
            *[("POST", "/detect", {"headers": {"Authorization": f"Bearer {GUESS}"}})] * 4,
        ],
    )
    statuses = [response.status_code for response in responses]
    assert statuses[:6] == [401, 401, 401, 403, 413, 200] and 429 in statuses[6:], statuses
    assert "gone" in caplog.text  # the guard's own warning was captured
    answers = "\n".join(f"{response.headers}\n{response.text}" for response in responses)
    for secret in (SECRET, ADMIN_SECRET, GUESS, hash_key(SECRET), hash_key(ADMIN_SECRET)):
        assert secret not in caplog.text
        assert secret not in answers


def test_a_secret_pasted_where_its_hash_belongs_is_not_echoed(tmp_path: Path) -> None:
    for keys_file, env in (
        (tmp_path / "keys", {}),
        ("", {"DFGUARD_API_KEYS": f"ci:{SECRET}"}),
        ("", {"DFGUARD_API_KEYS": SECRET}),  # the colon forgotten too
    ):
        if keys_file:
            keys_file.write_text(f"ci:{SECRET}\n")
        with pytest.raises(ValueError) as raised:
            load_keys(keys_file, env)
        assert SECRET not in str(raised.value)


def test_sign_ins_log_no_password(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.delenv(DB_URL_ENV, raising=False)
    caplog.set_level(logging.DEBUG)
    password, wrong = "correct horse battery", "wrong horse battery"
    with open_store(FeedbackConfig(root=str(tmp_path / "feedback"))) as store:
        add_user(store, "alice", "reviewer", password)
        assert authenticate(store, "alice", wrong) is None
        assert authenticate(store, "nobody", password) is None
        assert authenticate(store, "alice", password) is not None
        with pytest.raises(ValueError) as refused:
            add_user(store, "bob", "reviewer", "tiny-pw")
    assert "tiny-pw" not in str(refused.value)
    for secret in (password, wrong, "tiny-pw"):
        assert secret not in caplog.text


@pytest.mark.parametrize(
    "url",
    [
        "mysql://dfguard:db-pass-s3cret@db.example/feedback",
        "postgresql://dfguard:db-pass-s3cret@127.0.0.1:9/x",
    ],
)
def test_a_store_that_cannot_be_opened_is_logged_without_its_password(
    tmp_path: Path, url: str, monkeypatch, caplog
) -> None:
    monkeypatch.delenv(DB_URL_ENV, raising=False)
    caplog.set_level(logging.DEBUG)
    cfg = FeedbackConfig(root=str(tmp_path / "feedback"), db_url=url)
    # A retry an hour away: the one failed open is all this needs (the thread is a daemon).
    writer = StoreWriter(lambda: open_store(cfg), retry_s=3600.0)
    writer.submit(
        PredictionRecord.from_prediction(
            {"verdict": "UNREADABLE", "probability": None, "logit": None, "reason": "empty upload"},
            [],
            prediction_id=uuid.uuid4().hex,
            created_at=datetime.now(UTC),
            content_sha256="0" * 64,
            media_kind="image",
        )
    )
    deadline = time.monotonic() + 20
    while writer.stats()["failed_attempts"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert writer.stats()["failed_attempts"] == 1
    assert "prediction store unavailable" in caplog.text
    assert "db-pass-s3cret" not in caplog.text
    assert "db-pass-s3cret" not in writer.stats()["last_error"]
