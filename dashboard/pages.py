"""The dashboard's pages. Each reads and writes through `dfguard.review`, `dfguard.feedback` and the
registry's functions; uploads go to the detection service over HTTP (the dashboard judges nothing)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.item import show_explanations, show_prediction, verdict_badge
from dashboard.session import registry, require_engineer, require_user, settings, store
from dfguard.feedback import MANIPULATIONS
from dfguard.review.queue import RULES, QueuePolicy, label_item, lease_next, queue_state, release
from dfguard.review.reports import drift_reports, loop_runs
from dfguard.review.stats import (
    labelled_predictions,
    labels_per_day,
    model_accuracy,
    model_confusion,
    reviewer_agreement,
)
from dfguard.review.users import User

# Streamlit reserves C and R; digits sit under one hand.
LABEL_KEYS = {"real": "1", "fake": "2", "unsure": "3"}
SKIP_KEY = "S"
HISTORY_ROWS = 2000


def pages_for(user: User) -> list[st.Page]:
    """The pages a user may open. Each is a file under views/ (so tests can open them one by one)
    running one function of this module."""
    pages = [
        st.Page("views/queue.py", title="Review queue", icon=":material/checklist:", default=True),
        st.Page("views/check.py", title="Check a file", icon=":material/upload_file:"),
        st.Page("views/history.py", title="History", icon=":material/history:"),
        st.Page("views/stats.py", title="Stats", icon=":material/bar_chart:"),
        st.Page("views/drift.py", title="Drift and loop", icon=":material/monitoring:"),
    ]
    if user.is_engineer:
        pages.append(st.Page("views/models.py", title="Models", icon=":material/model_training:"))
    return pages


# -- review queue ------------------------------------------------------------------------------------
def _label(prediction_id: str, reviewer: str, label: str) -> None:
    note = st.session_state.get("label_note", "")
    manipulation = st.session_state.get("label_manipulation") if label == "fake" else None
    label_item(store(), prediction_id, reviewer, label, note=note, manipulation=manipulation)
    st.session_state["label_note"] = ""
    st.session_state["last_labelled"] = (prediction_id, label)


def _skip(prediction_id: str, reviewer: str) -> None:
    st.session_state.setdefault("skipped", []).append(prediction_id)
    release(store(), reviewer)


def _release(reviewer: str) -> None:
    release(store(), reviewer)


def queue_page() -> None:
    user = require_user()
    cfg = settings().dashboard
    policy = QueuePolicy.of(cfg)
    rules = list(RULES)
    top = st.columns([2, 3])
    rule = top[0].selectbox(
        "Order",
        rules,
        index=rules.index(cfg.queue_rule) if cfg.queue_rule in rules else 0,
        format_func=RULES.get,
        key="queue_rule",
        on_change=_release,  # a new order starts from its own first item, not the one held
        args=(user.name,),
    )
    skipped = st.session_state.setdefault("skipped", [])
    item_id = lease_next(store(), user.name, rule, policy, exclude=skipped)
    state = queue_state(store(), policy)
    top[1].metric(
        "Waiting",
        f"{state.waiting} new · {state.second_opinions} second opinions",
        help="judged predictions nobody has labelled, and those waiting for a second reviewer",
    )
    done = st.session_state.pop("last_labelled", None)
    if done:
        st.toast(f"Labelled {done[1]}: {done[0][:8]}")
    if item_id is None:
        st.success(
            "Nothing left for you in this queue."
            + (" (Skipped items return next session.)" if skipped else "")
        )
        return
    record = store().get(item_id)
    if record is None:  # purged between the lease and now
        st.rerun()
    minutes = policy.lease.total_seconds() / 60
    st.caption(f"This item is yours for {minutes:g} minutes; nobody else is shown it meanwhile.")
    buttons = st.columns(5)
    for column, (label, key) in zip(buttons, LABEL_KEYS.items(), strict=False):
        column.button(
            label.capitalize(),
            key=f"label_{label}",
            shortcut=key,
            type="primary" if label != "unsure" else "secondary",
            on_click=_label,
            args=(item_id, user.name, label),
            width="stretch",
        )
    buttons[3].button(
        "Skip", key="skip", shortcut=SKIP_KEY, on_click=_skip, args=(item_id, user.name), width="stretch"
    )
    details = st.columns([1, 2])
    details[0].selectbox(
        "Manipulation (if fake)",
        ["", *MANIPULATIONS],
        format_func=lambda kind: kind.replace("_", " ") or "not sure / not given",
        key="label_manipulation",
    )
    details[1].text_input("Note (optional)", key="label_note", max_chars=500)
    show_prediction(record, store(), show_labels=False)


# -- check a file ------------------------------------------------------------------------------------
def check_page() -> None:
    require_user()
    from dfguard.serving.client import DetectionClient, ServiceError

    cfg = settings().dashboard
    st.markdown(
        f"Judged by the detection service at `{cfg.service_url}`; the prediction joins the review queue."
    )
    upload = st.file_uploader("An image or a video", key="check_upload")
    if upload is None:
        return
    client = DetectionClient(cfg.service_url, timeout_s=600)
    try:
        with st.spinner("The service is judging it..."):
            answer = client.detect_bytes(upload.name, upload.getvalue(), explain=True)
    except ServiceError as err:
        st.error(f"The service did not judge it: {err}")
        return
    finally:
        client.close()
    st.markdown(f"### {verdict_badge(answer['verdict'], answer.get('probability'))}")
    if answer.get("reason"):
        st.info(answer["reason"])
    model = answer.get("model") or {}
    st.caption(
        f"prediction `{answer['prediction_id']}` · model {model.get('name', '?')} "
        f"v{model.get('version') or '-'} · {answer.get('seconds', {}).get('total', 0):.2f} s"
    )
    show_explanations(answer)


# -- history -----------------------------------------------------------------------------------------
def history_page() -> None:
    require_user()
    listed = store().predictions(limit=HISTORY_ROWS)
    filters = st.columns([3, 2, 2, 3])
    verdicts = filters[0].multiselect("Verdict", sorted(listed["verdict"].unique()), key="history_verdicts")
    versions = filters[1].multiselect(
        "Model version", sorted(listed["model_version"].unique()), key="history_versions"
    )
    labelled = filters[2].selectbox("Labelled", ["any", "yes", "no"], key="history_labelled")
    text = filters[3].text_input("Search id, content hash or reviewer", key="history_search").strip().lower()
    shown = listed
    if verdicts:
        shown = shown[shown["verdict"].isin(verdicts)]
    if versions:
        shown = shown[shown["model_version"].isin(versions)]
    if labelled != "any":
        shown = shown[shown["label"].notna() == (labelled == "yes")]
    if text:
        haystack = shown["prediction_id"] + " " + shown["content_sha256"] + " " + shown["reviewer"].fillna("")
        shown = shown[haystack.str.lower().str.contains(text, regex=False)]
    shown = shown.iloc[::-1]  # newest first
    st.caption(f"{len(shown)} of the newest {len(listed)} predictions")
    columns = ["created_at", "verdict", "probability", "media_kind", "model_version", "label", "reviewer"]
    picked = st.dataframe(
        shown[[*columns, "prediction_id"]],
        hide_index=True,
        width="stretch",
        on_select="rerun",
        selection_mode="single-row",
        key="history_table",
    )
    rows = picked.selection.rows
    if rows:
        record = store().get(shown.iloc[rows[0]]["prediction_id"])
        if record is not None:
            st.divider()
            show_prediction(record, store())


# -- stats -------------------------------------------------------------------------------------------
def stats_page() -> None:
    require_user()
    cfg = settings().dashboard
    state = queue_state(store(), QueuePolicy.of(cfg))
    all_labels = store().labels()
    labelled = labelled_predictions(store())
    agreement = reviewer_agreement(store().reviewer_labels())
    tiles = st.columns(5)
    tiles[0].metric("Queue", state.waiting)
    tiles[1].metric("Oldest waiting", "-" if state.oldest is None else f"{state.ages_hours.max():.1f} h")
    tiles[2].metric("Labels", len(all_labels))
    accuracy = model_accuracy(labelled)
    tiles[3].metric(
        "Model right", "-" if pd.isna(accuracy) else f"{accuracy:.0%}", help="on labelled fakes and reals"
    )
    tiles[4].metric(
        "Reviewer kappa",
        "-" if pd.isna(agreement.kappa) else f"{agreement.kappa:.2f}",
        help=f"Cohen's kappa over {agreement.items} items labelled by two reviewers",
    )
    per_day = labels_per_day(all_labels)
    if not per_day.empty:
        st.markdown("**Labels per day and reviewer**")
        st.altair_chart(
            alt.Chart(per_day)
            .mark_bar()
            .encode(x=alt.X("day:T", title="day"), y=alt.Y("labels:Q"), color="reviewer:N"),
            width="stretch",
        )
    if not labelled.empty:
        st.markdown("**The model against the reviewers** (latest label; unsure left out)")
        by = st.selectbox("Split by", ["(all)", "media_kind", "manipulation"], key="stats_split")
        confusion = model_confusion(labelled, None if by == "(all)" else by)
        chart = (
            alt.Chart(confusion)
            .mark_rect()
            .encode(
                x=alt.X("verdict:N", title="model verdict"),
                y=alt.Y("label:N", title="reviewer label"),
                color=alt.Color("count:Q", scale=alt.Scale(scheme="blues")),
                tooltip=["label", "verdict", "count"],
            )
        )
        text = chart.mark_text(fontSize=14).encode(text="count:Q", color=alt.value("black"))
        layered = chart + text
        st.altair_chart(layered.facet(column=f"{by}:N") if by != "(all)" else layered, width="content")
    if agreement.items:
        st.markdown(
            f"**Reviewers against each other** ({agreement.items} items, {agreement.agreement:.0%} agree)"
        )
        pairs = agreement.pairs.groupby(["first", "second"]).size().rename("count").reset_index()
        st.altair_chart(
            alt.Chart(pairs)
            .mark_rect()
            .encode(x="second:N", y="first:N", color=alt.Color("count:Q", scale=alt.Scale(scheme="greens")))
            + alt.Chart(pairs).mark_text(fontSize=14).encode(x="second:N", y="first:N", text="count:Q"),
            width="content",
        )
    if len(state.ages_hours):
        st.markdown("**Age of the waiting items**")
        ages = pd.DataFrame({"hours": state.ages_hours})
        st.altair_chart(
            alt.Chart(ages).mark_bar().encode(x=alt.X("hours:Q", bin=alt.Bin(maxbins=30)), y="count()"),
            width="stretch",
        )


# -- drift and the loop ------------------------------------------------------------------------------
LOOP_DEPLOYMENT = "loop/on-demand"  # pipelines/deployments.py, served by `dfguard flows serve`


def _trigger_loop() -> None:
    """Queue a run of the loop's on-demand deployment on the Prefect server; the loop's own lock
    refuses it, with the reason, while another run is in progress."""
    from prefect.deployments import run_deployment

    try:
        queued = run_deployment(LOOP_DEPLOYMENT, timeout=0)
    except Exception as err:  # whatever stops Prefect (no server, no deployment), the advice is the same
        st.session_state["loop_trigger"] = (
            "error",
            f"Could not queue the loop ({type(err).__name__}: {err}). It runs from the `{LOOP_DEPLOYMENT}` "
            "deployment: start `dfguard server start` and `dfguard flows serve`, or run `dfguard loop run`.",
        )
    else:
        st.session_state["loop_trigger"] = (
            "ok",
            f"Loop run {queued.name} queued; it appears below when done.",
        )


def drift_page() -> None:
    user = require_user()
    cfg = settings()
    reports = drift_reports(cfg.loop.drift_dir)
    runs = loop_runs(registry(), cfg.registry.experiment)
    if user.is_engineer:
        st.button("Run the loop now", on_click=_trigger_loop, key="loop_trigger_button")
        outcome = st.session_state.pop("loop_trigger", None)
        if outcome is not None:
            (st.success if outcome[0] == "ok" else st.error)(outcome[1])
    st.markdown("**Feedback-loop runs** (each decides: wait, re-calibrate or fine-tune)")
    if runs.empty:
        st.caption("No loop run yet: they appear here once the feedback loop has run.")
    else:
        st.dataframe(runs, hide_index=True, width="stretch")
    st.markdown("**Drift reports** (Evidently: the served inputs and scores against the training data)")
    if not reports:
        st.caption("No drift report yet.")
        return
    chosen = st.selectbox("Report", reports, format_func=lambda path: path.stem, key="drift_report")
    st.components.v1.html(chosen.read_text(errors="replace"), height=900, scrolling=True)


# -- models ------------------------------------------------------------------------------------------
def _confirmed(action: str) -> bool:
    """A second click (the confirmation) on an action armed by the first."""
    if st.session_state.get("armed") == action:
        st.warning(f"Confirm: {action}?")
        cols = st.columns(2)
        if cols[0].button("Confirm", type="primary", key=f"confirm_{action}"):
            st.session_state.pop("armed", None)
            return True
        if cols[1].button("Cancel", key=f"cancel_{action}"):
            st.session_state.pop("armed", None)
            st.rerun()
    return False


def models_page() -> None:
    require_engineer()
    from dfguard.promotion import loadable, promote, rollback
    from dfguard.registry import version_summaries

    cfg = settings()
    client = registry()
    summaries = version_summaries(client)
    if not summaries:
        st.info("No registered model yet: `make run` trains and registers one.")
        return
    by_alias = {alias: row for row in summaries for alias in row.aliases}
    cards = st.columns(3)
    for column, alias in zip(cards, ("champion", "challenger", "previous"), strict=True):
        row = by_alias.get(alias)
        column.markdown(f"**{alias}**")
        if row is None:
            column.caption("none")
            continue
        column.metric(
            f"version {row.version}",
            f"AUC {row.video_auc:.3f}",
            f"ECE {row.video_ece:.3f}",
            delta_color="off",
        )
        reasons = row.tags.get("gate.reasons", "")
        if reasons:
            column.caption(reasons.replace("\n", "  \n"))
    table = pd.DataFrame(
        [
            {
                "version": row.version,
                "aliases": ", ".join(row.aliases),
                "created (UTC)": row.created,
                "video AUC": row.video_auc,
                "video ECE": row.video_ece,
                "gate passed": row.gate,
                "dataset": row.tags.get("lineage.dataset_hash", "")[:12],
                "git": row.tags.get("lineage.git_commit", "")[:8],
                "parent run": row.tags.get("lineage.parent_run_id", ""),
                "run": row.run_id,
            }
            for row in summaries
        ]
    )
    st.dataframe(table, hide_index=True, width="stretch")
    versions = [row.version for row in summaries]
    chosen = st.selectbox("Version", versions, key="models_version")
    cols = st.columns(3)
    force = cols[1].checkbox("Promote past a failing gate", key="models_force")
    if cols[0].button("Promote", key="promote"):
        st.session_state["armed"] = f"promote version {chosen}" + (" (forced)" if force else "")
    if cols[2].button("Roll back", key="rollback", disabled="previous" not in by_alias):
        st.session_state["armed"] = "roll back to the previous champion"
    armed = st.session_state.get("armed", "")
    if armed and _confirmed(armed):
        try:
            if armed.startswith("promote"):
                result = promote(
                    client,
                    chosen,
                    cfg.promotion,
                    force=force,
                    verify=loadable(client),
                    experiment=cfg.registry.experiment,
                )
                st.session_state["models_result"] = (
                    f"gate {'passed' if result.gate.passed else 'failed'}; "
                    f"{'promoted' if result.promoted else 'not promoted'}: " + "; ".join(result.gate.reasons)
                )
            else:
                aliases = rollback(client, verify=loadable(client))
                st.session_state["models_result"] = (
                    f"rolled back; champion is version {aliases.get('champion')}"
                )
        except (ValueError, RuntimeError) as err:
            st.session_state["models_result"] = f"refused: {err}"
        st.rerun()
    if "models_result" in st.session_state:
        st.info(st.session_state["models_result"])
