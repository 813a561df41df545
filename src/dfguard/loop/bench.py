"""`dfguard bench loop --shift KIND`: what the loop buys and what it costs, on a stream of a kind of fake
the champion misses (`loop.shifts`: a new kind such as `reshape` or `resynth`, or `degrade`, known
fakes re-shared at low resolution), along the real path: a running service judges the stream, a simulated
reviewer labels it in the store, the loop learns, gates and promotes, the service switches.

Labels accumulate as a reviewer's would: the pool is judged and labelled up to the first count, the
loop runs once per design (`loop.learn`: `expert`, the added capacity, and `finetune`, the replay
refit it replaced) from the same champion, the champion is put back, labelling goes on to the next
count, and so on. Every row therefore starts from one champion, and its feedback-train / holdout
items are the earlier rows' plus new ones (the split is frozen per item).

Each row reports the stream's holdout (the test split's people: never trained on, never labelled) as
two services judge it: the one serving the champion alias (what clients get; it changes only when the
challenger is promoted) and a second one serving the challenger alias (what the round learned,
promoted or not): AUC, the share of the kind's fakes called FAKE, of real items called FAKE and the
worst person's. Also: the frozen suite's video AUC and ECE of both models, the checks (and which
failed), and the seconds from the last label to the promoted model serving.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from dfguard.config import Config
from dfguard.feedback import PredictionStore, open_store
from dfguard.loop.demo import (
    StreamItem,
    demo_service,
    judge_all,
    label_as_simulated,
    pool_order,
    verdict_figures,
    wait_for_version,
)
from dfguard.loop.run import run_loop
from dfguard.loop.shifts import stream_for
from dfguard.plots import plot_loop_bench
from dfguard.registry import CHAMPION, configure, current_aliases
from dfguard.registry.aliases import restore_aliases
from dfguard.serving.client import DetectionClient

LABEL_COUNTS = (10, 25, 50, 100, 200)
DESIGNS = ("expert", "finetune")
CHALLENGER_URI = "models:/dfguard-detector@challenger"


def bench_loop(
    cfg: Config,
    params_path: Path,
    overrides: dict[str, Any],
    out_dir: Path,
    counts: tuple[int, ...] = LABEL_COUNTS,
    shift: str = "reshape",
    designs: tuple[str, ...] = DESIGNS,
    progress: bool = True,
    media: str = "image",
) -> dict[str, Any]:
    """The rows of the module docstring; writes loop.json and loop.png to `out_dir`."""
    counts = tuple(sorted(set(counts)))
    run_dir = out_dir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    # A store, feedback dataset, drift and work folder of the bench's own, so its labels are exactly
    # its own and no cached champion of another run is reused.
    settings = {
        "feedback.root": str(run_dir / "feedback"),
        "feedback.db_url": "",
        "loop.dataset_dir": str(run_dir / "feedback-faces"),
        "loop.drift_dir": str(run_dir / "drift"),
    }
    cfg = dataclasses.replace(
        cfg,
        feedback=dataclasses.replace(cfg.feedback, root=settings["feedback.root"], db_url=""),
        loop=dataclasses.replace(
            cfg.loop, dataset_dir=settings["loop.dataset_dir"], drift_dir=settings["loop.drift_dir"]
        ),
    )
    stream_dir = out_dir.parent / (f"stream-{shift}" if media == "image" else f"stream-{shift}-{media}")
    items = stream_for(shift, cfg.extract.manifest_path, cfg.extract.dataset_dir, stream_dir, progress, media)
    holdout = [item for item in items if item.holdout]
    pool = pool_order(items, cfg.train.seed)
    if len(pool) < counts[-1]:
        raise ValueError(f"the stream's pool holds {len(pool)} balanced items, fewer than {counts[-1]}")
    registry = configure(cfg.registry)
    aliases = current_aliases(registry)
    champion = aliases[CHAMPION]
    overrides = {**overrides, **settings}
    rows: list[dict[str, Any]] = []
    with ExitStack() as stack:
        served = DetectionClient(
            stack.enter_context(demo_service(cfg, params_path, overrides, run_dir / "served"))
        )
        stack.callback(served.close)
        store = stack.enter_context(open_store(cfg.feedback))
        judges = _ChallengerJudge(stack, cfg, params_path, overrides, run_dir / "challenger")
        before = verdict_figures(holdout, judge_all(served, holdout, "holdout, champion", progress))
        labelled = 0
        for n in counts:
            batch = pool[labelled:n]
            label_as_simulated(store, batch, judge_all(served, batch, f"pool to {n}", progress))
            labelled = n
            for design in designs:
                row_cfg = dataclasses.replace(cfg, loop=dataclasses.replace(cfg.loop, learn=design))
                try:
                    row = _row(row_cfg, store, served, judges, holdout, before, progress)
                finally:
                    restore_aliases(registry, aliases)  # the next row starts from the same champion
                wait_for_version(served, champion, 10 * cfg.serve.reload_interval_s + 120)
                rows.append({"labels": n, "design": design, "holdout_before": before, **row})
                _write(out_dir, rows, counts, shift, media)
    return _write(out_dir, rows, counts, shift, media)


class _ChallengerJudge:
    """A second service, serving the challenger alias, started at the first challenger and kept for
    the rest of the bench (its recent-features memory makes the holdout cheap to judge again). Its
    predictions go to a store of its own: the bench's store holds only the stream's traffic."""

    def __init__(
        self, stack: ExitStack, cfg: Config, params_path: Path, overrides: dict[str, Any], out_dir: Path
    ) -> None:
        self.stack, self.cfg, self.params_path, self.out_dir = stack, cfg, params_path, out_dir
        self.overrides = {
            **overrides,
            "serve.model_uri": CHALLENGER_URI,
            "feedback.root": str(out_dir / "feedback"),
        }
        self.client: DetectionClient | None = None

    def figures(self, version: str, holdout: list[StreamItem], progress: bool) -> dict[str, Any]:
        if self.client is None:
            url = self.stack.enter_context(
                demo_service(self.cfg, self.params_path, self.overrides, self.out_dir)
            )
            self.client = DetectionClient(url)
            self.stack.callback(self.client.close)
        wait_for_version(self.client, version, 10 * self.cfg.serve.reload_interval_s + 120)
        return verdict_figures(holdout, judge_all(self.client, holdout, "holdout, challenger", progress))


def _row(
    cfg: Config,
    store: PredictionStore,
    served: DetectionClient,
    judges: _ChallengerJudge,
    holdout: list[StreamItem],
    before: dict[str, Any],
    progress: bool,
) -> dict[str, Any]:
    """One loop run (a fine-tune) on the store's labels so far; the holdout as the challenger's service
    judges it, and as the served model does once the challenger is promoted (until then the champion
    judged before serves on, and its figures stand)."""
    last_label = time.monotonic()
    result = run_loop(cfg, store, configure(cfg.registry), "finetune", progress=progress)
    serving_s, after = None, before
    if result.promoted and result.challenger:
        wait_for_version(served, result.challenger, 10 * cfg.serve.reload_interval_s + 120)
        serving_s = round(time.monotonic() - last_label, 1)
        after = verdict_figures(holdout, judge_all(served, holdout, "holdout, served", progress))
    challenger: dict[str, Any] = {}
    if result.promoted:
        challenger = after  # promoted: the challenger alias moved to champion, and it is what serves
    elif result.challenger:
        challenger = judges.figures(result.challenger, holdout, progress)
    frozen = result.scores.get("frozen", {})
    old = frozen.get("champion", {}).get("auc", float("nan"))
    new = frozen.get("challenger", {}).get("auc", float("nan"))
    return {
        "frozen": {
            name: {key: frozen.get(name, {}).get(key) for key in ("auc", "ece", "photo_auc", "photo_ece")}
            for name in ("champion", "challenger")
        },
        "failed": [check.name for check in result.checks if not check.passed],
        "decision": result.decision.action,
        "challenger": result.challenger,
        "promoted": result.promoted,
        "holdout_after": after,
        "holdout_challenger": challenger,
        "feedback_holdout": result.scores.get("holdout", {}),
        "frozen_champion_auc": old,
        "frozen_challenger_auc": new,
        "forgetting": round(old - new, 4),
        "checks": [check.to_dict() for check in result.checks],
        "labels_used": result.dataset.items if result.dataset else None,
        "seconds": {
            **result.seconds,
            "loop_total": round(sum(result.seconds.values()), 1),
            "last_label_to_serving": serving_s,
        },
    }


def _write(
    out_dir: Path, rows: list[dict[str, Any]], counts: tuple[int, ...], shift: str, media: str
) -> dict:
    """loop.json and loop.png so far (written after every row: a long run shows its progress)."""
    result = {"shift": shift, "media": media, "rows": rows, "counts": list(counts)}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "loop.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    if rows:
        plot_loop_bench(rows, shift, out_dir / "loop.png")
    return result
