"""Identity-disjoint train/val/test assignment, as a pure function of the rows.

A face-swap fake shows two people, so a fake links its source and target identities; people linked
directly or through a chain form one component, and a component is never split. Otherwise a model
could be tested on a person it was trained on, which inflates every metric.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Sequence

import pandas as pd

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class _UnionFind:
    """Disjoint sets of keys whose representative is the smallest key, so it never depends on row order."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, key: str) -> str:
        self.parent.setdefault(key, key)
        root = key
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[key] != root:
            self.parent[key], key = root, self.parent[key]
        return root

    def union(self, a: str, b: str) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            low, high = sorted((root_a, root_b))
            self.parent[high] = low


def identity_components(rows: pd.DataFrame) -> pd.Series:
    """The component key of every row: rows sharing a source or target identity, transitively, share it.

    A row with neither identity known is a component of its own.
    """
    sets = _UnionFind()
    keys = []
    pairs = zip(rows.index, rows["source_identity"], rows["target_identity"], strict=True)
    for index, source, target in pairs:
        names = [f"id:{name}" for name in (source, target) if name]
        if not names:
            names = [f"row:{index}"]
        for name in names[1:]:
            sets.union(names[0], name)
        keys.append(names[0])
    return pd.Series([sets.find(key) for key in keys], index=rows.index, dtype=object)


def _normalised(ratios: Sequence[float]) -> tuple[float, float, float]:
    if len(ratios) != len(SPLITS) or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"split_ratios must be 3 non-negative numbers with a positive sum, got {ratios!r}")
    total = sum(ratios)
    return tuple(r / total for r in ratios)  # type: ignore[return-value]


def _pinned_split(component: str, pins: set[str]) -> str:
    if len(pins) == 1:
        return next(iter(pins))
    # Official lists disagree about people who are linked: test is the only place where
    # keeping them together cannot leak test identities into training.
    log.warning("identity group %s is pinned to splits %s; putting it in test", component, sorted(pins))
    return "test"


def assign_splits(rows: pd.DataFrame, ratios: Sequence[float], seed: int) -> pd.Series:
    """The split of every row, keeping identity components whole.

    `rows` needs `source_identity` and `target_identity` (empty = unknown) and may have `pinned_split`
    ("" = free). A component with a pinned row takes that split entirely. Free components are shuffled
    with `seed`, and, when there are at least as many components as splits to fill, every empty split
    first receives the smallest free component; each remaining component then goes to the split
    furthest below its target number of files.
    """
    weights = dict(zip(SPLITS, _normalised(ratios), strict=True))
    components = identity_components(rows)
    pinned = rows["pinned_split"] if "pinned_split" in rows else pd.Series("", index=rows.index)
    unknown = set(pinned) - {"", *SPLITS}
    if unknown:
        raise ValueError(f"pinned_split values must be one of {SPLITS} or empty, got {sorted(unknown)}")

    sizes = Counter(components)
    pins: dict[str, set[str]] = {}
    for component, split in zip(components, pinned, strict=True):
        if split:
            pins.setdefault(component, set()).add(split)
    assignment = {component: _pinned_split(component, splits) for component, splits in sorted(pins.items())}

    filled = Counter({split: 0 for split in SPLITS})
    for component, split in assignment.items():
        filled[split] += sizes[component]
    free = sorted(set(sizes) - set(assignment))
    random.Random(seed).shuffle(free)  # nosec B311  # a reproducible split order, not a secret
    active = [split for split in SPLITS if weights[split] > 0]

    def place(component: str, split: str) -> None:
        assignment[component] = split
        filled[split] += sizes[component]

    if len(sizes) >= len(active):
        for split in active:
            if filled[split] == 0 and free:
                smallest = min(free, key=sizes.__getitem__)
                free.remove(smallest)
                place(smallest, split)
    target = {split: weights[split] * len(rows) for split in SPLITS}
    for component in free:
        place(component, max(active, key=lambda split: target[split] - filled[split]))
    return components.map(assignment).rename("split")
