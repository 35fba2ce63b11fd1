"""checkpoint/run_folder.py: one run folder per run, locked while it trains, left clean after a killed save."""

import os
import shutil
import subprocess
import sys

import pytest
import torch

from checkpoint.saver import RunFiles
from config.parser import ConfigParser
from config.reading import load_config
from conftest import REPO, assert_one_line_error, run_cli, tiny_config
from utils.errors import ConfigError


def test_resume_is_locked_and_cleans_temp_files_of_a_killed_save(finished_run, tmp_path):
    run_dir, _ = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / ".lock").write_text(str(os.getpid()))  # a live process holds the run
    # epoch 1's checkpoint: a resume with an epoch left to train (a finished one trains nothing, locks nothing)
    proc = run_cli("train.py", "--resume", copy / "checkpoint-epoch1.pth", "--epochs", 2)
    assert_one_line_error(proc, f"another process (pid {os.getpid()}) is training in this run folder")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (copy / ".lock").write_text(dead.stdout.strip())  # left by a process that is gone
    (copy / "last.pth.k3j2.tmp").write_bytes(b"half a checkpoint")  # written by an older version
    (copy / ".last.x8f2.tmp.pth").write_bytes(b"half a checkpoint")  # utils.paths.atomic_write's
    proc = run_cli("train.py", "--resume", copy / "checkpoint-epoch1.pth", "--epochs", 2)
    assert proc.returncode == 0, proc.stderr
    assert not list(copy.glob("*.tmp")) and not list(copy.glob(".*.tmp.*")) and not (copy / ".lock").exists()


def test_two_runs_in_the_same_second_get_folders_of_their_own(tmp_path):
    config = load_config(REPO / "config.json")
    config["trainer"]["save_dir"] = str(tmp_path)
    first, second = (RunFiles.of(ConfigParser(config), run_id="1126_101010") for _ in range(2))
    first.open(config, torch.device("cpu"))
    second.open(config, torch.device("cpu"))
    assert first.run_dir.name == "1126_101010" and second.run_dir.name == "1126_101010_2"
    assert (first.run_dir / ".lock").is_file() and (second.run_dir / ".lock").is_file()
    first.close()
    second.close()
    assert not (first.run_dir / ".lock").exists() and not (second.run_dir / ".lock").exists()


def test_unwritable_save_dir_is_one_line(tmp_path, tiny_folder):
    (tmp_path / "a_file").write_text("not a folder")
    proc = run_cli("train.py", "-c", tiny_config(tmp_path, tiny_folder), "--save_dir", tmp_path / "a_file" / "saved")
    assert_one_line_error(proc, "trainer.save_dir: cannot write the run folder")


def test_a_run_folder_that_cannot_be_written_at_the_start_is_left_nowhere(tmp_path, monkeypatch):
    """A full disk when the config copy is written: one line, and no empty run folder with a stale lock."""
    import checkpoint.run_folder as run_folder

    def full(path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run_folder, "atomic_write", full)
    with pytest.raises(ConfigError, match=r"cannot write the run folder .* \(No space left on device\)"):
        run_folder.make_run_dir(tmp_path / "saved" / "name" / "0101_000000", None, {"name": "x"})
    assert list((tmp_path / "saved" / "name").iterdir()) == []


def test_a_resume_removes_only_the_temp_files_of_checkpoint_saves(tmp_path):
    """A save killed half-way leaves `.last.<random>.tmp.pth`, which a resume removes; a report.py
    writing into the same folder meanwhile keeps its own temp files."""
    import checkpoint.run_folder as run_folder

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "last.pth").write_bytes(b"x")
    (run_dir / ".last.abc123.tmp.pth").write_bytes(b"half")
    (run_dir / ".report.def456.tmp.md").write_text("being written")
    _, lock = run_folder.make_run_dir(run_dir, run_dir / "last.pth", {"name": "x"})
    run_folder.release(lock)
    assert not (run_dir / ".last.abc123.tmp.pth").exists() and (run_dir / ".report.def456.tmp.md").exists()
