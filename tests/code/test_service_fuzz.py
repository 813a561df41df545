"""The detection service fuzzed from its own OpenAPI document (`/docs.json`) with Schemathesis: every
operation gets generated requests, valid ones and invalid ones, with an API key and without one, and
every answer must be no server error and must match the document (documented status code, content type
and body schema). Then the findings, each a regression check: BentoML reading a file field sent as text
as a URL to download (500 for other text), decoding a file sent in another field as JSON text (500 for
binary), its errors in other shapes than the service's, and a document that described neither the
keys, the limits, nor BentoML's own job statuses.

The run is reproducible: a fixed seed and a bounded number of examples per operation and mode, written
with the status codes answered to build/test-output/fuzz/fuzz.json. Schemathesis' own pytest plugin
(`schemathesis.pytest.from_fixture`) cannot run under pytest 9, so each operation's cases come from its
Hypothesis strategy (`operation.as_strategy`), one subtest per operation and mode."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import hypothesis
import hypothesis.configuration
import pytest
import schemathesis
from schemathesis import GenerationMode
from service_helpers import RATE_PER_S, SECRET

OUTPUT = Path(__file__).resolve().parents[2] / "build" / "test-output" / "fuzz"
SEED = 2028
# Examples per operation and generation mode, by run. Without a key every guarded operation answers
# 401 before it reads anything, so fewer tell as much; the slow run goes further with the key.
EXAMPLES = {"with_key": 12, "without_key": 4, "with_key_slow": 80}
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
# Calls go out a little under the service's sustained rate per key, so the answers are the operations'
# own, not the rate limiter's 429 (which the document describes too, and the service tests cover).
PACE_S = 1.2 / RATE_PER_S
# Hypothesis keeps a cache of constants under its home folder (./.hypothesis by default).
hypothesis.configuration.set_hypothesis_home_dir(OUTPUT / "hypothesis")


class Answers:
    """The status codes answered, per run and operation; paces the calls."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str, int]] = Counter()
        self._lock = threading.Lock()
        self._last = 0.0

    def pace(self) -> None:
        with self._lock:
            wait = self._last + PACE_S - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._last = time.monotonic()

    def record(self, run: str, label: str, status: int) -> None:
        self.counts[run, label, status] += 1

    def summary(self) -> dict:
        by_run: dict[str, dict[str, dict[str, int]]] = {}
        for (run, label, status), count in sorted(self.counts.items()):
            by_run.setdefault(run, {}).setdefault(label, {})[str(status)] = count
        return {
            "schemathesis": schemathesis.__version__,
            "seed": SEED,
            "examples_per_operation_and_mode": {run: EXAMPLES[run] for run in by_run},
            "modes": [mode.value for mode in GenerationMode],
            "checks": list(CHECKS),
            "requests": {run: sum(n for (r, _, _), n in self.counts.items() if r == run) for run in by_run},
            "answers": by_run,
        }


@pytest.fixture(scope="module")
def answers():
    recorded = Answers()
    yield recorded
    OUTPUT.mkdir(parents=True, exist_ok=True)
    summary = recorded.summary()
    (OUTPUT / "fuzz.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nfuzz: seed {SEED}, examples {summary['examples_per_operation_and_mode']}, ", end="")
    print(f"requests {summary['requests']} -> {OUTPUT / 'fuzz.json'}")


def _schema(service, security_parameters: bool):
    """The live document, loaded as Schemathesis' schema. With `security_parameters` the cases carry
    generated `Authorization` headers (random keys; a negative case drops it)."""
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "base-url": service.url,
            "generation": {"with-security-parameters": security_parameters},
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        }
    )
    return schemathesis.openapi.from_url(f"{service.url}/docs.json", config=config)


def _fuzz(schema, subtests, answers: Answers, run: str, headers: dict[str, str]) -> None:
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10, [operation.label for operation in operations]
    for operation in operations:
        # Invalid requests need something to make invalid: a parameter or a body.
        invalid = operation.body or any(operation.iter_parameters())
        for mode in list(GenerationMode) if invalid else [GenerationMode.POSITIVE]:
            with subtests.test(msg=f"{operation.label} ({mode.value})"):

                @hypothesis.seed(SEED)
                @hypothesis.settings(
                    max_examples=EXAMPLES[run],
                    deadline=None,
                    database=None,
                    # A failure is reported as generated: shrinking it would cost many more calls.
                    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
                    suppress_health_check=list(hypothesis.HealthCheck),
                )
                @hypothesis.given(case=operation.as_strategy(mode))
                def call(case) -> None:
                    answers.pace()
                    response = case.call_and_validate(headers=headers)
                    answers.record(run, case.operation.label, response.status_code)

                call()


def test_fuzzed_requests_with_a_key(service, subtests, answers):
    schema = _schema(service, security_parameters=False)
    _fuzz(schema, subtests, answers, "with_key", {"Authorization": f"Bearer {SECRET}"})


def test_fuzzed_requests_without_a_key(service, subtests, answers):
    _fuzz(_schema(service, security_parameters=True), subtests, answers, "without_key", {})


@pytest.mark.slow
def test_fuzzed_requests_with_a_key_at_length(service, subtests, answers):
    schema = _schema(service, security_parameters=False)
    _fuzz(schema, subtests, answers, "with_key_slow", {"Authorization": f"Bearer {SECRET}"})


# --- the findings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "request_kwargs", "status", "code"),
    [
        ("/detect", {"files": {"file": (None, "not a URL")}}, 400, "NOT_A_FILE"),
        (
            "/detect_job/submit",
            {"files": {"file": (None, "https://example.com/any-size.mp4")}},
            400,
            "NOT_A_FILE",
        ),
        ("/detect/batch", {"files": {"files": (None, "http://169.254.169.254/latest/")}}, 400, "NOT_A_FILE"),
        ("/detect", {"data": {"file": "https://example.com/any-size.mp4"}}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        ("/detect_job", {"data": {"file": "https://example.com/a.mp4"}}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        # JSON never names a file: BentoML's validation refuses a string where the upload belongs.
        ("/detect", {"json": {"file": "/etc/hostname"}}, 400, "INVALID_ARGUMENT"),
        ("/detect", {"json": {"file": "https://example.com/a.mp4"}}, 400, "INVALID_ARGUMENT"),
    ],
)
def test_an_upload_given_as_text_is_refused_never_fetched(service, path, request_kwargs, status, code):
    """BentoML 1.4 reads a file field sent as text in a form (multipart or URL-encoded) as a URL to
    download, past every size cap, and answers 500 for text that is no URL."""
    with service.client() as client:
        response = client.post(path, **request_kwargs)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_a_file_in_a_field_that_takes_none_is_refused(service, inference_media):
    """BentoML decodes a file sent in a non-file field as JSON text: 500 on binary content."""
    photo = (inference_media / "portrait.png").read_bytes()
    with service.client() as client:
        extra = client.post("/detect", files=[("file", ("a.png", photo)), ("explain", ("e.png", photo))])
        misnamed = client.post("/detect", files={"files": ("a.png", photo)})
    for response in (extra, misnamed):
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "UNEXPECTED_FILE"


def test_an_upload_named_past_the_filesystems_limit_is_refused_not_a_500(service, inference_media):
    """BentoML names its temporary file after the upload: 300 bytes made it raise OSError (500)."""
    photo = (inference_media / "portrait.png").read_bytes()
    with service.client() as client:
        long = client.post("/detect", files={"file": ("a" * 300 + ".png", photo)})
        longest = client.post("/detect", files={"file": ("a" * 196 + ".png", photo)})
    assert long.status_code == 400, long.text
    assert long.json()["error"]["code"] == "FILENAME_TOO_LONG"
    assert longest.status_code == 200, longest.text
    assert longest.json()["verdict"] in {"FAKE", "REAL", "UNCERTAIN"}


def test_errors_of_bentoml_and_starlette_have_the_service_shape(service, inference_media):
    photo = (inference_media / "portrait.png").read_bytes()
    with service.client() as client:
        missing = client.post("/detect", files={"explain": (None, "true")})
        too_many = client.post("/detect/batch", files=[("files", (f"{i}.png", photo)) for i in range(5)])
        unknown_task = client.get("/detect_job/status", params={"task_id": "no-such-task"})
        no_route = client.get("/no/such/route")
    assert (missing.status_code, missing.json()["error"]["code"]) == (400, "INVALID_ARGUMENT")
    assert "file: Field required" in missing.json()["error"]["message"]
    # BentoML answered this one as a JSON list holding the error.
    assert (too_many.status_code, too_many.json()["error"]["code"]) == (400, "INVALID_ARGUMENT")
    assert "at most 4 per batch" in too_many.json()["error"]["message"]
    assert (unknown_task.status_code, unknown_task.json()["error"]["code"]) == (404, "NOT_FOUND")
    assert (no_route.status_code, no_route.json()["error"]["code"]) == (404, "NOT_FOUND")


def test_the_document_describes_keys_limits_errors_and_jobs(service):
    document = httpx.get(f"{service.url}/docs.json").json()
    assert document["components"]["securitySchemes"]["apiKey"] == {"type": "http", "scheme": "bearer"}
    detect = document["paths"]["/detect"]["post"]
    assert {"400", "401", "413", "415", "429", "503"} <= set(detect["responses"])
    error_ref = {"$ref": "#/components/schemas/Error"}
    assert detect["responses"]["401"]["content"]["application/json"]["schema"] == error_ref
    assert "403" in document["paths"]["/admin/reload"]["post"]["responses"]
    assert "security" not in document["paths"]["/livez"]["get"]
    statuses = document["components"]["schemas"]["TaskStatusResponse"]["properties"]["status"]["enum"]
    assert {"in_progress", "completed", "failed", "canceled"} <= set(statuses)
    operations = [operation for item in document["paths"].values() for operation in item.values()]
    ids = [operation["operationId"] for operation in operations if "operationId" in operation]
    assert len(ids) == len(set(ids))
    # BentoML's deprecated probe is open, as its /livez is.
    assert httpx.get(f"{service.url}/healthz").status_code == 200
