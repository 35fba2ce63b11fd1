"""Faults and bad input: each ends in one line naming what is wrong, and nothing that
existed is lost or changed."""

import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from base.base_trainer import BaseTrainer
from conftest import REPO, assert_one_line_error, bomb_png, run_cli, tiny_config, write_folder
from parse_config import ConfigParser, load_config
from trainer import train_one_epoch
from utils import resolve_device
from utils.errors import CheckpointError, ConfigError, NonFiniteLoss, TrainingError


@pytest.fixture
def run(finished_run):
    """The suite's finished 2-epoch tiny run: (its folder, the config path); read-only."""
    return finished_run


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_config_that_is_not_an_object(tmp_path):
    (tmp_path / "c.json").write_text("[1, 2]")
    assert_one_line_error(run_cli("train.py", "-c", tmp_path / "c.json"), "config: expected a JSON object")


@pytest.mark.parametrize("device", ["meta", "mps", "xla"])
def test_unsupported_devices(device):
    with pytest.raises(ConfigError, match="device: .* (not supported here|is not a device)"):
        resolve_device(device)


def test_batch_larger_than_the_data_writes_nothing(tmp_path, tiny_folder):
    proc = run_cli("train.py", "-c", tiny_config(tmp_path, tiny_folder), "--bs", 1000)
    assert_one_line_error(proc, "data_loader.args.batch_size: 1000 is more than the 40 training images")
    assert not (tmp_path / "saved").exists()  # no orphan run folder


def test_diverging_loss_stops_at_once_and_keeps_the_last_good_checkpoint(tmp_path, tiny_folder):
    config = tiny_config(tmp_path, tiny_folder, epochs=3)
    proc = run_cli("train.py", "-c", config, "--lr", 1e30)
    line = assert_one_line_error(proc, "epoch 1, batch ", ": the loss is", "diverged: lower optimizer.args.lr")
    assert "no checkpoint was written" in line
    (run_dir,) = (tmp_path / "saved").glob("*/*")
    assert not list(run_dir.glob("*.pth"))  # a non-finite epoch is never saved


def test_non_finite_loss_stops_before_that_batch_steps():
    """On the CPU every batch is checked: the step of the first bad batch is never taken."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [(torch.randn(3, 4), torch.tensor([0, 1, 0])) for _ in range(5)]
    calls = []

    def criterion(output, target):  # the 3rd batch's loss is NaN
        calls.append(1)
        loss = torch.nn.functional.cross_entropy(output, target)
        return loss * float("nan") if len(calls) == 3 else loss

    reference = torch.nn.Linear(4, 2)
    reference.load_state_dict(model.state_dict())
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    for images, target in batches[:2]:
        ref_opt.zero_grad()
        torch.nn.functional.cross_entropy(reference(images), target).backward()
        ref_opt.step()
    with pytest.raises(NonFiniteLoss) as err:
        train_one_epoch(model, criterion, [], optimizer, batches, torch.device("cpu"), desc="t")
    assert (err.value.first, err.value.last, err.value.where) == (3, 3, "batch 3") and math.isnan(err.value.value)
    assert torch.equal(model.weight, reference.weight) and torch.equal(model.bias, reference.bias)


def test_non_finite_loss_checked_every_few_batches_names_the_window(monkeypatch):
    """On a GPU or under DDP the check runs every few batches: the error names the batches it covers."""
    import trainer.loops

    monkeypatch.setattr(trainer.loops, "finite_check_every", lambda device: 2)
    model = torch.nn.Linear(4, 2)
    batches = [(torch.randn(3, 4), torch.tensor([0, 1, 0])) for _ in range(5)]
    calls = []

    def criterion(output, target):  # the 3rd batch's loss is infinite
        calls.append(1)
        return torch.nn.functional.cross_entropy(output, target) * (float("inf") if len(calls) == 3 else 1)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(NonFiniteLoss) as err:
        train_one_epoch(model, criterion, [], optimizer, batches, torch.device("cpu"))
    assert (err.value.first, err.value.last, err.value.where) == (3, 4, "batches 3-4")


def test_an_epoch_without_batches_is_an_error():
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TrainingError, match="the training loader gave no batch"):
        train_one_epoch(model, torch.nn.CrossEntropyLoss(), [], optimizer, [], torch.device("cpu"))


def test_failed_resume_changes_nothing_in_the_run_folder(run):
    run_dir, _ = run
    before = snapshot(run_dir)
    proc = run_cli("train.py", "--resume", run_dir / "last.pth", "--epochs", 5)  # another OneCycle length
    assert_one_line_error(proc, "trainer.epochs: the checkpoint's OneCycleLR schedule has")
    assert snapshot(run_dir) == before  # config.json not rewritten, no new events file


def test_resume_is_locked_and_cleans_temp_files_of_a_killed_save(run, tmp_path):
    run_dir, _ = run
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
    first, second = ConfigParser(config, run_id="1126_101010"), ConfigParser(config, run_id="1126_101010")
    first.make_run_dir()
    second.make_run_dir()
    assert first.run_dir.name == "1126_101010" and second.run_dir.name == "1126_101010_2"
    first.release_run_dir()
    second.release_run_dir()


def test_unwritable_save_dir_is_one_line(tmp_path, tiny_folder):
    (tmp_path / "a_file").write_text("not a folder")
    proc = run_cli("train.py", "-c", tiny_config(tmp_path, tiny_folder), "--save_dir", tmp_path / "a_file" / "saved")
    assert_one_line_error(proc, "trainer.save_dir: cannot write the run folder")


def test_full_disk_while_saving_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    (tmp_path / "last.pth").write_bytes(b"the previous checkpoint")

    def no_space(obj, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("base.base_trainer.save_atomic", no_space)
    with pytest.raises(CheckpointError, match="last.pth: cannot save the checkpoint \\(No space left on device\\)"):
        BaseTrainer._save({}, tmp_path / "last.pth")
    assert (tmp_path / "last.pth").read_bytes() == b"the previous checkpoint"
    with pytest.raises(CheckpointError, match="model_best.pth: cannot save the checkpoint .*; no file was written"):
        BaseTrainer._save({}, tmp_path / "model_best.pth")  # the first one: nothing to keep
    assert not (tmp_path / "model_best.pth").exists()


@pytest.mark.parametrize(
    "signum, status, said, folder",
    [(signal.SIGINT, 130, "interrupted", "plain"), (signal.SIGTERM, 143, "stopped (SIGTERM)", "with space")],
)
def test_ctrl_c_and_sigterm_name_the_real_run_folder_in_info_log(tmp_path, tiny_folder, signum, status, said, folder):
    tmp_path = tmp_path / folder
    tmp_path.mkdir()
    config = tiny_config(tmp_path, tiny_folder, epochs=50)
    proc = subprocess.Popen(
        [sys.executable, "train.py", "-c", str(config)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as a user's shell gives it: an ignored SIGINT would be inherited by the child
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list((tmp_path / "saved").glob("*/*/last.pth")):
            time.sleep(0.2)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=180)  # a loaded machine may take a while to get there
    finally:
        proc.kill()  # never left training in the background, whatever failed above
    assert proc.returncode == status, err
    (run_dir,) = (tmp_path / "saved").glob("*/*")
    expected = f"{said}: the last finished epoch is saved; resume with  python train.py --resume "
    expected += shlex.quote(str(run_dir / "last.pth"))  # a folder with a space: quoted for the shell
    assert expected in out and expected in (run_dir / "info.log").read_text()
    assert "Traceback" not in err and "<run folder>" not in out + err


@pytest.mark.parametrize(
    "content, message",
    [
        (b"GIF89a not really", "not an image format PIL can read"),
        (bomb_png(50000, 50000), "declares 2,500,000,000 pixels, more than the limit of 50,000,000; not decoded"),
        (bomb_png(9000, 9000), "declares 9000x9000 = 81,000,000 pixels"),  # under Pillow's own limit, over ours
    ],
)
def test_unreadable_image_names_the_member_not_a_buffer(tmp_path, tiny_folder, content, message):
    data = tmp_path / "data"
    shutil.copytree(tiny_folder, data)
    (data / "train" / "cat" / "0013.png").write_bytes(content)
    line = assert_one_line_error(run_cli("train.py", "-c", tiny_config(tmp_path, data)), "train/cat/0013.png")
    assert "BytesIO" not in line and message in line
    assert json.loads((tmp_path / "config.json").read_text())  # untouched input
    assert not (tmp_path / "saved").exists()


def test_a_line_break_in_a_file_name_keeps_the_error_on_one_line(tmp_path, tiny_folder):
    data = tmp_path / "data"
    shutil.copytree(tiny_folder, data)
    (data / "train" / "cat" / "bad\nname.png").write_bytes(b"not an image")
    line = assert_one_line_error(run_cli("train.py", "-c", tiny_config(tmp_path, data)), "bad\\nname.png")
    assert "not an image format PIL can read" in line


def test_a_bug_in_a_models_init_keeps_its_traceback(monkeypatch):
    import model.model

    class Buggy(model.model.DilatedNet):
        def __init__(self, num_classes: int = 10):
            super().__init__(num_classes=num_classes)
            len(None)  # a bug: TypeError

    Buggy.__module__ = "model.model"  # as if written in model/model.py, where the registry finds it
    monkeypatch.setattr(model.model, "Buggy", Buggy, raising=False)
    config = load_config(REPO / "config.json")
    config["arch"] = {"type": "Buggy", "args": {"num_classes": 10}}
    with pytest.raises(TypeError, match="has no len"):  # not a ConfigError hiding it
        ConfigParser(config).init_obj("arch")
    config["optimizer"]["args"]["lr"] = -1.0  # torch's own value checks stay one-line errors
    parsed = ConfigParser(config)
    with pytest.raises(ConfigError, match=r"optimizer.args: SGD refused a value \(ValueError: Invalid learning rate"):
        parsed.init_obj("optimizer", [__import__("torch").nn.Parameter(__import__("torch").zeros(1))])


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda c: [c.pop("optimizer"), c.pop("rng")],
            "a weights-only checkpoint (no optimizer, rng)",
        ),
        (lambda c: c.update(epoch="3"), "its 'epoch' is not an epoch number >= 0 (found '3')"),
        (lambda c: c.update(epoch=-3), "its 'epoch' is not an epoch number >= 0 (found -3)"),
        (lambda c: c.update(config="x"), "its 'config' is not an object"),
        (lambda c: c.update(format_version=2), "checkpoint format 2, which this code does not know"),
        (lambda c: c["rng"].pop("torch"), "its 'rng' is not torch, numpy and python states"),
        (lambda c: c["optimizer"].update(param_groups=[]), "its 'optimizer' is not an optimizer state"),
        (lambda c: c["data_stats"].update(std=[0.2, 0.0, 0.2]), "its 'data_stats' is not {'mean'"),
        (lambda c: c.update(state_dict=list(c["state_dict"].values())), "its 'state_dict' is not a mapping"),
        (lambda c: c.update(history="[]"), "its 'history' is not a list of epoch logs"),
        (lambda c: c.update(image_size=[30000, 30000]), "its 'image_size' is not [height, width], each from 1"),
        (lambda c: c.update(classes=["cat", "dog"]), "names 2 classes, but its network has 10 outputs"),
        (lambda c: c["config"]["arch"]["args"].update(widths=[65536] * 4), "weights do not fit the model DilatedNet"),
    ],
)
def test_odd_checkpoints_are_one_line_errors(run, tmp_path, edit, message):
    import torch

    ckpt = torch.load(run[0] / "last.pth", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, tmp_path / "odd.pth")
    # every script reads checkpoints through load_checkpoint; test.py's own path builds the network
    also_test = any(k in message for k in ("names 2 classes", "weights do not fit", "image_size", "data_stats"))
    for script in ["train.py", "test.py"] if also_test else ["train.py"]:
        argv = ["--out", tmp_path / "out"] if script == "test.py" else []  # data: the checkpoint's own
        proc = run_cli(script, "--resume", tmp_path / "odd.pth", *argv)
        assert_one_line_error(proc, message)  # widths of 65536 would need 38 GB: none allocated
    assert not (tmp_path / "out").exists()


def test_resume_refuses_another_learning_rate(run, tmp_path):
    run_dir, _ = run
    before = snapshot(run_dir)
    proc = run_cli("train.py", "--resume", run_dir / "last.pth", "--lr", 0.5)
    assert_one_line_error(proc, "optimizer.args.lr (--lr): 0.5 differs from the checkpoint's 0.15")
    assert snapshot(run_dir) == before


def test_test_py_refuses_images_of_another_size(run, tmp_path):
    from PIL import Image

    for k, name in enumerate(["airplane", "automobile"]):
        (tmp_path / "big" / "test" / name).mkdir(parents=True)
        Image.new("RGB", (64, 64), (k * 100, 0, 0)).save(tmp_path / "big" / "test" / name / "0.png")
    proc = run_cli("test.py", "--resume", run[0] / "last.pth", "--data_dir", tmp_path / "big", cwd=tmp_path)
    assert_one_line_error(proc, "the checkpoint was trained on 32x32 images, the data holds 64x64")


def _tar(path, names):
    import io
    import tarfile

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buf, format="PNG")
    with tarfile.open(path, "w") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = len(buf.getvalue())
            tar.addfile(info, io.BytesIO(buf.getvalue()))
    return path


@pytest.mark.parametrize(
    "names, message",
    [
        (["c/train/cat/0.png", "../../evil/train/cat/1.png"], "points outside the archive's folder"),
        (["c/train/cat/0.png", "/abs/train/cat/1.png"], "points outside the archive's folder"),
        (["a/train/cat/0.png", "b/train/cat/0.png"], "holds train/cat/0.png twice"),
        (["a/train/cat/0.png", "b/train/cat/1.png"], "images under two roots (a/ and b/)"),
    ],
)
def test_tar_members_must_follow_one_layout(tmp_path, names, message):
    from data_loader.datasets import load_splits
    from utils.errors import DataError

    with pytest.raises(DataError, match=message.replace("(", "\\(").replace(")", "\\)")):
        load_splits(_tar(tmp_path / "d.tar", names))


def test_a_data_dir_typo_creates_nothing_and_downloads_nothing(tmp_path):
    from data_loader.datasets import load_splits
    from utils.errors import DataError

    typo = tmp_path / "dtaa" / "cifar"
    with pytest.raises(DataError, match="no such folder; CIFAR-10 is downloaded only into data/"):
        load_splits(typo, download=True)
    assert not (tmp_path / "dtaa").exists()


def test_a_config_without_constraints_trains_without_them_and_says_so(tmp_path, tiny_folder):
    config = json.loads(tiny_config(tmp_path, tiny_folder).read_text())
    del config["constraints"]
    config["arch"]["args"]["widths"] = [64, 64, 160, 160]  # 115,578 parameters: over the spec's limit
    (tmp_path / "free.json").write_text(json.dumps(config))
    assert ConfigParser(config)["constraints"] is None
    proc = run_cli("train.py", "-c", tmp_path / "free.json", "--epochs", 2)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("Constraints: none (the config has no constraints section") == 1


def test_a_model_in_a_new_file_is_found_by_name(tmp_path, monkeypatch):
    import importlib

    from base import BaseModel
    from utils.registry import package_classes

    pkg = tmp_path / "mymodels"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "tiny.py").write_text(
        "import torch.nn as nn\nfrom base import BaseModel\n\n\nclass TinyNet(BaseModel):\n"
        "    def __init__(self, num_classes: int = 10):\n        super().__init__()\n"
        "        self.fc = nn.Linear(3, num_classes)\n\n    def forward(self, x):\n"
        "        return self.fc(x.mean((2, 3)))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    found = package_classes(importlib.import_module("mymodels"), BaseModel)
    assert found.TinyNet.__module__ == "mymodels.tiny"
    import model

    assert package_classes(model, BaseModel).DilatedNet.__name__ == "DilatedNet"  # what arch.type looks up


def test_any_metric_list_works_end_to_end_with_args(tmp_path, tiny_folder):
    config = json.loads(tiny_config(tmp_path, tiny_folder, report=True).read_text())
    config["metrics"] = [{"type": "top_k_acc", "args": {"k": 3}, "name": "top3_acc"}]
    config["trainer"]["monitor"] = "max val_top3_acc"
    (tmp_path / "topk.json").write_text(json.dumps(config))
    proc = run_cli("train.py", "-c", tmp_path / "topk.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "    val_top3_acc   : " in proc.stdout and "    accuracy" not in proc.stdout
    (run_dir,) = (tmp_path / "saved").glob("*/*")
    assert (run_dir / "model_best.pth").is_file() and (run_dir / "report.md").is_file()
    proc = run_cli("test.py", "--resume", run_dir / "last.pth", "--out", tmp_path / "test")
    assert proc.returncode == 0 and "    top3_acc       : " in proc.stdout, proc.stderr


def test_only_rank_0_saves_and_a_ctrl_c_waits_for_the_saves(tmp_path, monkeypatch, request):
    import signal as sig

    from utils import distributed
    from utils.paths import interrupts_deferred

    class Stub(BaseTrainer):
        def __init__(self):
            pass

        checkpoint_dir = tmp_path

        def _train_epoch(self, epoch):
            return {}

        def _state(self, epoch):
            return {"epoch": epoch}

        logger = __import__("logging").getLogger("test")

    monkeypatch.setattr(distributed, "is_main", lambda: False)
    Stub()._save_checkpoint(1, save_best=True, periodic=True)
    assert list(tmp_path.iterdir()) == []  # rank 1 writes nothing
    monkeypatch.setattr(distributed, "is_main", lambda: True)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, whatever ran before
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            os.kill(os.getpid(), sig.SIGINT)  # arrives mid-save ...
            Stub()._save_checkpoint(2, save_best=True, periodic=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-epoch2.pth", "last.pth", "model_best.pth"]


@pytest.mark.parametrize(
    "scheduler, message",
    [
        ({"type": "StepLR", "args": {"step_size": 0}}, "StepLR fails on these values when it steps (ZeroDivisionError"),
        ({"type": "ExponentialLR", "args": {"gamma": -1.0}}, "the ExponentialLR schedule reaches lr -"),
    ],
)
def test_a_schedule_that_fails_when_stepped_is_refused_before_training(scheduler, message):
    from trainer.schedulers import dry_run

    config = load_config(REPO / "config.json")
    config["lr_scheduler"] = scheduler
    with pytest.raises(ConfigError, match=re.escape(message)):
        dry_run(ConfigParser(config), steps_per_epoch=3)
    config["lr_scheduler"] = {"type": "StepLR", "args": {"step_size": 2}}
    dry_run(ConfigParser(config), steps_per_epoch=3)  # a good one passes


def test_the_schedule_check_of_a_huge_run_stops_at_its_step_limit(monkeypatch):
    from trainer.schedulers import dry_run

    config = load_config(REPO / "config.json")
    config["trainer"]["epochs"] = 10_000_000  # 1.76 G steps of OneCycle: checked as far as DRY_RUN_STEPS
    monkeypatch.setattr("trainer.schedulers.DRY_RUN_STEPS", 1000)
    stepped = []
    monkeypatch.setattr("torch.optim.SGD.step", lambda self, *a: stepped.append(1))
    dry_run(ConfigParser(config), steps_per_epoch=176)
    assert len(stepped) == 1000


def test_resume_with_another_config_names_the_keys_that_differ(run, tmp_path):
    run_dir, config = run
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


def test_report_refuses_another_validation_split(run, tmp_path):
    proc = run_cli("report.py", "--resume", run[0] / "last.pth", "--validation_split", 10, "--out", tmp_path)
    assert_one_line_error(proc, "--validation_split: 10 is not the run's 0", "use test.py for other data")
    assert not list(tmp_path.iterdir())


def test_a_failed_download_leaves_no_empty_data_folder(tmp_path, monkeypatch):
    """The offline default run (data_dir data/, download true): one line that says how to use a local
    copy, and no data/ left behind."""
    import torchvision.datasets

    from data_loader.datasets import load_splits
    from utils.errors import DataError

    class Offline(torchvision.datasets.CIFAR10):
        def __init__(self, root, train=True, download=False):
            Path(root).mkdir(parents=True, exist_ok=True)  # as torchvision does before it fetches
            raise OSError("Network is unreachable")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", Offline)
    with pytest.raises(
        DataError, match="data: could not download CIFAR-10 \\(OSError: Network is unreachable\\)"
    ) as info:
        load_splits("data/", download=True)
    assert list(tmp_path.iterdir()) == []
    assert "--data_dir" in str(info.value) and "\n" not in str(info.value)  # says how to use a local copy


def test_nan_in_a_config_file_is_one_line_and_creates_nothing(tmp_path, tiny_folder):
    """Python's JSON reads NaN, and torch's `lr < 0` check lets it through."""
    config = tiny_config(tmp_path, tiny_folder)
    config.write_text(config.read_text().replace('"lr": 0.15', '"lr": NaN'))
    assert_one_line_error(run_cli("train.py", "-c", config), "optimizer.args.lr: expected a finite number, got nan")
    assert not (tmp_path / "saved").exists()


def test_a_finished_checkpoint_resumed_elsewhere_makes_no_run_folder(run, tmp_path):
    run_dir, _ = run
    shutil.copy(run_dir / "last.pth", tmp_path / "finished.pth")
    runs_before = sorted(run_dir.parent.iterdir())
    proc = run_cli("train.py", "--resume", tmp_path / "finished.pth")
    assert proc.returncode == 0, proc.stderr
    assert "Nothing to train" in proc.stdout + proc.stderr and "finished all 2 epochs" in proc.stdout + proc.stderr
    assert sorted(run_dir.parent.iterdir()) == runs_before  # no empty run folder beside the real one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["finished.pth"]


def test_an_edited_run_config_is_used_or_refused_never_overwritten(run, tmp_path):
    """Resuming without -c after editing the run folder's config.json: an edit a resume may make (more
    epochs, verbosity) is used, and is then what the run records; any other edit is one line, and the
    file is left as the user wrote it."""
    run_dir, _ = run
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


def test_a_class_folder_missing_is_named_not_trained_around(tmp_path):
    root = write_folder(tmp_path / "data")
    shutil.rmtree(root / "train" / "truck")
    shutil.rmtree(root / "test" / "truck")
    config = tiny_config(tmp_path, root)
    assert_one_line_error(
        run_cli("train.py", "-c", config), "arch.args.num_classes: the network has 10 outputs", "9 classes (airplane"
    )
    assert not (tmp_path / "saved").exists()
    (root / "train" / "truck").mkdir()  # there, but empty: named as such
    line = assert_one_line_error(run_cli("train.py", "-c", config), "train/truck: an empty class folder")
    assert "num_classes" not in line


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--set", "loss.args.label_smoothing=1.5"], "loss.args.label_smoothing: expected a fraction from 0 to 1"),
        (["--set", 'metrics=["accuracy", {"type": "top_k_acc", "args": {"k": 20}}]'], "metrics: top_k_acc: fails when"),
        (["--set", 'loss={"type": "Module", "args": {}}'], "loss.type: 'Module' is not a Module class"),
        (["--set", 'optimizer={"type": "SparseAdam", "args": {"lr": 0.001}}'], "optimizer: fails when used"),
        (
            # p 1: at its default 0.5 the probe's 4 images all skip it one time in 16
            ["--set", 'data_loader.args.augmentations=[{"type":"Mosaic","args":{"p":1}}]', "--allow_spec_violation"],
            "data_loader.args.augmentations: fails on a 32x32 training image (ValueError: Mosaic requires",
        ),
    ],
)
def test_values_that_fail_only_when_used_are_one_line_before_the_run_folder(tmp_path, tiny_folder, flags, message):
    proc = run_cli("train.py", "-c", tiny_config(tmp_path, tiny_folder), *flags)
    assert_one_line_error(proc, message)
    assert not (tmp_path / "saved").exists()


@pytest.mark.parametrize(
    "fault, status, said",
    [
        (OSError(28, "No space left on device", "curves.png"), 2, "error: curves.png: cannot write the report"),
        (KeyboardInterrupt(), 130, "interrupted while writing the report: training has finished"),
    ],
)
def test_a_report_that_cannot_be_written_says_training_finished(
    tmp_path, tiny_folder, monkeypatch, fault, status, said
):
    def fails(*args, **kwargs):
        raise fault

    monkeypatch.setattr("logger.run_report.write_report", fails)
    proc = run_cli("train.py", "-c", tiny_config(tmp_path, tiny_folder, report=True))
    run_dir = next((tmp_path / "saved").glob("*/*"))
    assert proc.returncode == status and "Traceback" not in proc.stderr, proc.stderr
    assert said in proc.stdout + proc.stderr and "nothing was written" not in proc.stderr
    assert f"python report.py --resume {run_dir / 'last.pth'}" in proc.stdout + proc.stderr
    assert (run_dir / "last.pth").is_file()


def test_a_second_ctrl_c_while_the_first_is_handled_changes_nothing(tmp_path, tiny_folder, monkeypatch):
    import logging

    def interrupted(self):
        raise KeyboardInterrupt

    warn = logging.Logger.warning

    def warning_with_a_second_ctrl_c(self, msg, *args, **kwargs):
        if "resume with" in str(msg):
            os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C again while the hint is printed
        return warn(self, msg, *args, **kwargs)

    monkeypatch.setattr("pipeline.training.Trainer.train", interrupted)
    monkeypatch.setattr(logging.Logger, "warning", warning_with_a_second_ctrl_c)
    proc = run_cli("train.py", "-c", tiny_config(tmp_path, tiny_folder))
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr
    assert "interrupted: the last finished epoch is saved; resume with" in proc.stdout + proc.stderr
    assert "nothing was written" not in proc.stderr
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # this process's Ctrl-C is back


def test_a_data_set_may_decode_only_so_many_pixels_in_all(tmp_path, tiny_folder, monkeypatch):
    """Each picture under the per-image limit, but all of them together over the data set's: one line
    from the headers, before the pixels that would take the memory are decoded."""
    import numpy as np

    import data_loader.datasets as datasets

    monkeypatch.setattr(datasets, "MAX_DATASET_PIXELS", 30 * 32 * 32)  # 30 of the tiny folder's 60 pictures
    decoded = []
    monkeypatch.setattr(datasets, "to_rgb", lambda img: decoded.append(1) or np.zeros((32, 32, 3), np.uint8))
    line = assert_one_line_error(run_cli("train.py", "-c", tiny_config(tmp_path, tiny_folder)), "pixels in all")
    assert str(tiny_folder) in line and "not decoded" in line and len(decoded) == 30


def test_a_full_disk_inside_torch_save_is_one_line_and_the_csv_lists_only_saved_epochs(
    tmp_path, tiny_folder, monkeypatch
):
    """torch's zip writer reports a full disk as a RuntimeError, not an OSError: still one line, the
    previous last.pth kept, and metrics.csv lists no epoch whose checkpoint is missing."""
    import torch

    real_save, calls = torch.save, []

    def full_after_the_first_epoch(obj, f, *args, **kwargs):
        calls.append(obj.get("epoch"))
        if obj.get("epoch") == 2:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4096 vs 2048")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_after_the_first_epoch)
    proc = run_cli("train.py", "-c", tiny_config(tmp_path, tiny_folder))
    assert_one_line_error(proc, "last.pth: cannot save the checkpoint", "disk full")
    run_dir = next((tmp_path / "saved").glob("*/*"))
    assert torch.load(run_dir / "last.pth", weights_only=True)["epoch"] == 1
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("1,")  # the header and epoch 1


def test_a_log_file_that_cannot_be_written_is_one_warning_not_a_traceback_per_record(tmp_path, capsys):
    import logging

    from logger.logger import RunLogHandler

    handler = RunLogHandler(tmp_path / "info.log")

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    handler.stream.write = full
    logger = logging.getLogger("full-disk-test")
    logger.addHandler(handler)
    try:
        for i in range(4):
            logger.warning("record %d", i)
    finally:
        logger.removeHandler(handler)
    err = capsys.readouterr().err
    assert err.count("cannot write the log (No space left on device)") == 1 and "Traceback" not in err


def test_a_run_folder_that_cannot_be_written_at_the_start_is_left_nowhere(tmp_path, monkeypatch):
    """A full disk when the config copy is written: one line, and no empty run folder with a stale lock."""
    import utils.run_folder as run_folder

    def full(path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run_folder, "atomic_write", full)
    with pytest.raises(ConfigError, match=r"cannot write the run folder .* \(No space left on device\)"):
        run_folder.make_run_dir(tmp_path / "saved" / "name" / "0101_000000", None, {"name": "x"})
    assert list((tmp_path / "saved" / "name").iterdir()) == []


def test_a_class_folder_name_that_is_not_utf8_trains_tests_and_predicts(tmp_path):
    """A Latin-1 folder name (caf\\xe9) is shown escaped in the console, the report's pictures and the
    CSV; no writer crashes on it."""
    folder = write_folder(tmp_path / "data")
    for split in ("train", "test"):
        os.rename(os.fsencode(folder / split / "cat"), os.fsencode(folder / split) + b"/caf\xe9")
    proc = run_cli("train.py", "-c", tiny_config(tmp_path, folder, report=True))
    assert proc.returncode == 0, proc.stderr
    run_dir = next((tmp_path / "saved").glob("*/*"))
    assert "caf\\\\xe9" in (run_dir / "report.md").read_text()  # escaped for Markdown too
    tested = run_cli("test.py", "--resume", run_dir / "last.pth", "--data_dir", folder, "--out", tmp_path / "t")
    assert tested.returncode == 0 and "acc_caf\\xe9" in tested.stdout, tested.stderr
    predicted = run_cli("predict.py", "--resume", run_dir / "last.pth", folder / "test", "--out", tmp_path / "p.csv")
    assert predicted.returncode == 0 and "caf\\xe9" in (tmp_path / "p.csv").read_text(), predicted.stderr


def test_a_resume_removes_only_the_temp_files_of_checkpoint_saves(tmp_path):
    """A save killed half-way leaves `.last.<random>.tmp.pth`, which a resume removes; a report.py
    writing into the same folder meanwhile keeps its own temp files."""
    import utils.run_folder as run_folder

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "last.pth").write_bytes(b"x")
    (run_dir / ".last.abc123.tmp.pth").write_bytes(b"half")
    (run_dir / ".report.def456.tmp.md").write_text("being written")
    _, lock = run_folder.make_run_dir(run_dir, run_dir / "last.pth", {"name": "x"})
    run_folder.release(lock)
    assert not (run_dir / ".last.abc123.tmp.pth").exists() and (run_dir / ".report.def456.tmp.md").exists()
