"""The torch thread-count guard shared by extraction and the predictor."""

from __future__ import annotations

import threading

import torch

from dfguard.runtime import torch_threads


def test_torch_threads_sets_the_count_and_restores_it() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_overlapping_blocks_restore_the_count_only_when_the_last_one_leaves() -> None:
    torch.set_num_threads(2)
    first_inside, second_inside, first_left = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, int] = {}

    def first() -> None:
        with torch_threads(1):
            first_inside.set()
            second_inside.wait(10)
        first_left.set()

    def second() -> None:
        first_inside.wait(10)
        with torch_threads(1):
            second_inside.set()
            first_left.wait(10)
            seen["after the first left"] = torch.get_num_threads()

    workers = [threading.Thread(target=first), threading.Thread(target=second)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(20)
    assert seen == {"after the first left": 1}, "the first block out must not restore 2 threads"
    assert torch.get_num_threads() == 2
