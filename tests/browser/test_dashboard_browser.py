"""The reviewer dashboard in a real browser: Debian's Chromium driven by Playwright against a real
`dfguard dashboard` and a real `dfguard serve` (API keys on) on free localhost ports, sharing a SQLite
store that holds 1,000 predictions copied from real ones and a registry whose champion is a trained
model. Screenshots and the page timings land in build/test-output/browser/."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from launch_helpers import DFGUARD, dfguard_server
from registry_helpers import evaluation, register_tiny
from review_helpers import seed

from dfguard.config import FeedbackConfig, RegistryConfig
from dfguard.feedback import open_store
from dfguard.registry import configure, move_alias
from dfguard.review.users import add_user
from dfguard.serving.launch import free_port

OUTPUT = Path(__file__).resolve().parents[2] / "build" / "test-output" / "browser"
QUEUE_SIZE = 1000
PASSWORD = "correct horse battery"
SECRET = "dfg_dashboard-test-key"
ITEM_ID = re.compile(r"^[0-9a-f]{32}$")
VERDICT = re.compile(r"^(FAKE|REAL|UNCERTAIN) · p\(fake\)")
CHECKED = re.compile(r"^prediction ([0-9a-f]{32}) · model")
WAIT_MS = 60_000


@dataclass
class Platform:
    dashboard: str
    feedback: FeedbackConfig
    photo: Path


def _chromium() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if found is None:
        pytest.skip(
            "Debian's chromium is not installed and could not be: `make test` installs it with apt-get "
            "(as root, or through sudo); install the `chromium` package to run the browser tests"
        )
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator:
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # Playwright's own browser download cannot run here: the Debian binary is driven instead.
        launched = playwright.chromium.launch(executable_path=executable, headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def platform(tmp_path_factory, trained_detector, served_records, inference_media) -> Iterator[Platform]:
    _, model_dir = trained_detector
    root = tmp_path_factory.mktemp("platform")
    registry = RegistryConfig(root=str(root / "mlflow"))
    client = configure(registry)
    move_alias(client, "champion", register_tiny(client, model_dir, evaluation(0.7)))
    feedback = FeedbackConfig(root=str(root / "feedback"))
    with open_store(feedback) as store:
        seed(store, served_records, QUEUE_SIZE)
        add_user(store, "ann", "reviewer", PASSWORD)
    keys = root / "api_keys"
    keys.write_text(f"dashboard:{hashlib.sha256(SECRET.encode()).hexdigest()}\n")
    service_port, dashboard_port = free_port(), free_port()
    service = f"http://127.0.0.1:{service_port}"
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    params = root / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "registry": {"root": registry.root},
                "feedback": {"root": feedback.root},
                "serve": {"keys_file": str(keys), "auth": "on", "reload_interval_s": 0},
                "dashboard": {"service_url": service, "second_review_share": 0.0},
            }
        )
    )
    env = {"BENTOML_HOME": str(root / "bentoml"), "DFGUARD_API_KEY": SECRET}
    # The second reviewer's account is made the way a team lead makes one.
    add_bob = ["users", "add", "bob", "--role", "reviewer", "--password-stdin"]
    subprocess.run(
        [str(DFGUARD), "--params", str(params), *add_bob],
        input=PASSWORD,
        text=True,
        check=True,
        capture_output=True,
        cwd=root,
        env={**os.environ, **env},
    )
    serve = ["--params", str(params), "serve", "--port", str(service_port)]
    board = ["--params", str(params), "dashboard", "--port", str(dashboard_port)]
    with (
        dfguard_server(serve, service, root / "serve.log", root, env),
        dfguard_server(board, dashboard, root / "dashboard.log", root, env, ready_path="/_stcore/health"),
    ):
        yield Platform(dashboard, feedback, inference_media / "portrait.png")


def _sign_in(page, url: str, name: str) -> float:
    """Sign in on a new page; returns the seconds from the click to the first queue item shown."""
    page.goto(url)
    page.get_by_role("textbox", name="User name").fill(name)
    page.get_by_role("textbox", name="Password").fill(PASSWORD)
    started = time.perf_counter()
    page.get_by_role("button", name="Sign in").click()
    _shown_item(page)
    return time.perf_counter() - started


def _shown_item(page, other_than: str = "") -> str:
    """The id of the queue item on screen (waiting for one other than `other_than`)."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while time.monotonic() < deadline:
        texts = page.locator("code").all_inner_texts()
        found = [text.strip() for text in texts if ITEM_ID.match(text.strip())]
        if found and found[0] != other_than:
            return found[0]
        page.wait_for_timeout(50)
    raise AssertionError(f"no queue item other than {other_than!r} appeared")


def _wait_idle(page) -> None:
    """Until the page's script run has ended: a shortcut pressed while the page is being rebuilt can
    land before the buttons' shortcut listeners are attached again."""
    page.wait_for_function(
        "!document.querySelector('[data-testid=\"stStatusWidgetRunningIcon\"]')", timeout=WAIT_MS
    )
    page.wait_for_timeout(150)


def _press_away_from_inputs(page, key: str) -> None:
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.keyboard.press(key)


def test_a_reviewer_labels_with_the_keyboard_and_checks_a_photo(browser, platform) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    first_render_s = _sign_in(page, platform.dashboard, "ann")
    first = _shown_item(page)
    page.screenshot(path=str(OUTPUT / "queue.png"), full_page=True)

    label_to_next_s, labelled = [], []
    current = first
    for key, label in (("2", "fake"), ("1", "real")):
        _wait_idle(page)
        started = time.perf_counter()
        _press_away_from_inputs(page, key)
        shown = _shown_item(page, other_than=current)
        label_to_next_s.append(time.perf_counter() - started)
        labelled.append((current, label))
        current = shown
    with open_store(platform.feedback) as store:
        stored = store.labels()
    assert stored[["prediction_id", "label", "reviewer"]].values.tolist() == [
        [item, label, "ann"] for item, label in labelled
    ]

    page.get_by_role("link", name="Check a file").click()
    page.locator('input[type="file"]').set_input_files(str(platform.photo))
    # Streamlit sends the badge and the caption naming the prediction as separate deltas: wait for the
    # caption, the later of the two, before reading either.
    caption = page.get_by_text(CHECKED)
    caption.wait_for(timeout=WAIT_MS)
    prediction_id = CHECKED.match(caption.inner_text().strip()).group(1)
    verdict = page.get_by_text(VERDICT)
    page.screenshot(path=str(OUTPUT / "check.png"), full_page=True)
    with open_store(platform.feedback) as store:  # the service writes in the background
        deadline = time.monotonic() + 20
        while store.get(prediction_id) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        row = store.get(prediction_id)
    assert row is not None and row["source"] == "service" and row["client_key_id"] == "dashboard"
    assert row["verdict"] == verdict.inner_text().split(" ")[0]

    # The queue page rendered afresh (1,000 waiting): from the click to its item on screen.
    started = time.perf_counter()
    page.get_by_role("link", name="Review queue").click()
    page.get_by_text("Waiting").first.wait_for(timeout=WAIT_MS)  # the queue page, not the check page
    _shown_item(page)  # may be the photo just checked: it joined the queue
    queue_render_s = time.perf_counter() - started
    context.close()

    timings = {
        "queue_size": QUEUE_SIZE,
        "sign_in_to_first_item_s": round(first_render_s, 3),
        "queue_page_render_s": round(queue_render_s, 3),
        "label_to_next_item_s": [round(s, 3) for s in label_to_next_s],
        "label_to_next_item_median_s": round(statistics.median(label_to_next_s), 3),
    }
    (OUTPUT / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    print(f"dashboard timings: {timings}")


def test_two_reviewers_never_see_the_same_item(browser, platform) -> None:
    pages = [browser.new_context().new_page() for _ in range(2)]
    for page, name in zip(pages, ("ann", "bob"), strict=True):
        _sign_in(page, platform.dashboard, name)
    shown = [_shown_item(page) for page in pages]
    assert shown[0] != shown[1]
    # Bob moving on never lands him on Ann's item while she holds it.
    for _ in range(3):
        _wait_idle(pages[1])
        _press_away_from_inputs(pages[1], "s")
        shown[1] = _shown_item(pages[1], other_than=shown[1])
        assert shown[1] != shown[0]
    for page in pages:
        page.context.close()
