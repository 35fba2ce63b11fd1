"""End to end through the scripts, as a user runs them: train.py, resume, test.py, report.py and
the one-line errors for bad input."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from checkpoint.schema import load_checkpoint
from config.reading import load_config
from conftest import assert_one_line_error, png_ok, run_cli, tiny_config, without_timing

LOG_LINE = {
    "epoch": r"\d+",
    "loss": r"\d+\.\d{4}",
    "accuracy": r"\d+\.\d{2}",
    "val_loss": r"\d+\.\d{4}",
    "val_accuracy": r"\d+\.\d{2}",
    "lr": r"[\d.e-]+",
    "image_size": r"\d+",  # config.json resizes progressively
    "epoch_time": r"\d+\.\d",  # seconds, training and validation
}


def epoch_logs(stdout):
    """[{key: text}] for every epoch block printed in the epoch-log `    key            : value` form."""
    logs = []
    for line in stdout.splitlines():
        m = re.fullmatch(r"    (\w+) {1,15}: (\S+)", line)
        if m and len(line.split(":")[0]) == 4 + 15:
            if m.group(1) == "epoch":
                logs.append({})
            if logs:
                logs[-1][m.group(1)] = m.group(2)
    return logs


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_folder):
    tmp = tmp_path_factory.mktemp("train")
    # two persistent DataLoader workers, as on a GPU machine: resume must be exact with them too
    proc = run_cli(
        "train.py", "-c", tiny_config(tmp, tiny_folder, report=True), "--num_workers", "2", real_process=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = next((tmp / "saved").glob("*/*"))
    return proc, run_dir, tmp


def test_train_prints_the_users_log_format(trained):
    proc, _, _ = trained
    logs = epoch_logs(proc.stdout)
    assert [log["epoch"] for log in logs] == ["1", "2"]
    for log in logs:
        assert list(log) == list(LOG_LINE)
        for key, pattern in LOG_LINE.items():
            assert re.fullmatch(pattern, log[key]), (key, log[key])
        # exact fractions: 40 training images (5 batches of 8), 20 test images
        assert float(log["accuracy"]) * 40 / 100 == pytest.approx(round(float(log["accuracy"]) * 40 / 100), abs=1e-6)
        assert float(log["val_accuracy"]) * 20 / 100 == pytest.approx(
            round(float(log["val_accuracy"]) * 20 / 100), abs=1e-6
        )
    assert "[PASS] min_receptive_field" in proc.stdout and "[FAIL]" not in proc.stdout
    assert "Receptive field at the last convolution before pooling: 65" in proc.stdout


def test_train_writes_checkpoints_logs_and_report(trained):
    _, run_dir, _ = trained
    names = {p.name for p in run_dir.iterdir()}
    assert {
        "config.json",
        "info.log",
        "last.pth",
        "model_best.pth",
        "checkpoint-epoch1.pth",
        "checkpoint-epoch2.pth",
    } <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    ckpt = load_checkpoint(run_dir / "last.pth")  # weights_only=True
    assert ckpt["epoch"] == 2 and len(ckpt["history"]) == 2
    assert {"optimizer", "lr_scheduler", "rng", "data_stats", "classes", "monitor_best"} <= set(ckpt)
    assert isinstance(ckpt["config"], dict) and ckpt["config"]["trainer"]["epochs"] == 2
    assert "val_accuracy" in (run_dir / "info.log").read_text()
    pictures = ("curves", "confusion_matrix", "misclassified", "augmentations", "gradcam_mistakes")
    for name in pictures:
        png_ok(run_dir / f"{name}.png")
    report = (run_dir / "report.md").read_text()
    assert all(f"({n}.png)" in report for n in pictures)
    rows = re.findall(r"^\| (\w+) \| (\d+) \| (\d+) \| ([\d.]+) \|$", report, re.M)
    assert len(rows) == 10 and sum(int(r[1]) for r in rows) == 20  # the confusion matrix counts every image
    assert "[PASS] max_params" in report
    assert re.search(r"^Training time: \d+\.\d (s|min) over 2 epochs", report, re.M)
    assert re.search(r"^\| flip \| [\d.]+ \| [\d.]+ \|$", report, re.M)  # TTA figures, a table of their own
    assert re.search(r"^\| multicrop \| [\d.]+ \| [\d.]+ \|$", report, re.M)


def test_the_run_folder_says_how_it_was_made_and_holds_the_epochs_as_csv(trained):
    import csv

    proc, run_dir, _ = trained
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    logged = epoch_logs(proc.stdout)
    assert [r["epoch"] for r in rows] == ["1", "2"] and list(rows[0]) == list(LOG_LINE)
    assert [float(r["val_accuracy"]) for r in rows] == [float(log["val_accuracy"]) for log in logged]
    (made,) = json.loads((run_dir / "provenance.json").read_text())  # one start, one entry
    assert "train.py -c" in made["command"] and made["torch"] == torch.__version__
    assert made["device"] == "cpu" and made["cpu"] and made["python"].count(".") == 2
    assert made["git_dirty"] in (True, False, None) and (made["git_commit"] is None or len(made["git_commit"]) == 40)
    assert re.search(r"^Training time: \d+\.\d (s|min) over 2 epochs \(\d+\.\d s per epoch", proc.stdout, re.M)


def test_tensorboard_has_the_epoch_scalars_and_report_images(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir, _ = trained
    tags = {"scalars": set(), "images": set()}
    for events in run_dir.glob("events.out.tfevents*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for kind in tags:
            tags[kind] |= set(acc.Tags()[kind])
    assert {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "lr"} <= tags["scalars"]
    assert "report/confusion_matrix" in tags["images"]
    assert {"hparam/val_accuracy", "hparam/loss"} <= tags["scalars"]  # the HPARAMS tab: config -> final figures


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(trained, tmp_path):
    _, run_dir, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    straight = load_checkpoint(copy / "last.pth")
    proc = run_cli("train.py", "--resume", copy / "checkpoint-epoch1.pth")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [log["epoch"] for log in epoch_logs(proc.stdout)] == ["2"]
    assert "resuming epoch 1 of this run: its last.pth (epoch 2) and the checkpoints after epoch 1" in proc.stdout
    resumed = load_checkpoint(copy / "last.pth")
    assert resumed["epoch"] == 2 and len(resumed["history"]) == 2
    for key, tensor in straight["state_dict"].items():
        assert torch.equal(tensor, resumed["state_dict"][key]), key
    assert without_timing(resumed["history"][-1]) == without_timing(straight["history"][-1])
    assert resumed["lr_scheduler"]["last_epoch"] == straight["lr_scheduler"]["last_epoch"]


def test_test_py_reproduces_the_final_validation_accuracy(trained, tiny_folder, tmp_path):
    proc, run_dir, _ = trained
    final = epoch_logs(proc.stdout)[-1]  # validation_split 0: the test split validated
    (tmp_path / "test_metrics.json").write_text("{}")  # an earlier test.py's results: replaced, with a note
    out = run_cli("test.py", "--resume", run_dir / "last.pth", "--data_dir", tiny_folder, "--out", tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "holds the results of an earlier test.py; they are replaced" in out.stdout
    printed = dict(re.findall(r"^    (\w+) +: (\S+)$", out.stdout, re.M))
    assert printed["accuracy"] == final["val_accuracy"] and printed["loss"] == final["val_loss"]
    assert printed["images"] == "20" and "acc_airplane" in printed and "acc_truck" in printed
    png_ok(tmp_path / "test_confusion_matrix.png")
    png_ok(tmp_path / "test_misclassified.png")
    metrics = json.loads((tmp_path / "test_metrics.json").read_text())
    assert np.array(metrics["confusion_matrix"]).sum() == 20


def test_verbosity_1_prints_one_line_about_the_network_instead_of_its_tables(tmp_path, tiny_folder):
    config = tiny_config(tmp_path, tiny_folder)
    recipe = json.loads(config.read_text())
    recipe["trainer"]["epochs"] = 120  # a recipe made for 120 epochs, run for 2 with --epochs
    config.write_text(json.dumps(recipe))
    proc = run_cli("train.py", "-c", config, "--epochs", "2", "--set", "trainer.verbosity=1")
    assert "note: 2 epochs of a recipe made for 120" in proc.stdout
    assert proc.returncode == 0, proc.stderr
    line = "Network: DilatedNet, 99,146 parameters, receptive field 65 at 32x32; constraints: every rule passes"
    assert line in proc.stdout and "Receptive field (analytic" not in proc.stdout and "[PASS]" not in proc.stdout
    assert "    val_accuracy   : " in proc.stdout  # the epoch log stays


def test_report_py_rebuilds_the_report_from_a_checkpoint(trained, tmp_path):
    _, run_dir, _ = trained
    proc = run_cli("report.py", "--resume", run_dir / "last.pth", "--out", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("curves", "confusion_matrix", "misclassified", "augmentations"):
        png_ok(tmp_path / f"{name}.png")
    assert (tmp_path / "report.md").read_text().count("| 2 |") >= 10  # 2 test images per class
    # the figure is on screen too, in the epoch-log format, not only inside report.md
    assert re.search(r"^20 test images:\n    loss +: [\d.]+\n    accuracy +: [\d.]+$", proc.stdout, re.M), proc.stdout


def test_missing_data_folder(trained, tmp_path):
    _, _, tmp = trained
    proc = run_cli("train.py", "-c", tmp / "config.json", "--data_dir", tmp_path / "nothing")
    assert_one_line_error(proc, "nothing", "no CIFAR-10 here", "--data_dir")
    assert not (tmp_path / "nothing").exists()


def test_corrupt_checkpoint(trained, tmp_path, tiny_folder):
    bad = tmp_path / "last.pth"
    bad.write_bytes(b"\x00" * 64)
    assert_one_line_error(
        run_cli("test.py", "--resume", bad, "--data_dir", tiny_folder, cwd=tmp_path), "last.pth", "not a checkpoint"
    )
    assert not (tmp_path / "saved").exists()  # a failed command makes no output folder
    assert_one_line_error(run_cli("train.py", "--resume", bad), "last.pth", "not a checkpoint")


def test_checkpoint_of_another_architecture(trained, tmp_path, tiny_folder):
    _, run_dir, _ = trained
    config = json.loads((run_dir / "config.json").read_text())
    config["arch"]["args"]["widths"] = [16, 32, 48, 64]
    (tmp_path / "other.json").write_text(json.dumps(config))
    proc = run_cli(
        "test.py",
        "--resume",
        run_dir / "last.pth",
        "-c",
        tmp_path / "other.json",
        "--data_dir",
        tiny_folder,
        cwd=tmp_path,
    )
    assert_one_line_error(proc, "last.pth", "weights do not fit the model DilatedNet")


def test_unknown_config_key(trained, tmp_path):
    _, _, tmp = trained
    config = json.loads((tmp / "config.json").read_text())
    config["trainer"]["epocs"] = 3
    (tmp_path / "typo.json").write_text(json.dumps(config))
    assert_one_line_error(run_cli("train.py", "-c", tmp_path / "typo.json"), "trainer.epocs: unknown config key")


def test_spec_violation_stops_training_unless_allowed(tiny_folder, tmp_path):
    path = tiny_config(tmp_path, tiny_folder)
    config = json.loads(path.read_text())
    config["arch"]["args"].update(widths=[64, 128, 192, 192])
    path.write_text(json.dumps(config))
    proc = run_cli("train.py", "-c", path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("error: the network breaks the spec (--allow_spec_violation") and len(lines) == 2
    assert lines[1].startswith("[FAIL] max_params")
    allowed = run_cli("train.py", "-c", path, "--allow_spec_violation")
    assert allowed.returncode == 0, allowed.stderr
    assert "breaks the spec; training anyway" in allowed.stdout


def test_benchmark_prints_its_figures_and_trains_as_train_py_does(tiny_folder, tmp_path):
    config = tiny_config(tmp_path, tiny_folder)
    proc = run_cli(
        "-m",
        "benchmarks.train_benchmark",
        "-c",
        config,
        "--epochs",
        "2",
        "--validation_split",
        "10",
        "--seeds",
        "3",
        "4",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    figures = re.findall(r"^    (\w+) +: (\S+)$", proc.stdout, re.M)
    keys = [k for k, _ in figures]
    for key in (
        "device",
        "parameters",
        "receptive_field",
        "receptive_field_empirical",
        "loader_img_per_s",
        "model_fwd_bwd_img_per_s",
        "train_s_per_epoch",
        "eval_s_per_epoch",
        "train_img_per_s",
        "time_to_87_s",
        "final_val_accuracy",
        "mean_final_val_accuracy",
        "std_final_val_accuracy",
    ):
        assert key in keys, key
    values = dict(figures)
    assert values["parameters"] == "99146" and values["receptive_field"] == values["receptive_field_empirical"] == "65"
    assert float(values["loader_img_per_s"]) > 0 and float(values["model_fwd_bwd_img_per_s"]) > 0
    assert not list(tmp_path.glob("saved/*"))  # nothing kept
    # the same code path: train.py with the last seed ends on the very same validation figures
    trained = run_cli("train.py", "-c", config, "--epochs", "2", "--validation_split", "10", "--seed", "4")
    assert trained.returncode == 0, trained.stderr
    last = dict(re.findall(r"^    (val_loss|val_accuracy) +: (\S+)$", trained.stdout, re.M))
    finals = [v for k, v in figures if k in ("final_val_loss", "final_val_accuracy")]
    assert finals[-2:] == [last["val_accuracy"], last["val_loss"]], (finals, last)


def test_more_classes_than_outputs(trained, tmp_path):
    _, _, tmp = trained
    config = json.loads((tmp / "config.json").read_text())
    config["arch"]["args"]["num_classes"] = 5
    (tmp_path / "five.json").write_text(json.dumps(config))
    assert_one_line_error(run_cli("train.py", "-c", tmp_path / "five.json"), "arch.args.num_classes", "10 classes")


@pytest.mark.parametrize("name", ["train_benchmark", "step_benchmark", "infer_benchmark"])
def test_a_benchmark_run_as_a_file_says_how_to_run_it(name):
    proc = run_cli(f"benchmarks/{name}.py")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == f"run it from the repository root as a module: python -m benchmarks.{name} ..."


def test_the_readme_smoke_command_learns_on_generated_data(tmp_path):
    """The README's two-minute command, at 1/40 of its data (and of its batch, so that it takes as
    many steps), on generated images a network can learn: far above chance after its 6 epochs."""
    from conftest import CLASSES, REPO, make_images

    readme = (REPO / "README.md").read_text()
    command = next(ln for ln in readme.splitlines() if ln.startswith("python train.py") and "--train_subset" in ln)
    argv = command.split()[2:]
    flags = dict(zip(argv[::2], argv[1::2]))
    settings = [value for flag, value in zip(argv[::2], argv[1::2]) if flag == "--set"]
    assert flags["--epochs"] == "6", command
    assert settings == ["trainer.progressive_resize=null", "trainer.distill=null"], command
    images, labels = make_images(30, seed=3)
    for i, (img, label) in enumerate(zip(images, labels)):
        path = tmp_path / "data" / "train" / CLASSES[label] / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path)
    scaled = {
        "--train_subset": int(flags["--train_subset"]) // 40,
        "--validation_split": int(flags["--validation_split"]) // 40,
    }
    for flag, value in scaled.items():
        argv[argv.index(flag) + 1] = str(value)
    proc = run_cli(
        "train.py",
        *argv,
        "--data_dir",
        tmp_path / "data",
        "--bs",
        "6",
        "--num_workers",
        "0",
        "--set",
        f"trainer.save_dir={tmp_path / 'saved'}",
        "--set",
        "trainer.report=false",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    logs = epoch_logs(proc.stdout)
    recipe = load_config(REPO / argv[argv.index("-c") + 1])["trainer"]["epochs"]
    assert len(logs) == 6 and f"note: 6 epochs of a recipe made for {recipe}" in proc.stdout
    assert float(logs[-1]["val_accuracy"]) >= 90.0, logs[-1]  # 10 classes: chance is 10%; it reaches 100


def test_durations_read_as_a_person_would_say_them():
    from logger.keys import describe_duration

    assert describe_duration(12.34, 1) == "12.3 s over 1 epoch"
    assert describe_duration(252.0, 30) == "4.2 min over 30 epochs"


def test_fast_dev_run_checks_the_whole_pipeline_and_leaves_nothing(tmp_path, tiny_folder):
    from conftest import tiny_config

    config = tiny_config(tmp_path, tiny_folder, epochs=50, report=True)
    proc = run_cli("train.py", "-c", config, "--fast_dev_run", "--bs", "4")  # a schedule of 10 steps
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fast_dev_run: every step of a run ran on 1 epoch of 2 training and 2 validation batches" in proc.stdout
    assert len(epoch_logs(proc.stdout)) == 1 and "Report (" in proc.stdout + proc.stderr
    assert not (tmp_path / "saved").exists()  # nothing written where the config says
    # small data at the config's own batch: two steps were too few for OneCycle's warm-up; the quick
    # check runs at a constant lr instead, and says so
    proc = run_cli("train.py", "-c", config, "--fast_dev_run", "--bs", "32")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(at a constant lr)" in proc.stdout


def test_report_py_on_other_data_is_one_line_not_a_figure_labelled_as_the_runs(trained, tmp_path):
    """The same data at another path is the run's; another data set is refused (its figure would be
    labelled as the run's validation), and a test split that copies the training one is warned of."""
    from conftest import write_folder

    _, run_dir, _ = trained
    other = tmp_path / "other"
    shutil.copytree(write_folder(tmp_path / "gen"), other)
    for image in (other / "train").glob("*/*.png"):  # other pictures: a brighter copy
        arr = np.asarray(Image.open(image)).astype(int)
        Image.fromarray(np.clip(arr + 40, 0, 255).astype(np.uint8)).save(image)
    proc = run_cli("report.py", "--resume", run_dir / "last.pth", "--data_dir", other, "--out", tmp_path / "r")
    assert_one_line_error(proc, f"--data_dir {other}: not the data the run trained on")
    assert not (tmp_path / "r").exists()
    copied = tmp_path / "copied"
    shutil.copytree(other / "train", copied / "train")
    shutil.copytree(other / "train", copied / "test")  # the test split is the training split
    proc = run_cli("test.py", "--resume", run_dir / "last.pth", "--data_dir", copied, "--out", tmp_path / "t")
    assert "test images are also training images" in proc.stdout + proc.stderr


def test_fast_dev_run_decodes_a_sample_of_each_split_and_keeps_a_validation_count_within_it(
    tmp_path, tiny_tar_xz, monkeypatch
):
    import config.overrides
    from conftest import tiny_config

    monkeypatch.setattr(config.overrides, "FAST_READ", 20)  # of the 40 training images
    config = tiny_config(tmp_path, tiny_tar_xz, report=False)
    proc = run_cli("train.py", "-c", config, "--fast_dev_run", "--validation_split", "200")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Data: 15 training images, 5 validation images" in proc.stdout + proc.stderr  # 20 read, a quarter held out


def test_read_limit_decodes_a_seeded_subset_of_each_split_in_file_order(tiny_folder, tiny_tar_xz):
    from data_loader.datasets import load_splits

    whole = load_splits(tiny_folder)
    for source in (tiny_folder, tiny_tar_xz):
        part = load_splits(source, read_limit=7)
        for split in ("train", "test"):
            names = list(part[split].names)
            assert len(names) == 7 and names == sorted(names) and set(names) <= set(whole[split].names)
            index = {n: i for i, n in enumerate(whole[split].names)}
            for name, image, label in zip(names, part[split].images, part[split].labels):
                assert (image == whole[split].images[index[name]]).all() and label == whole[split].labels[index[name]]
    folder, archive = (load_splits(source, read_limit=7)["train"].names for source in (tiny_folder, tiny_tar_xz))
    assert list(folder) == list(archive)  # the same subset from either layout


SCRIPTS = ("train.py", "test.py", "report.py", "predict.py", "export.py", "tune.py", "lr_find.py")


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_imports_startup_before_anything_else(script):
    """A Ctrl-C while torch loads reaches the top level before run_main exists: startup's hook says it in one line."""
    import ast

    from conftest import REPO

    tree = ast.parse((REPO / script).read_text())
    first = next(node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom)))
    assert isinstance(first, ast.Import) and [a.name for a in first.names] == ["startup"]


def test_an_interrupt_while_the_modules_load_is_one_line(tmp_path):
    import signal
    import time

    from conftest import REPO

    slow = tmp_path / "slow.py"  # stands for a script whose imports are still loading
    slow.write_text("import startup  # noqa: F401\nimport time\ntime.sleep(30)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(slow)], stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert err.strip() == "interrupted while starting: nothing was done" and proc.returncode == -signal.SIGINT
