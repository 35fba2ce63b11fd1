"""checkpoint/resume.py: what a resume may change, and a refused resume changes nothing."""

import json
import shutil

import torch

from config.reading import load_config
from conftest import assert_one_line_error, run_cli, snapshot


def test_failed_resume_changes_nothing_in_the_run_folder(finished_run):
    run_dir, _ = finished_run
    before = snapshot(run_dir)
    proc = run_cli("train.py", "--resume", run_dir / "last.pth", "--epochs", 5)  # another OneCycle length
    # the finished run's 2 epochs x 5 batches against 5 x 5; how to train on from its weights, in the same line
    assert_one_line_error(
        proc,
        "trainer.epochs: the checkpoint's OneCycleLR schedule has 10 steps, this run's would have 25",
        f"start a new run:  python train.py -c <config> --set trainer.init={run_dir / 'last.pth'}",
    )
    assert snapshot(run_dir) == before  # config.json not rewritten, no new events file


def test_resume_refuses_another_learning_rate(finished_run, tmp_path):
    run_dir, _ = finished_run
    before = snapshot(run_dir)
    proc = run_cli("train.py", "--resume", run_dir / "last.pth", "--lr", 0.5)
    assert_one_line_error(proc, "optimizer.args.lr (--lr): 0.5 differs from the checkpoint's 0.15")
    assert snapshot(run_dir) == before


def test_resume_with_another_config_names_the_keys_that_differ(finished_run, tmp_path):
    run_dir, config = finished_run
    before = snapshot(run_dir)
    other = load_config(config)
    other["optimizer"]["args"]["weight_decay"] = 0.05
    other["loss"]["args"]["label_smoothing"] = 0.3
    other["trainer"]["epochs"] = 3  # may change: train for longer
    (tmp_path / "other.json").write_text(json.dumps(other))
    proc = run_cli("train.py", "-c", tmp_path / "other.json", "--resume", run_dir / "last.pth")
    assert_one_line_error(
        proc,
        "the config differs",
        "loss.args.label_smoothing: 0.1 -> 0.3",
        "optimizer.args.weight_decay: 0.0005 -> 0.05",
    )
    assert "trainer.epochs" not in proc.stderr
    assert snapshot(run_dir) == before


def test_a_finished_checkpoint_resumed_elsewhere_makes_no_run_folder(finished_run, tmp_path):
    run_dir, _ = finished_run
    shutil.copy(run_dir / "last.pth", tmp_path / "finished.pth")
    runs_before = sorted(run_dir.parent.iterdir())
    proc = run_cli("train.py", "--resume", tmp_path / "finished.pth")
    assert proc.returncode == 0, proc.stderr
    assert "Nothing to train" in proc.stdout + proc.stderr and "finished all 2 epochs" in proc.stdout + proc.stderr
    assert sorted(run_dir.parent.iterdir()) == runs_before  # no empty run folder beside the real one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["finished.pth"]


def test_an_edited_run_config_is_used_or_refused_never_overwritten(finished_run, tmp_path):
    """Resuming without -c after editing the run folder's config.json: an edit a resume may make (more
    epochs, verbosity) is used, and is then what the run records; any other edit is one line, and the
    file is left as it was written."""
    run_dir, _ = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / ".lock").unlink(missing_ok=True)
    config = json.loads((copy / "config.json").read_text())
    config["optimizer"]["args"]["weight_decay"] = 0.05
    (copy / "config.json").write_text(json.dumps(config))
    before = snapshot(copy)
    proc = run_cli("train.py", "--resume", copy / "last.pth")
    assert_one_line_error(
        proc, "config.json: edited since last.pth was saved", "optimizer.args.weight_decay: 0.0005 -> 0.05"
    )
    assert snapshot(copy) == before

    config["optimizer"]["args"]["weight_decay"] = 0.0005
    config["trainer"]["verbosity"] = 1  # may change on resume
    (copy / "config.json").write_text(json.dumps(config))
    assert torch.load(copy / "last.pth", weights_only=False)["config"]["trainer"]["verbosity"] == 2
    proc = run_cli("train.py", "--resume", copy / "checkpoint-epoch1.pth")  # epoch 2 trains again
    assert proc.returncode == 0, proc.stderr
    assert json.loads((copy / "config.json").read_text())["trainer"]["verbosity"] == 1  # what ran is recorded
    assert torch.load(copy / "last.pth", weights_only=False)["config"]["trainer"]["verbosity"] == 1
