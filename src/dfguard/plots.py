"""ROC, precision-recall and reliability plots, written as PNG files (matplotlib's Agg backend, so
no display is needed). Each takes several named curves, to compare models or before/after
calibration on one figure."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported: servers and CI have no display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from dfguard.metrics import (
    ECE_BINS,
    average_precision,
    expected_calibration_error,
    precision_recall_curve,
    reliability_data,
    roc_auc,
    roc_curve,
)

Curves = Mapping[str, tuple[np.ndarray, np.ndarray]]  # name -> (labels, scores or probabilities)


def _save(fig: plt.Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


def plot_roc(curves: Curves, path: str | Path, title: str = "ROC") -> Path:
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (labels, scores) in curves.items():
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc(labels, scores):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(
        xlabel="false positive rate (reals flagged)", ylabel="true positive rate (fakes caught)", title=title
    )
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_precision_recall(curves: Curves, path: str | Path, title: str = "Precision-recall") -> Path:
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (labels, scores) in curves.items():
        precision, recall, _ = precision_recall_curve(labels, scores)
        ax.step(recall, precision, where="post", label=f"{name} (AP {average_precision(labels, scores):.3f})")
    ax.set(xlabel="recall (fake)", ylabel="precision (fake)", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.legend(loc="lower left")
    return _save(fig, path)


def plot_reliability(
    curves: Curves, path: str | Path, n_bins: int = ECE_BINS, title: str = "Reliability diagram"
) -> Path:
    """Observed fake fraction per probability bin against the diagonal of perfect calibration, with
    the number of samples per bin underneath (a bin of three samples says little)."""
    fig, (ax, ax_counts) = plt.subplots(
        2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    width = 1.0 / n_bins / max(len(curves), 1)
    for i, (name, (labels, probabilities)) in enumerate(curves.items()):
        data = reliability_data(labels, probabilities, n_bins)
        filled = data.counts > 0
        ece = expected_calibration_error(labels, probabilities, n_bins)
        ax.plot(
            data.mean_probability[filled],
            data.fake_fraction[filled],
            marker="o",
            label=f"{name} (ECE {ece:.3f})",
        )
        ax_counts.bar(data.edges[:-1] + i * width, data.counts, width=width, align="edge", label=name)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(ylabel="observed fake fraction", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.legend(loc="upper left")
    ax_counts.set(xlabel="predicted fake probability", ylabel="samples")
    ax_counts.set_yscale("log")
    return _save(fig, path)


def plot_scores_by_group(
    videos: pd.DataFrame, by: str, path: str | Path, threshold: float | None = None
) -> Path:
    """Each video's fake probability, one row per value of `by` (e.g. identity), reals and fakes in two
    colours: shows at a glance whether errors come from a few groups scored on a different baseline."""
    groups = sorted(videos[by].astype(str).unique())
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(groups) + 1.5))
    jitter = np.random.default_rng(0)  # fixed: the same data draw the same picture
    for target, colour, name in ((0, "tab:blue", "real"), (1, "tab:red", "fake")):
        rows = videos[videos["target"] == target]
        y = rows[by].astype(str).map(groups.index).to_numpy() + (0.15 if target else -0.15)
        y = y + jitter.uniform(-0.08, 0.08, len(y))
        ax.scatter(rows["probability"], y, s=18, color=colour, alpha=0.7, label=name)
    if threshold is not None:
        ax.axvline(threshold, color="grey", linestyle=":", linewidth=1, label="threshold")
    ax.set_yticks(range(len(groups)), groups)
    ax.set(xlabel="fake probability (video)", xlim=(0, 1), title=f"Video scores by {by}")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_history(history: list[dict[str, float]], path: str | Path) -> Path:
    """Training curves: losses per epoch (left) and validation AUCs (right), frozen epochs shaded."""
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train loss")
    left.plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation loss")
    if all("identity_loss" in h for h in history):  # the identity adversary's, when training had one
        left.plot(epochs, [h["identity_loss"] for h in history], marker="o", label="identity adversary loss")
    right.plot(epochs, [h["val_frame_auc"] for h in history], marker="o", label="frame AUC")
    right.plot(epochs, [h["val_video_auc"] for h in history], marker="o", label="video AUC")
    for ax in (left, right):
        for h in history:
            if h.get("frozen"):
                ax.axvspan(h["epoch"] - 0.5, h["epoch"] + 0.5, color="grey", alpha=0.15)
        ax.set_xlabel("epoch (shaded: backbone frozen)")
        ax.grid(alpha=0.3)
        ax.legend()
    right.set_ylabel("validation AUC")
    left.set_ylabel("loss")
    fig.suptitle("Training")
    return _save(fig, path)


def plot_bars(values: Mapping[str, float], path: str | Path, xlabel: str, title: str) -> Path:
    """One horizontal bar per named value, in the order given, each labelled with its value."""
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(values) + 1.2))
    names = list(values)[::-1]
    bars = ax.barh(names, [values[name] for name in names], color="tab:blue")
    ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    ax.axvline(0.5, color="black", linewidth=0.5)
    ax.set(xlabel=xlabel, xlim=(0.4, 1.05), title=title)
    ax.tick_params(axis="y", labelsize=7)
    return _save(fig, path)


def plot_learning_curve(points: list[dict], path: str | Path, title: str = "Learning curve") -> Path:
    """Pooled held-out video AUC (with its interval over people), per method and within-person, against
    the mean number of people each fold trained on (`learning_curve.curve_point`)."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    people = [point["train_people_mean"] for point in points]
    auc = np.array([point["video_auc"] for point in points], dtype=np.float64)
    low = np.array([point["video_auc_low"] or np.nan for point in points], dtype=np.float64)
    high = np.array([point["video_auc_high"] or np.nan for point in points], dtype=np.float64)
    ax.fill_between(people, low, high, color="tab:blue", alpha=0.15, label="95% interval (people resampled)")
    ax.plot(people, auc, "o-", color="tab:blue", label="video AUC, pooled")
    methods = sorted({method for point in points for method in point["auc_by_method"]})
    for method in methods:
        values = [point["auc_by_method"].get(method, np.nan) for point in points]
        ax.plot(people, values, "s--", linewidth=1, label=f"{method} vs reals")
    within = [point["within_identity_auc"] or np.nan for point in points]
    ax.plot(people, within, "^:", color="grey", label="within-person AUC")
    ax.axhline(0.5, color="black", linewidth=0.5)
    ax.set(xlabel="people trained on (mean over folds)", ylabel="AUC", ylim=(0.3, 1.0), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_throughput(rows: list[dict], path: str | Path, levels: tuple[int, ...]) -> Path:
    """Answers per second against concurrent clients, one panel per input, one line per mode (rows with
    keys input, mode, clients, requests_per_s, as `dfguard bench serve` writes them)."""
    inputs = list(dict.fromkeys(row["input"] for row in rows))
    fig, axes = plt.subplots(1, len(inputs), figsize=(5 * len(inputs), 3.6), squeeze=False)
    for ax, name in zip(axes[0], inputs, strict=True):
        for mode in dict.fromkeys(row["mode"] for row in rows):
            chosen = [r for r in rows if r["input"] == name and r["mode"] == mode]
            ax.plot(
                [r["clients"] for r in chosen], [r["requests_per_s"] for r in chosen], marker="o", label=mode
            )
        ax.set(xscale="log", xlabel="concurrent clients", ylabel="answers / s", title=name)
        ax.set_xticks(levels, [str(level) for level in levels])
        ax.legend()
    return _save(fig, path)


def plot_loop_bench(rows: list[dict], shift: str, path: str | Path) -> Path:
    """`dfguard bench loop`: per design, the holdout's AUC and the share of its fakes called FAKE
    against the labels given, as the challenger judged it (what the round learned), the champion's
    before as a dashed line; and the frozen suite's AUC change of every row."""
    fig, (gain, recall, forget) = plt.subplots(1, 3, figsize=(14, 3.8))
    colours = {"expert": "tab:blue", "finetune": "tab:orange"}
    for design in sorted({row["design"] for row in rows}):
        curve = [row for row in rows if row["design"] == design]
        labels = [row["labels"] for row in curve]
        colour = colours.get(design, "tab:gray")
        for axis, key in ((gain, "auc"), (recall, "fakes_called_fake")):
            axis.plot(
                labels,
                [row.get("holdout_challenger", {}).get(key, float("nan")) for row in curve],
                marker="o",
                color=colour,
                label=f"{design}: challenger",
            )
            axis.plot(
                labels,
                [row["holdout_after"][key] for row in curve],
                marker="s",
                ls=":",
                color=colour,
                label=f"{design}: served after the gate",
            )
    before = rows[0]["holdout_before"]
    for axis, key, name in (
        (gain, "auc", "holdout AUC"),
        (recall, "fakes_called_fake", "holdout fakes called FAKE"),
    ):
        axis.axhline(before[key], color="tab:gray", ls="--", lw=0.8, label="champion before")
        ticks = sorted({row["labels"] for row in rows})
        axis.set(xlabel="simulated labels", ylabel=name, xscale="log", ylim=(0, 1.02))
        axis.set_xticks(ticks, [str(n) for n in ticks])
        axis.legend(fontsize=6)
    gain.set_title(f"{shift}: labels vs gain")
    recall.set_title("recall at the service's verdicts")
    names = [f"{row['labels']}, {row['design']}" for row in rows]
    forget.barh(names, [-row["forgetting"] for row in rows], color="tab:gray")
    forget.axvline(-0.01, color="tab:red", ls="--", lw=0.8, label="-0.01 (target)")
    forget.set(xlabel="frozen suite video AUC change", title="Forgetting")
    forget.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_load(
    started_s: list[float],
    latency_ms: list[float],
    ok: list[bool],
    percentiles: Mapping[str, float],
    path: str | Path,
) -> Path:
    """`dfguard bench load`: each request's latency against when it started (failures in red), and the
    histogram of the latencies with the `percentiles` (name -> ms) marked."""
    fig, (timeline, histogram) = plt.subplots(1, 2, figsize=(10, 3.6))
    started, latency, good = np.asarray(started_s), np.asarray(latency_ms), np.asarray(ok, dtype=bool)
    timeline.scatter(started[good], latency[good], s=4, alpha=0.5, color="tab:blue", label="2xx")
    if (~good).any():
        timeline.scatter(started[~good], latency[~good], s=8, color="tab:red", label="error")
    timeline.set(xlabel="request start (s)", ylabel="latency (ms)", title="Latency over the run")
    timeline.legend(fontsize=7)
    histogram.hist(latency[good], bins=40, color="tab:blue", alpha=0.8)
    for (name, value), colour in zip(
        percentiles.items(), ("tab:green", "tab:orange", "tab:red"), strict=False
    ):
        histogram.axvline(value, color=colour, ls="--", lw=0.8, label=f"{name} {value:.0f} ms")
    histogram.set(xlabel="latency (ms)", ylabel="requests", title="Latency")
    histogram.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
