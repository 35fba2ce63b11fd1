"""DistributedDataParallel under torchrun: 2 CPU processes (gloo) on tiny generated data."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from base.base_data_loader import SeededBatchSampler
from checkpoint.schema import load_checkpoint
from conftest import REPO, assert_one_line_error, run_cli, tiny_config
from trainer.preflight import check_batch_size
from utils.errors import ConfigError

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def torchrun(*args, timeout=300, background=False):
    cmd = [*TORCHRUN, *map(str, args)]
    if background:
        return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def run_folders(save_dir):
    return sorted(p for p in (Path(save_dir) / "Cifar10_DilatedNet").iterdir() if p.is_dir())


def logged(stdout, key):
    return [float(v) for v in re.findall(rf"^ *{key} *: ([0-9.]+)$", stdout, re.M)]


@pytest.mark.parametrize("shuffle", [True, False])
def test_ranks_take_disjoint_slices_of_the_same_global_batches(shuffle):
    torch.manual_seed(0)
    whole = list(SeededBatchSampler(50, 8, shuffle))
    ranks = []
    for r in range(2):
        torch.manual_seed(0)  # ranks share rank 0's epoch seed (broadcast under DDP)
        ranks.append(list(SeededBatchSampler(50, 8, shuffle, rank=r, world=2)))
    assert len(ranks[0]) == len(ranks[1]) == 50 // 8  # an incomplete last global batch is dropped on every rank
    for number, (a, b) in enumerate(zip(*ranks)):
        assert [i for i, *_ in a + b] == [i for i, *_ in whole[number]]  # same images as one process
        assert {item[2] for item in a} == {2 * number} and {item[2] for item in b} == {2 * number + 1}  # own streams
    with pytest.raises(ValueError, match="the global batch 7 does not split evenly over 2"):
        SeededBatchSampler(50, 7, True, rank=0, world=2)
    with pytest.raises(
        ConfigError, match="data_loader.args.batch_size: the global batch 7 does not split evenly over 2"
    ):
        check_batch_size(7, 2)  # train.py's check, before any data is read
    check_batch_size(8, 2)


def _worker_of_rank(torchrun_pid, rank):
    """The pid of torchrun's worker process with LOCAL_RANK == rank (found through /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            env = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == torchrun_pid and f"LOCAL_RANK={rank}".encode() in env:
            return int(stat.parent.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds torchrun's workers through /proc")
def test_two_processes_survive_a_dead_rank_by_resume_save_once_and_match_test_py(tmp_path, tiny_folder):
    config = tiny_config(tmp_path, tiny_folder, epochs=8, report=True)  # validation_split 0: the tiny test split
    proc = torchrun("train.py", "-c", config, background=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list((tmp_path / "saved").rglob("checkpoint-epoch2.pth")):
            time.sleep(0.2)
        os.kill(_worker_of_rank(proc.pid, 1), signal.SIGKILL)  # rank 1 dies mid-run
        first, _ = proc.communicate(timeout=60)  # the others stop, they do not hang
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert "DistributedDataParallel over 2 processes (gloo); global batch 8, 4 per process" in first
    assert "rank 0: lost contact with the other processes" in first or "Root Cause" in first, first[-3000:]
    (run,) = run_folders(tmp_path / "saved")
    # rank 0 names the command that resumes the group, whichever way it was stopped (torchrun's SIGTERM or a lost peer)
    assert f"resume with  torchrun --standalone --nproc_per_node=2 train.py --resume {run / 'last.pth'}" in first
    done = load_checkpoint(run / "last.pth")["epoch"]
    assert 2 <= done < 8, "the run was not stopped mid-way"

    resumed = torchrun("train.py", "--resume", run / "last.pth")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    out = resumed.stdout
    assert f"training continues at epoch {done + 1}" in out
    assert re.findall(r"^ *epoch *: (\d+)$", out, re.M) == [str(e) for e in range(done + 1, 9)]  # rank 0 alone
    assert "Weights identical on all 2 processes" in out
    assert run_folders(tmp_path / "saved") == [run]  # one run folder, and nothing written elsewhere
    assert sorted(p.name for p in (tmp_path / "saved").rglob("*") if p.is_file() and p.parent != run) == []
    pids = {p.name.split(".")[-2] for p in run.glob("events.out.tfevents.*")}
    assert len(pids) == 2  # TensorBoard from one process of each start
    ckpt = load_checkpoint(run / "last.pth")
    assert ckpt["world_size"] == 2 and not any(
        k.startswith("module.") for k in ckpt["state_dict"]
    )  # loads in 1 process
    # the logged accuracy is exact over both ranks' shards: test.py on the same images agrees
    test = run_cli("test.py", "--resume", run / "last.pth", "--out", tmp_path / "test")
    assert test.returncode == 0, test.stderr
    assert logged(test.stdout, "accuracy") == logged(out, "val_accuracy")[-1:]
    assert logged(test.stdout, "loss") == logged(out, "val_loss")[-1:]
    # a 2-process checkpoint is not resumed by one process: one line says how
    assert_one_line_error(
        run_cli("train.py", "--resume", run / "last.pth"),
        "trained with 2 process(es), this run has 1",
        "torchrun --nproc_per_node=2",
    )


def test_single_process_scripts_say_so_under_torchrun(monkeypatch):
    for name, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():  # as torchrun starts them
        monkeypatch.setenv(name, value)
    for script, *rest in (("test.py",), ("report.py",), ("predict.py", "cat.png"), ("export.py", "--out", "x")):
        proc = run_cli(script, "--resume", "x.pth", *rest)  # lr_find.py, tune.py, the benchmark: the same call
        assert_one_line_error(proc, f"{script} runs in a single process")


def test_a_diverging_loss_stops_every_process_together(tmp_path, tiny_folder):
    """The ranks check the loss at the same batches and all-reduce what they found: all of them stop
    together (none waits for the others until dist_timeout), rank 0 prints the one line (the others
    wait until it has), and nothing is saved."""
    start = time.monotonic()
    proc = torchrun("train.py", "-c", tiny_config(tmp_path, tiny_folder, dist_timeout=120), "--lr", 1e30)
    assert proc.returncode != 0 and time.monotonic() - start < 100, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert "epoch 1, batches 1-5: the loss is nan (diverged" in errors[0], errors[0]
    assert not list((tmp_path / "saved").rglob("*.pth"))
