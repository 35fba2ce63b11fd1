"""tune.py against a real PostgreSQL server, started and stopped by the test in a temporary folder
(initdb + pg_ctl of the installed PostgreSQL; `.ci/run` installs Debian's postgresql when missing):
two workers started at the same instant on a fresh database share one study, and a worker that
loses the server ends with one line naming the storage."""

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from test_tune import SPACE, heartbeats, tune_args

from conftest import REPO, run_cli

PG_BIN = next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)), None)
INITDB = shutil.which("initdb") or (PG_BIN and shutil.which("initdb", path=PG_BIN))
pytestmark = pytest.mark.skipif(not INITDB, reason="PostgreSQL is not installed (bash .ci/run installs it)")


def as_server_user(*cmd):
    """PostgreSQL refuses to run as root: as root, run its commands as the `postgres` user."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run([*prefix, *map(str, cmd)], capture_output=True, text=True, timeout=120)


class Server:
    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="pg-"))
        os.chmod(self.root, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.pg_ctl = str(Path(INITDB).with_name("pg_ctl"))
        done = as_server_user(INITDB, "-D", self.root / "data", "-U", "postgres", "--auth=trust")
        assert done.returncode == 0, done.stderr
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self):
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        done = as_server_user(
            self.pg_ctl, "-D", self.root / "data", "-o", options, "-l", self.root / "log", "-w", "start"
        )
        assert done.returncode == 0, done.stderr + (self.root / "log").read_text()

    def stop(self):
        as_server_user(self.pg_ctl, "-D", self.root / "data", "-m", "immediate", "-w", "stop")


@pytest.fixture
def server():
    pg = Server()
    pg.start()
    yield pg
    pg.stop()
    shutil.rmtree(pg.root, ignore_errors=True)


def test_two_workers_started_together_share_one_study_on_a_fresh_database(server, tmp_path, tiny_folder):
    args = [
        sys.executable,
        *map(str, tune_args(tmp_path, tiny_folder, SPACE, "--storage", server.url, trials=3)),
    ]
    workers = [
        subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = [w.communicate(timeout=300) for w in workers]
    assert all(w.returncode == 0 for w in workers), [o[1][-2000:] for o in outputs]
    trials = optuna.load_study(study_name="Cifar10_DilatedNet-search", storage=server.url).trials
    run = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(run) == 3 and len({t.user_attrs["run_dir"] for t in run}) == 3
    assert all(t.user_attrs.get("surplus") for t in trials if t not in run)
    assert (tmp_path / "saved" / "Cifar10_DilatedNet-search" / "best_config.json").is_file()


def test_a_worker_that_loses_the_server_mid_study_stops_with_one_line_and_a_new_one_continues(
    server, tmp_path, tiny_folder
):
    args = [*tune_args(tmp_path, tiny_folder, SPACE, "--storage", server.url, "--heartbeat", 1, trials=1, epochs=16)]
    worker = subprocess.Popen(
        [sys.executable, *map(str, args)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    # mid-trial: its first epoch is saved, and its heartbeat recorded (optuna fails only such trials as stale)
    while not (list((tmp_path / "saved").rglob("last.pth")) and heartbeats(server.url)):
        assert time.time() < deadline and worker.poll() is None, "the worker never got mid-trial"
        time.sleep(0.5)
    server.stop()
    _, stderr = worker.communicate(timeout=120)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert worker.returncode == 2 and len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    assert lines[0].startswith(f"error: --storage {server.url}: lost the study storage mid-study"), lines[0]
    server.start()
    time.sleep(2.5)  # two missed heartbeats: the lost trial is stale, so the next worker fails and retries it
    same = ("--storage", server.url, "--heartbeat", 1)  # the same recipe as the lost worker: 16 epochs
    again = run_cli(*tune_args(tmp_path, tiny_folder, SPACE, *same, trials=1, epochs=16))
    assert again.returncode == 0, again.stderr
    trials = optuna.load_study(study_name="Cifar10_DilatedNet-search", storage=server.url).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]  # the lost trial, then its retry
    assert trials[1].params == trials[0].params
