"""`dfguard models ...` on a real sqlite registry, and `dfguard server start` (its supervisor; the real
servers in a slow test)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient
from registry_helpers import evaluation, register_tiny, store_from

from dfguard.cli import main
from dfguard.config import RegistryConfig
from dfguard.registry import CHALLENGER, CHAMPION, PREVIOUS, current_aliases
from dfguard.servers import Server, project_servers, run_servers


@pytest.fixture
def registry(
    template_db: Path, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[MlflowClient, list[str]]:
    """Versions 1 (champion), 2 (better) and 3 (worse, the challenger); and the CLI's leading args."""
    client, cfg = store_from(template_db, tmp_path / "mlflow", monkeypatch)
    first = register_tiny(client, model_dir, evaluation(0.90))
    client.set_registered_model_alias("dfguard-detector", CHAMPION, first)
    register_tiny(client, model_dir, evaluation(0.93))
    register_tiny(client, model_dir, evaluation(0.70))
    return client, ["--params", str(tmp_path / "none.yaml"), "--set", f"registry.root={cfg.root}"]


def test_models_list_and_show(registry, capsys: pytest.CaptureFixture) -> None:
    _, args = registry
    assert main([*args, "models", "list"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [row.split()[0] for row in rows] == ["3", "2", "1"]
    assert rows[0].split()[1] == "challenger" and rows[2].split()[1] == "champion"
    assert rows[1].split()[4] == "0.9300"

    assert main([*args, "models", "show", "champion"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("dfguard-detector version 1\n  aliases: champion\n")
    assert "lineage.contract_hash: " in shown and "video.auc: 0.9\n" in shown
    assert "lineage.contract:" not in shown  # one long JSON line, left to the run's contract.json

    assert main([*args, "models", "show", "7"]) == 2
    assert "no version '7'" in capsys.readouterr().err


def test_a_reader_that_stops_early_ends_the_listing_quietly(registry) -> None:
    """`dfguard models list | head -1`: no traceback, and the exit status of a process stopped by SIGPIPE."""
    _, args = registry
    process = subprocess.Popen(
        [sys.executable, "-m", "dfguard.cli", *args, "models", "list"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    process.stdout.close()  # the reader is gone before the listing is written
    _, errors = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGPIPE, errors
    assert "Traceback" not in errors and "Exception ignored" not in errors


def test_models_promote_and_rollback(registry, capsys: pytest.CaptureFixture) -> None:
    client, args = registry
    assert main([*args, "models", "promote", "3"]) == 1
    out = capsys.readouterr().out
    assert "gate for version 3: failed" in out and "not promoted" in out
    assert main([*args, "models", "promote", "2"]) == 0
    assert "gate for version 2: passed" in capsys.readouterr().out
    assert current_aliases(client) == {CHAMPION: "2", PREVIOUS: "1", CHALLENGER: "3"}
    assert main([*args, "models", "rollback"]) == 0
    assert current_aliases(client) == {CHAMPION: "1", PREVIOUS: "2", CHALLENGER: "3"}


def test_project_servers_share_the_embedded_store(tmp_path: Path) -> None:
    mlflow, prefect = project_servers(RegistryConfig(root=str(tmp_path)), "127.0.0.1", 5001, 4201)
    assert mlflow.url == "http://127.0.0.1:5001" and prefect.url == "http://127.0.0.1:4201"
    assert f"sqlite:///{tmp_path.resolve()}/mlflow.db" in mlflow.command
    assert prefect.command[1:3] == ["server", "start"]
    with pytest.raises(ValueError, match="already runs"):
        project_servers(RegistryConfig(tracking_uri="http://mlflow:5000"), "127.0.0.1", 5000, 4200)


def test_a_server_that_exits_stops_the_other(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pid_file = tmp_path / "pid"
    waiting = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    crashing = (
        f"import os, sys, time\nwhile not os.path.exists({str(pid_file)!r}): time.sleep(0.05)\nsys.exit(3)"
    )
    servers = [
        Server("waiting", [sys.executable, "-c", waiting], "http://a"),
        Server("crashing", [sys.executable, "-c", crashing], "http://b"),
    ]
    assert run_servers(servers) == 3
    captured = capsys.readouterr()
    assert "waiting: http://a\ncrashing: http://b\n" in captured.out
    assert "crashing exited with code 3" in captured.err
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "dfguard server start exited early"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} not healthy after {timeout_s} s")


@pytest.mark.slow
def test_server_start_serves_the_embedded_registry_and_stops_on_ctrl_c(registry, tmp_path: Path) -> None:
    _, args = registry
    mlflow_port, prefect_port = _free_port(), _free_port()
    command = [sys.executable, "-m", "dfguard.cli", *args, "server", "start"]
    command += ["--mlflow-port", str(mlflow_port), "--prefect-port", str(prefect_port)]
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    try:
        _wait_healthy(f"http://127.0.0.1:{mlflow_port}/health", process)
        _wait_healthy(f"http://127.0.0.1:{prefect_port}/api/health", process)
        # What the embedded store registered is what the server shows.
        served = MlflowClient(tracking_uri=f"http://127.0.0.1:{mlflow_port}")
        assert str(served.get_model_version_by_alias("dfguard-detector", CHAMPION).version) == "1"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:  # a failed check: SIGTERM still stops both servers
            process.terminate()
            process.wait(timeout=60)
    out = process.stdout.read()
    assert f"MLflow: http://127.0.0.1:{mlflow_port}\nPrefect: http://127.0.0.1:{prefect_port}\n" in out
    for port in (mlflow_port, prefect_port):
        with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
            sock.connect(("127.0.0.1", port))
