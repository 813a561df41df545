"""`dfguard up`: servers started in order, each waited for; one `up` per project; the real platform
(MLflow, Prefect + deployments, service, dashboard) up, refusing a second `up`, and stopped by Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from dfguard.servers import AlreadyRunningError, Server, free_port, run_servers, single_instance


def test_a_second_holder_of_the_lock_is_told_who_runs(tmp_path: Path) -> None:
    lock = tmp_path / "up.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom pathlib import Path\nfrom dfguard.servers import single_instance\n"
            f"with single_instance(Path({str(lock)!r}), 'x'):\n    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = pytest.raises(AlreadyRunningError, match=f"already running \\(process {holder.pid};")
        with refused, single_instance(lock, "dfguard up"):
            pass
    finally:
        holder.kill()
        holder.wait()
    with single_instance(lock, "dfguard up"):  # the kernel freed the dead holder's lock
        assert lock.read_text() == str(os.getpid())


def test_each_server_is_ready_before_the_next_starts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    port = free_port()
    slow = f"sleep 1.5; exec {sys.executable} -m http.server {port} --bind 127.0.0.1"
    # Exits 7 if the first server answers when it starts (run_servers waited), 5 if it does not.
    checking = (
        f"import sys, urllib.request\ntry: urllib.request.urlopen('http://127.0.0.1:{port}/', timeout=2)\n"
        "except OSError: sys.exit(5)\nsys.exit(7)"
    )
    servers = [
        Server("slow", ["sh", "-c", slow], f"http://127.0.0.1:{port}", health_path="/"),
        Server("checking", [sys.executable, "-c", checking], "http://b"),
    ]
    assert run_servers(servers, ready_timeout_s=30) == 7
    assert "checking exited with code 7" in capsys.readouterr().err


def test_a_server_that_never_gets_ready_stops_the_start(capsys: pytest.CaptureFixture) -> None:
    servers = [
        Server(
            "broken", [sys.executable, "-c", "import sys; sys.exit(4)"], "http://127.0.0.1:9", health_path="/"
        ),
        Server("never", [sys.executable, "-c", "raise SystemExit('started')"], "http://b"),
    ]
    assert run_servers(servers, ready_timeout_s=30) == 4
    err = capsys.readouterr().err
    assert "broken exited with 4" in err and "started" not in err


@pytest.mark.slow
def test_up_starts_the_platform_refuses_a_second_up_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("mlflow", "prefect", "service", "dashboard")}
    # Run in an empty folder: the project's settings, but its own stores, lock and Prefect home.
    args = ["--params", str(Path(__file__).resolve().parents[2] / "params.yaml")]
    flags = [f"--{name}-port={port}" for name, port in ports.items()]
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    up = subprocess.Popen(
        [sys.executable, "-m", "dfguard.cli", *args, "up", *flags],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    printed = []
    try:
        deadline = time.monotonic() + 300
        while "Ctrl-C stops them." not in printed and time.monotonic() < deadline:
            line = up.stdout.readline()
            assert line or up.poll() is None, f"dfguard up exited: {''.join(printed)[-3000:]}"
            printed.append(line.strip())
        names = ("MLflow", "Prefect", "Prefect deployments", "dfguard service", "dfguard dashboard")
        urls = {name for line in printed for name in names if line.startswith(f"{name}: http://127.0.0.1:")}
        assert urls == set(names)
        assert httpx.get(f"http://127.0.0.1:{ports['mlflow']}/health").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{ports['service']}/livez").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{ports['dashboard']}/_stcore/health").status_code == 200
        api = f"http://127.0.0.1:{ports['prefect']}/api"
        deployed: set[str] = set()
        while "on-demand" not in deployed and time.monotonic() < deadline:  # the deployments register
            deployments = httpx.post(f"{api}/deployments/filter", json={}).json()
            deployed = {d["name"] for d in deployments if d.get("flow_id")}
            time.sleep(1)
        assert {"nightly", "after-labels", "on-demand"} <= deployed
        second = subprocess.run(
            [sys.executable, "-m", "dfguard.cli", *args, "up", *flags],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert second.returncode == 2 and f"already running (process {up.pid}" in second.stderr
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=60) == 0
        for port in ports.values():
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    finally:
        if up.poll() is None:
            up.kill()
