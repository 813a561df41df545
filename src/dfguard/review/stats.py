"""What the reviewers' labels say: their pace, how often they agree with each other (Cohen's kappa)
and with the model (a confusion matrix by media kind and manipulation kind)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from sklearn.metrics import cohen_kappa_score

from dfguard.feedback import LABELS, PredictionStore


@dataclass(frozen=True)
class ReviewerAgreement:
    items: int  # labelled by two reviewers or more
    agreed: int  # of those, where the first two gave the same label
    kappa: float  # Cohen's kappa of the first two reviewers' labels; NaN below 2 items or one label only
    pairs: pd.DataFrame  # prediction_id, first, second (their labels)

    @property
    def agreement(self) -> float:
        return self.agreed / self.items if self.items else math.nan


def reviewer_agreement(reviewer_labels: pd.DataFrame) -> ReviewerAgreement:
    """Agreement of the first two reviewers of each item, on each one's latest label
    (`PredictionStore.reviewer_labels`). Kappa corrects the raw agreement for what chance gives."""
    ordered = reviewer_labels.sort_values("id")
    first_two = ordered.groupby("prediction_id", sort=False).head(2)
    ranked = first_two.assign(rank=first_two.groupby("prediction_id").cumcount())
    pairs = ranked.pivot(index="prediction_id", columns="rank", values="label")
    pairs = pairs.reindex(columns=[0, 1]).dropna().rename(columns={0: "first", 1: "second"}).reset_index()
    pairs.columns.name = None
    n = len(pairs)
    agreed = int((pairs["first"] == pairs["second"]).sum())
    kappa = math.nan
    if n >= 2 and len(set(pairs["first"]) | set(pairs["second"])) > 1:
        kappa = float(cohen_kappa_score(pairs["first"], pairs["second"], labels=list(LABELS)))
    return ReviewerAgreement(n, agreed, kappa, pairs)


def labelled_predictions(store: PredictionStore) -> pd.DataFrame:
    """Each labelled prediction with its latest label and that label's manipulation kind."""
    listed = store.predictions(labelled=True)
    latest = store.latest_labels()[["prediction_id", "manipulation"]]
    return listed.merge(latest, on="prediction_id", how="left")


def model_confusion(labelled: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    """Counts of the reviewers' label (rows: fake, real; `unsure` says nothing of the model) against
    the model's verdict (columns), optionally per value of `by` (media_kind, manipulation)."""
    decided = labelled[labelled["label"].isin(("fake", "real"))]
    keys = ["label", "verdict"] if by is None else [by, "label", "verdict"]
    return (
        decided.fillna({by: "(none)"} if by else {})
        .groupby(keys, dropna=False)
        .size()
        .rename("count")
        .reset_index()
    )


def model_accuracy(labelled: pd.DataFrame) -> float:
    """Share of labelled fakes and reals whose verdict was right (UNCERTAIN counts as not right)."""
    decided = labelled[labelled["label"].isin(("fake", "real"))]
    if decided.empty:
        return math.nan
    return float((decided["verdict"].str.lower() == decided["label"]).mean())


def labels_per_day(all_labels: pd.DataFrame) -> pd.DataFrame:
    """day (UTC date), reviewer, labels: every label given, changed ones included (the work done)."""
    if all_labels.empty:
        return pd.DataFrame(columns=["day", "reviewer", "labels"])
    days = all_labels["created_at"].dt.tz_convert("UTC").dt.floor("D")
    return all_labels.assign(day=days).groupby(["day", "reviewer"]).size().rename("labels").reset_index()
