"""`dfguard bench loop`: what the loop buys and what it costs, each figure from `dfguard loop demo`'s
real path (the shifted stream through a real service, simulated labels, a loop run, the service
switching). One demo per row, each from the same champion (the aliases are put back after each) with
a store of its own, so a row's labels are exactly its own:

- labels needed vs gain: 25, 50, 100, 200 simulated labels, the shifted holdout people judged before
  and after;
- forgetting: the frozen test suite's video AUC, champion against challenger, in the same run;
- wall time from the last label to the promoted champion serving;
- replay against none: the 100-label run again with `loop.replay_share` 0.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from dfguard.config import Config
from dfguard.loop.demo import run_demo
from dfguard.plots import plot_loop_bench
from dfguard.registry import configure, current_aliases
from dfguard.registry.aliases import restore_aliases

LABEL_COUNTS = (25, 50, 100, 200)
REPLAY_CHECK_LABELS = 100


def bench_loop(
    cfg: Config,
    params_path: Path,
    overrides: dict[str, Any],
    out_dir: Path,
    counts: tuple[int, ...] = LABEL_COUNTS,
    progress: bool = True,
) -> dict[str, Any]:
    """One `run_demo` per row (see the module docstring); writes loop.json and loop.png to `out_dir`."""
    client = configure(cfg.registry)
    aliases = current_aliases(client)
    runs = [(n, cfg.loop.replay_share) for n in counts]
    runs.append((REPLAY_CHECK_LABELS if REPLAY_CHECK_LABELS in counts else counts[-1], 0.0))
    rows = []
    for labels, replay in runs:
        run_dir = out_dir / f"labels{labels}-replay{replay:g}"
        shutil.rmtree(run_dir, ignore_errors=True)
        # A store, feedback dataset and drift folder of its own: the row's labels are its own.
        settings = {
            "feedback.root": str(run_dir / "feedback"),
            "feedback.db_url": "",
            "loop.dataset_dir": str(run_dir / "feedback-faces"),
            "loop.drift_dir": str(run_dir / "drift"),
            "loop.replay_share": replay,
        }
        run_cfg = dataclasses.replace(
            cfg,
            feedback=dataclasses.replace(cfg.feedback, root=settings["feedback.root"], db_url=""),
            loop=dataclasses.replace(
                cfg.loop,
                dataset_dir=settings["loop.dataset_dir"],
                drift_dir=settings["loop.drift_dir"],
                replay_share=replay,
            ),
        )
        try:
            figures = run_demo(
                run_cfg,
                params_path,
                {**overrides, **settings},
                run_dir,
                labels,
                progress=progress,
                stream_dir=out_dir / "stream",
            )
        finally:
            restore_aliases(client, aliases)  # the next row starts from the same champion
        rows.append(_row(labels, replay, figures))
    result = {"rows": rows, "counts": list(counts), "replay_share": cfg.loop.replay_share}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "loop.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_loop_bench(rows, cfg.loop.replay_share, out_dir / "loop.png")
    return result


def _row(labels: int, replay: float, figures: dict[str, Any]) -> dict[str, Any]:
    frozen = figures["frozen_suite"]
    old = frozen.get("champion", {}).get("auc", float("nan"))
    new = frozen.get("challenger", {}).get("auc", float("nan"))
    return {
        "labels": labels,
        "replay_share": replay,
        "decision": figures["decision"]["action"],
        "promoted": figures["promoted"],
        "holdout_before": figures["holdout"]["before"],
        "holdout_after": figures["holdout"]["after"],
        "frozen_champion_auc": old,
        "frozen_challenger_auc": new,
        "forgetting": round(old - new, 4),
        "checks": figures["checks"],
        "seconds": figures["seconds"],
    }
