"""The reviewer dashboard's pages through Streamlit's AppTest, on a real SQLite store holding copies of
real predictions (made by the service's code path) and a real MLflow store: sign-in, the queue's order
and leases, labelling, roles, history, stats, drift and models."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from registry_helpers import evaluation, register_tiny
from review_helpers import seed
from streamlit.testing.v1 import AppTest

from dfguard.config import OVERRIDES_ENV, PARAMS_ENV, load_config
from dfguard.feedback import DB_URL_ENV, open_store
from dfguard.registry import configure, current_aliases, move_alias
from dfguard.review.queue import QueuePolicy, queue_ids
from dfguard.review.users import add_user

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
PASSWORD = "correct horse battery"
TIMEOUT_S = 60


@pytest.fixture(autouse=True)
def real_main_module():
    """AppTest installs the page script as `__main__` and leaves it there; processes spawned later in
    the session (extraction's pool, DataLoader workers) would re-run the page instead of starting."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


@pytest.fixture
def params(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "feedback": {"root": str(tmp_path / "feedback")},
                "registry": {"root": str(tmp_path / "mlflow")},
                "dashboard": {"second_review_share": 0.0, "service_url": "http://127.0.0.1:9"},
                "loop": {"drift_dir": str(tmp_path / "drift")},
            }
        )
    )
    monkeypatch.setenv(PARAMS_ENV, str(path))
    monkeypatch.setenv(OVERRIDES_ENV, "{}")
    monkeypatch.delenv(DB_URL_ENV, raising=False)
    return path


@pytest.fixture
def cfg(params):
    return load_config(params)


@pytest.fixture
def store(cfg, served_records):
    with open_store(cfg.feedback) as opened:
        add_user(opened, "ann", "reviewer", PASSWORD)
        add_user(opened, "eve", "engineer", PASSWORD)
        seed(opened, served_records, 12)
        yield opened


def _signed_in(name: str) -> AppTest:
    app = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S).run()
    app.text_input(key="sign_in_name").input(name)
    app.text_input(key="sign_in_password").input(PASSWORD)
    app.button[0].click().run()
    assert not app.exception, app.exception
    return app


def _texts(app: AppTest) -> str:
    parts = [element.value for element in (*app.markdown, *app.caption, *app.success, *app.error, *app.info)]
    return "\n".join(str(part) for part in parts)


def test_every_page_needs_a_signed_in_user(store) -> None:
    app = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S).run()
    assert not app.exception
    assert [field.label for field in app.text_input] == ["User name", "Password"]
    assert not app.dataframe and "Order" not in [box.label for box in app.selectbox]
    app.text_input(key="sign_in_name").input("ann")
    app.text_input(key="sign_in_password").input("not the password")
    app.button[0].click().run()
    assert "Unknown user name or wrong password." in [error.value for error in app.error]
    assert "Order" not in [box.label for box in app.selectbox]
    # A page opened directly still refuses.
    page = AppTest.from_file(str(APP.parent / "views" / "history.py"), default_timeout=TIMEOUT_S).run()
    assert "Sign in first." in [error.value for error in page.error] and not page.dataframe


def test_the_queue_shows_the_most_uncertain_item_and_labels_it(store, cfg) -> None:
    policy = QueuePolicy.of(cfg.dashboard)
    expected = queue_ids(store, "ann", "uncertain", policy, limit=2)
    app = _signed_in("ann")
    assert any(expected[0] in text for text in _texts(app).splitlines())
    assert app.session_state["queue_rule"] == "uncertain"
    app.text_input(key="label_note").input("seam along the jaw")
    app.selectbox(key="label_manipulation").select("face_swap")
    app.button(key="label_fake").click().run()
    assert not app.exception, app.exception
    history = store.labels(expected[0])
    assert history[["label", "reviewer", "note", "manipulation"]].values.tolist() == [
        ["fake", "ann", "seam along the jaw", "face_swap"]
    ]
    # The next item is the next most uncertain one; the note box is empty again.
    assert any(expected[1] in text for text in _texts(app).splitlines())
    assert app.text_input(key="label_note").value == ""


def test_skip_moves_on_without_a_label_and_oldest_first_is_an_order(store, cfg) -> None:
    policy = QueuePolicy.of(cfg.dashboard)
    app = _signed_in("ann")
    app.selectbox(key="queue_rule").select("oldest").run()
    oldest = queue_ids(store, "ann", "oldest", policy, limit=2)
    assert oldest[0] in _texts(app)
    app.button(key="skip").click().run()
    assert oldest[1] in _texts(app) and oldest[0] not in _texts(app)
    assert store.labels().empty


def test_two_reviewers_are_shown_different_items(store) -> None:
    add_user(store, "bob", "reviewer", PASSWORD)
    ann, bob = _signed_in("ann"), _signed_in("bob")
    shown = [
        next(line for line in _texts(app).splitlines() if line.startswith("`") and "`" in line[1:])
        for app in (ann, bob)
    ]
    assert shown[0] != shown[1]


def test_models_page_is_for_engineers_and_promotes_with_a_confirmation(store, cfg, model_dir) -> None:
    client = configure(cfg.registry)
    first = register_tiny(client, model_dir, evaluation(0.7))
    move_alias(client, "champion", first)
    second = register_tiny(client, model_dir, evaluation(0.8))

    reviewer = _signed_in("ann")
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        reviewer.switch_page("views/models.py")
    page = AppTest.from_file(str(APP.parent / "views" / "models.py"), default_timeout=TIMEOUT_S)
    page.session_state["user"] = reviewer.session_state["user"]
    page.run()
    assert "This page is for engineers." in [error.value for error in page.error]

    app = _signed_in("eve")
    app.switch_page("views/models.py").run()
    assert not app.exception, app.exception
    assert app.dataframe[0].value["version"].tolist() == [second, first]
    app.selectbox(key="models_version").select(second)
    app.button(key="promote").click().run()
    assert current_aliases(client)["champion"] == first  # armed, not done
    app.button(key=f"confirm_promote version {second}").click().run()
    assert not app.exception, app.exception
    assert current_aliases(client)["champion"] == second
    assert any("promoted" in info.value for info in app.info)


def test_history_stats_and_drift_pages(store, cfg) -> None:
    listed = store.predictions()
    first, second = listed["prediction_id"].iloc[0], listed["prediction_id"].iloc[1]
    store.add_label(first, "fake", "ann")
    store.add_label(first, "real", "bob")
    store.add_label(second, "real", "ann")
    app = _signed_in("ann")
    app.switch_page("views/history.py").run()
    assert not app.exception, app.exception
    table = app.dataframe[0].value
    assert len(table) == len(listed) and table["created_at"].is_monotonic_decreasing
    app.text_input(key="history_search").input(first[:10]).run()
    assert app.dataframe[0].value["prediction_id"].tolist() == [first]

    app.switch_page("views/stats.py").run()
    assert not app.exception, app.exception
    metrics = {metric.label: metric.value for metric in app.metric}
    assert metrics["Labels"] == "3"
    assert metrics["Queue"] == str(len(listed) - 2 - (listed["verdict"].isin(["NO_FACE"])).sum())
    assert len(app.get("vega_lite_chart")) >= 2

    app.switch_page("views/drift.py").run()
    assert not app.exception, app.exception
    assert "No drift report yet." in _texts(app)
    reports = Path(cfg.loop.drift_dir)
    reports.mkdir(parents=True)
    (reports / "20261203T080000Z_scores.html").write_text("<html><body>drift of the scores</body></html>")
    app.run()
    assert app.selectbox(key="drift_report").value.name == "20261203T080000Z_scores.html"


def test_an_engineer_triggers_the_loop_and_is_told_when_prefect_cannot_be_reached(store, monkeypatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # nothing listens on port 9
    monkeypatch.setenv("PREFECT_CLIENT_MAX_RETRIES", "0")
    reviewer = _signed_in("ann")
    reviewer.switch_page("views/drift.py").run()
    assert [b.key for b in reviewer.button] == ["sign_out"]  # reviewers see the runs, engineers start them
    app = _signed_in("eve")
    app.switch_page("views/drift.py").run()
    app.button(key="loop_trigger_button").click().run()
    assert not app.exception, app.exception
    assert "Could not queue the loop" in app.error[0].value and "dfguard loop run" in app.error[0].value


def test_check_a_file_reports_a_service_that_cannot_be_reached(store) -> None:
    app = _signed_in("ann")
    app.switch_page("views/check.py").run()
    assert not app.exception, app.exception
    assert "http://127.0.0.1:9" in _texts(app)
