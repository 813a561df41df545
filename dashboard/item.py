"""One prediction as a reviewer sees it: the media, the face crops the model judged, the verdict and its
evidence, the confidence over time, and the labels it has had."""

from __future__ import annotations

import base64
from typing import Any

import pandas as pd
import streamlit as st

from dfguard.feedback import PredictionStore

MAX_CROPS = 12
VERDICT_COLOURS = {"FAKE": "red", "REAL": "green", "UNCERTAIN": "orange"}


def verdict_badge(verdict: str, probability: float | None) -> str:
    colour = VERDICT_COLOURS.get(verdict, "gray")
    shown = "" if probability is None else f" · p(fake) {probability:.3f}"
    return f":{colour}-badge[{verdict}{shown}]"


def show_prediction(record: dict[str, Any], store: PredictionStore, show_labels: bool = True) -> None:
    """Everything stored about one prediction (`PredictionStore.get`)."""
    st.markdown(
        f"### {verdict_badge(record['verdict'], record['probability'])}  \n"
        f"`{record['prediction_id']}` · {record['media_kind'] or 'unknown media'} · "
        f"{record['created_at']:%Y-%m-%d %H:%M:%S} UTC"
    )
    model = record["model_name"] + (
        f" v{record['model_version']}" if record["model_version"] else " (folder)"
    )
    threshold = record.get("threshold")
    st.caption(
        f"model {model}{' @' + record['model_alias'] if record['model_alias'] else ''} · calibration "
        f"{record['calibration'] or '-'}" + ("" if threshold is None else f" · threshold {threshold:.3f}")
    )
    if record["reason"]:
        st.info(record["reason"])
    media, evidence = st.columns([3, 2])
    with media:
        _show_media(record)
        _show_crops(record)
    with evidence:
        _show_evidence(record)
        _show_timeline(record)
    if show_labels:
        history = store.labels(record["prediction_id"])
        if not history.empty:
            st.markdown("**Labels** (every one kept; the latest of each reviewer counts)")
            st.dataframe(
                history[["created_at", "reviewer", "label", "manipulation", "note"]],
                hide_index=True,
                width="stretch",
            )


def _show_media(record: dict[str, Any]) -> None:
    path = record["upload_path"]
    if path is None or not path.is_file():
        st.caption("The upload was not kept (feedback.keep_uploads) or has been purged.")
        return
    if record["media_kind"] == "video":
        st.video(str(path))
    else:
        st.image(str(path), width="stretch")


def _show_crops(record: dict[str, Any]) -> None:
    crops = [crop for crop in record["crops"] if crop["path"].is_file()]
    if not crops:
        st.caption("No face crops (nothing was judged).")
        return
    # The most suspicious faces first: those are what the verdict rests on.
    crops.sort(key=lambda crop: -(crop["probability"] if crop["probability"] is not None else -1.0))
    shown = crops[:MAX_CROPS]
    st.markdown(f"**Faces judged** ({len(crops)}; most suspicious first)")
    st.image(
        [str(crop["path"]) for crop in shown],
        caption=[_crop_caption(crop) for crop in shown],
        width=112,
    )


def _crop_caption(crop: dict[str, Any]) -> str:
    probability = "-" if crop["probability"] is None else f"{crop['probability']:.2f}"
    return f"frame {crop['frame_index']} · track {crop['track_id']} · p {probability}"


def _show_evidence(record: dict[str, Any]) -> None:
    rows = {
        "fused logit": record["logit"],
        "appearance logit": record["appearance_logit"],
        "drift (px, face vs head)": record["drift"],
        "frame spread (std)": record["temporal_std"],
        "verdict flips": record["flip_rate"],
        "faces / frames": f"{record['n_faces']} / {record['n_frames']}",
        **{f"quality: {key}": value for key, value in record["quality"].items()},
    }
    shown = {key: ("-" if value is None else value) for key, value in rows.items()}
    st.dataframe(
        pd.DataFrame({"evidence": list(shown), "value": [str(v) for v in shown.values()]}),
        hide_index=True,
        width="stretch",
    )


def _show_timeline(record: dict[str, Any]) -> None:
    frames = pd.DataFrame(record["frames"])
    if record["media_kind"] != "video" or frames.empty or "probability" not in frames:
        return
    scored = frames.dropna(subset=["probability"])
    if scored.empty:
        return
    st.markdown("**p(fake) over time** (each frame's most suspicious face)")
    st.line_chart(scored.set_index("timestamp_s")["probability"], x_label="seconds", y_label="p(fake)")


def show_explanations(answer: dict[str, Any]) -> None:
    """The Grad-CAM overlays of a service answer (`explain=true`)."""
    shown = answer.get("explanations") or []
    if not shown:
        return
    st.markdown("**Grad-CAM** (where the detector looked, on the most suspicious faces)")
    st.image(
        [base64.b64decode(item["png_base64"]) for item in shown],
        caption=[
            f"frame {item['frame_index']} · p {item['probability']:.2f} · evidence for {item['evidence_for']}"
            for item in shown
        ],
        width=160,
    )
