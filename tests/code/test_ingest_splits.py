"""`assign_splits` as a pure function: identity components stay whole, pins win, ratios are approached."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dfguard.ingest.splits import SPLITS, assign_splits, identity_components


def _rows(pairs: list[tuple[str, str]], pinned: list[str] | None = None) -> pd.DataFrame:
    rows = pd.DataFrame(pairs, columns=["source_identity", "target_identity"])
    if pinned is not None:
        rows["pinned_split"] = pinned
    return rows


def _components_of_sizes(sizes: list[int]) -> pd.DataFrame:
    """One component per person p0, p1, ...: person k appears in sizes[k] rows."""
    pairs = [(f"p{k}", f"p{k}") for k, size in enumerate(sizes) for _ in range(size)]
    return _rows(pairs)


def test_components_follow_chains_of_source_and_target() -> None:
    rows = _rows([("a", "a"), ("b", "a"), ("c", "b"), ("d", "d"), ("", ""), ("", "")])
    components = identity_components(rows)
    assert components[0] == components[1] == components[2]
    assert components[3] != components[0]
    # Rows with no known identity are not merged with each other.
    assert len({components[4], components[5], components[0], components[3]}) == 4


def test_components_do_not_depend_on_row_order() -> None:
    rows = _rows([("a", "b"), ("c", "d"), ("b", "c"), ("e", "e")])
    reordered = rows.iloc[::-1]
    assert identity_components(rows).to_dict() == identity_components(reordered).to_dict()


def test_linked_identities_share_one_split() -> None:
    pairs = [(f"s{k}", f"t{k}") for k in range(40)] + [(f"t{k}", f"t{k + 1}") for k in range(0, 40, 2)]
    rows = _rows(pairs)
    splits = assign_splits(rows, (0.7, 0.15, 0.15), seed=3)
    owner: dict[str, str] = {}
    for (source, target), split in zip(pairs, splits, strict=True):
        assert owner.setdefault(source, split) == split
        assert owner.setdefault(target, split) == split


def test_ratios_are_roughly_honoured_on_30_components() -> None:
    sizes = list(np.random.default_rng(0).integers(1, 8, size=30))
    rows = _components_of_sizes(sizes)
    ratios = (0.7, 0.15, 0.15)
    shares = assign_splits(rows, ratios, seed=17).value_counts(normalize=True)
    for split, ratio in zip(SPLITS, ratios, strict=True):
        assert shares[split] == pytest.approx(ratio, abs=0.08)


def test_every_split_gets_a_component_when_there_are_three() -> None:
    rows = _components_of_sizes([5, 1, 1])
    assert set(assign_splits(rows, (0.8, 0.1, 0.1), seed=0)) == set(SPLITS)


def test_fewer_components_than_splits_does_not_fail() -> None:
    rows = _components_of_sizes([3, 2])
    assert set(assign_splits(rows, (0.7, 0.15, 0.15), seed=0)) <= set(SPLITS)


def test_a_zero_ratio_split_stays_empty() -> None:
    rows = _components_of_sizes([1] * 10)
    assert "val" not in set(assign_splits(rows, (0.8, 0.0, 0.2), seed=0))


def test_same_seed_same_splits_and_other_seed_differs() -> None:
    rows = _components_of_sizes([1, 2, 3] * 10)
    first = assign_splits(rows, (0.6, 0.2, 0.2), seed=5)
    assert first.equals(assign_splits(rows, (0.6, 0.2, 0.2), seed=5))
    assert not first.equals(assign_splits(rows, (0.6, 0.2, 0.2), seed=6))


def test_a_pinned_row_carries_its_whole_component() -> None:
    rows = _rows([("a", "a"), ("b", "a"), ("b", "b"), ("c", "c")], pinned=["", "", "val", ""])
    splits = assign_splits(rows, (1.0, 0.0, 0.0), seed=0)
    assert list(splits) == ["val", "val", "val", "train"]


def test_conflicting_pins_send_the_component_to_test(caplog: pytest.LogCaptureFixture) -> None:
    rows = _rows([("a", "a"), ("b", "a"), ("b", "b")], pinned=["train", "", "val"])
    assert set(assign_splits(rows, (0.7, 0.15, 0.15), seed=0)) == {"test"}
    assert "pinned to splits" in caplog.text


@pytest.mark.parametrize("ratios", [(0.5, 0.5), (0.5, -0.1, 0.6), (0.0, 0.0, 0.0)])
def test_bad_ratios_are_refused(ratios: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="split_ratios"):
        assign_splits(_rows([("a", "a")]), ratios, seed=0)


def test_unknown_pinned_split_is_refused() -> None:
    with pytest.raises(ValueError, match="pinned_split"):
        assign_splits(_rows([("a", "a")], pinned=["holdout"]), (0.7, 0.15, 0.15), seed=0)


def test_no_rows_gives_no_splits() -> None:
    assert assign_splits(_rows([]), (0.7, 0.15, 0.15), seed=0).empty
