"""What every command shares: the configuration from params, `--set` pairs and the command's flags,
and the one-line texts of an evaluation's interval and calibration check."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dfguard.config import Config, load_config, parse_overrides
from dfguard.models.features import use_store_if_made

# argparse's type for the object `add_subparsers` returns; every command module adds its parsers to it.
Commands = argparse._SubParsersAction


def config_from(args: argparse.Namespace, flags: dict[str, object]) -> Config:
    """Defaults, then params.yaml, then `--set` pairs, then the command's own flags (when given)."""
    overrides: dict[str, object] = dict(parse_overrides(args.set))
    overrides.update({key: value for key, value in flags.items() if value is not None})
    config = load_config(Path(args.params), overrides)
    # Frozen backbones look features up in `dfguard embed`'s store instead of recomputing them: the
    # same numbers, in a fraction of the time, for every stage and study a command runs.
    use_store_if_made(config.embed.out_dir)
    return config


def calibration_text(metrics: dict[str, Any]) -> str:
    """The measured ECE next to what a perfectly calibrated model would show on the same videos."""
    floor = metrics.get("ece_if_calibrated")
    if not floor:
        return "no calibration check: these metrics were written before dfguard measured it"
    return (
        f"ECE {metrics['video']['ece']:.3f}; a perfectly calibrated model would show {floor['mean']:.3f} "
        f"on these {metrics['video']['n']:.0f} videos (95% of draws below {floor['high']:.3f}; "
        f"p = {floor['p_value']:.3f})"
    )


def interval_text(metrics: dict[str, Any]) -> str:
    """The bootstrap interval of the video AUC and ECE, resampling people where the split names them."""
    interval = metrics.get("video_interval")
    if not interval:
        return "no interval: the split has one class"
    resampled = "identities" if interval["identities"] else "videos"
    bounds = interval[resampled]
    return (
        f"{interval['level']:.0%} bootstrap interval (resampling {resampled}): video AUC "
        f"{bounds['auc_low']:.3f}-{bounds['auc_high']:.3f}, "
        f"ECE {bounds['ece_low']:.3f}-{bounds['ece_high']:.3f}"
    )
