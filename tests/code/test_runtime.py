"""The torch thread-count guard shared by extraction and the predictor, and FFmpeg kept quiet."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import av
import numpy as np
import torch

from dfguard.runtime import MEDIA_DEFAULTS, torch_threads


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


READ_WITH_OPENCV = """
import sys
from pathlib import Path
if sys.argv[2] == "configured":
    from dfguard.runtime import configure_runtime
    configure_runtime()
from dfguard.faces.frames import read_sampled
from dfguard.media import MediaError
try:
    read_sampled(Path(sys.argv[1]), 4, backends=("opencv",))
except MediaError as err:
    print(err)
"""


def test_ffmpeg_prints_nothing_of_its_own_once_the_runtime_is_configured(tmp_path: Path) -> None:
    """A WebM cut inside its first frame makes OpenCV's FFmpeg print a raw line to the terminal; entry
    points turn that off, and the reason still reaches the caller as a MediaError."""
    whole = tmp_path / "whole.webm"
    rng = np.random.default_rng(0)
    with av.open(str(whole), "w", options={"live": "1"}) as container:
        stream = container.add_stream("libvpx", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for _ in range(5):
            frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)  # noise: a keyframe of many KB
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")))
        container.mux(stream.encode())
    truncated = tmp_path / "truncated.webm"
    truncated.write_bytes(whole.read_bytes()[:5000])
    env = {k: v for k, v in os.environ.items() if k not in MEDIA_DEFAULTS}

    def run(mode: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-c", READ_WITH_OPENCV, str(truncated), mode]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True, env=env)

    default, configured = run("default"), run("configured")
    assert "File ended prematurely" in default.stderr  # the premise: left alone, FFmpeg prints
    assert configured.stderr == ""
    assert configured.stdout.startswith("unreadable video (opencv:")
