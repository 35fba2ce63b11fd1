import os
import random
import re
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from base.base_trainer import BaseTrainer
from checkpoint.saver import RunFiles
from checkpoint.schema import get_rng_state, load_checkpoint, load_model_state, set_rng_state
from conftest import assert_one_line_error, run_cli, tiny_config
from utils.errors import CheckpointError
from utils.paths import save_atomic


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    save_atomic({"state_dict": {"w": torch.ones(2)}, "config": {}}, path)

    def dies_half_way(obj, f):
        Path(f).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # the run is killed while writing

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"state_dict": {"w": torch.zeros(2)}, "config": {}}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]  # no temp file left behind
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.ones(2))  # old one intact


@pytest.mark.parametrize("name", ["report.md", "curves.png", "preds.csv"])
def test_every_output_is_written_atomically(tmp_path, name):
    from utils.paths import atomic_write

    path = tmp_path / name
    path.write_text("the previous file")
    with pytest.raises(OSError), atomic_write(path) as tmp:  # a full disk half-way
        assert tmp.suffix == path.suffix and tmp.parent == path.parent
        tmp.write_text("half of the new")
        raise OSError(28, "No space left on device")
    assert path.read_text() == "the previous file" and [p.name for p in tmp_path.iterdir()] == [name]
    with atomic_write(path) as tmp:
        tmp.write_text("the new file")
    assert path.read_text() == "the new file" and [p.name for p in tmp_path.iterdir()] == [name]


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    save_atomic({"state_dict": {}, "config": {}, "rng": get_rng_state()}, tmp_path / "c.pth")
    expected = (random.random(), np.random.rand(), torch.rand(1))
    set_rng_state(load_checkpoint(tmp_path / "c.pth")["rng"])
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(1), expected[2])


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not a checkpoint (not a file written by torch.save)"),
        (b"garbage" * 100, "not a checkpoint (not a file written by torch.save)"),
        (b"hello world\n", "not a checkpoint (not a file written by torch.save)"),  # was torch's KeyError
        (b"PK\x03\x04" + b"x" * 100, "not a readable checkpoint"),
    ],
)
def test_corrupt_checkpoint(tmp_path, content, message):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        load_checkpoint(path)


def test_foreign_and_missing_checkpoints(tmp_path):
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a checkpoint of this project"):
        load_checkpoint(tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        load_checkpoint(tmp_path / "none.pth")


class Arbitrary:
    """Any class: weights_only loading must refuse to build it."""


class RunsACommand:
    def __reduce__(self):
        return (os.system, ("echo never run",))


@pytest.mark.parametrize("payload, shown", [(Arbitrary(), r".*Arbitrary"), (RunsACommand(), r"posix\.system")])
def test_unsafe_pickle_is_refused(tmp_path, payload, shown):
    torch.save({"state_dict": {}, "config": {}, "x": payload}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match=rf"refused: it holds a Python object \({shown}\)") as info:
        load_checkpoint(tmp_path / "evil.pth")
    assert "weights_only=False" not in str(info.value)  # never advise the unsafe load


def test_weights_of_another_architecture():
    small, big = torch.nn.Linear(2, 3), torch.nn.Linear(4, 3)
    ckpt = {"state_dict": big.state_dict(), "config": {"arch": {"type": "Linear", "args": {}}}}
    with pytest.raises(CheckpointError, match="weights do not fit the model Linear") as info:
        load_model_state(small, ckpt, "big.pth")
    assert "\n" not in str(info.value)


def test_a_folder_or_a_device_is_not_a_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder; give a checkpoint file in it"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="is not a regular file"):
        load_checkpoint("/dev/null")
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        load_checkpoint(tmp_path / "none.pth")


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
        (
            lambda c: c["data_stats"].update(mean=[0.5] * 4, std=[0.2] * 4),
            "(found the statistics of 4 channels, where the network reads 3 (RGB))",
        ),
        (lambda c: c.update(state_dict=list(c["state_dict"].values())), "its 'state_dict' is not a mapping"),
        (lambda c: c.update(history="[]"), "its 'history' is not a list of epoch logs"),
        (lambda c: c.update(image_size=[30000, 30000]), "its 'image_size' is not [height, width], each from 1"),
        (lambda c: c.update(classes=["cat", "dog"]), "names 2 classes, but its network has 10 outputs"),
        (
            lambda c: c["config"]["arch"]["args"].update(widths=[65536] * 4),
            "a layer of 65,536 channels, more than the 4,096",
        ),
        (
            lambda c: c["config"]["arch"]["args"].update(widths=[64, 64, 128, 144]),
            "weights do not fit the model DilatedNet",
        ),
    ],
)
def test_odd_checkpoints_are_one_line_errors(finished_run, tmp_path, edit, message):
    import torch

    ckpt = torch.load(finished_run[0] / "last.pth", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, tmp_path / "odd.pth")
    # every script reads checkpoints through load_checkpoint; test.py's own path builds the network
    also_test = any(
        k in message for k in ("names 2 classes", "weights do not fit", "65,536", "image_size", "data_stats")
    )
    for script in ["train.py", "test.py"] if also_test else ["train.py"]:
        argv = ["--out", tmp_path / "out"] if script == "test.py" else []  # data: the checkpoint's own
        proc = run_cli(script, "--resume", tmp_path / "odd.pth", *argv)
        assert_one_line_error(proc, message)  # widths of 65536 would need 38 GB: none allocated
    assert not (tmp_path / "out").exists()


def test_full_disk_while_saving_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    (tmp_path / "last.pth").write_bytes(b"the previous checkpoint")

    def no_space(obj, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("checkpoint.saver.save_atomic", no_space)
    with pytest.raises(CheckpointError, match="last.pth: cannot save the checkpoint \\(No space left on device\\)"):
        RunFiles._write({}, tmp_path / "last.pth")
    assert (tmp_path / "last.pth").read_bytes() == b"the previous checkpoint"
    with pytest.raises(CheckpointError, match="model_best.pth: cannot save the checkpoint .*; no file was written"):
        RunFiles._write({}, tmp_path / "model_best.pth")  # the first one: nothing to keep
    assert not (tmp_path / "model_best.pth").exists()


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


def test_only_rank_0_saves_and_a_ctrl_c_waits_for_the_saves(tmp_path, monkeypatch, request):
    import signal as sig

    from utils import distributed
    from utils.paths import interrupts_deferred

    class Stub(BaseTrainer):
        def __init__(self):
            self.files = RunFiles(tmp_path)

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


def test_a_checkpoint_whose_entries_unpack_to_too_much_is_refused_from_its_zip_directory(tmp_path, monkeypatch):
    """A small file whose zip entries declare far more than any checkpoint holds (deflated zeros):
    one line from the sizes in its directory, before torch reads a byte of it."""
    import zipfile

    import checkpoint.schema as schema

    monkeypatch.setattr(schema, "MAX_CHECKPOINT_BYTES", 2**20)
    path = tmp_path / "bomb.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb/data/0", bytes(4 * 2**20))  # 4 MB of zeros, a few KB in the file
    assert path.stat().st_size < 64 * 2**10
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load ran"))
    with pytest.raises(
        CheckpointError,
        match=r"bomb.pth: its entries unpack to 4 MB, more than a checkpoint of this project holds \(1 MB at most\)",
    ):
        load_checkpoint(path)


def test_a_checkpoint_link_in_a_loop_is_one_line_in_every_script(tmp_path):
    (tmp_path / "a.pth").symlink_to(tmp_path / "b.pth")
    (tmp_path / "b.pth").symlink_to(tmp_path / "a.pth")
    for script in ("test.py", "train.py", "report.py"):
        assert_one_line_error(run_cli(script, "--resume", tmp_path / "a.pth"), "a.pth: a link that leads nowhere")


def test_a_disk_full_from_the_first_write_leaves_no_run_folder_and_no_traceback(tmp_path, tiny_folder, monkeypatch):
    """TensorBoard's events and the first checkpoint fail (a nearly full save_dir): a warning for
    TensorBoard, one error line for the checkpoint, and the new run's
    folder (config.json, provenance.json, the lock), with the save_dir the run created, is removed."""
    import errno

    import torch.utils.tensorboard

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("checkpoint.saver.save_atomic", no_space)
    monkeypatch.setattr(torch.utils.tensorboard.SummaryWriter, "add_scalar", no_space)
    config = tiny_config(tmp_path, tiny_folder, tensorboard=True)
    proc = run_cli("train.py", "-c", config)
    assert_one_line_error(proc, "last.pth: cannot save the checkpoint (No space left on device); no file was written")
    out = proc.stdout + proc.stderr
    assert "cannot write TensorBoard's events (No space left on device); TensorBoard stops here" in out
    assert "removed (no epoch of this new run had been saved)" in out and "Traceback" not in out
    assert not (tmp_path / "saved").exists()


def test_the_run_log_stops_at_a_full_disk_with_one_warning(tmp_path, capsys):
    import errno
    import logging

    from logger.logger import RunLogHandler

    class Full:
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        flush = close = lambda self: Full.write(self, "")

    handler = RunLogHandler(tmp_path / "info.log")
    handler.stream = Full()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "an epoch", None, None)
    handler.handle(record)  # FileHandler.emit catches the OSError and calls handleError
    handler.handle(record)
    handler.close()
    err = capsys.readouterr().err
    assert err.count("info.log: cannot write the log (No space left on device); it stops here") == 1
    assert "Traceback" not in err


def test_a_failed_run_keeps_its_folder_once_a_checkpoint_exists_and_a_resumed_one_always(tmp_path):
    first = RunFiles(tmp_path / "saved" / "name" / "run")
    first.open({"name": "name"}, torch.device("cpu"))
    first.close(failed=True)
    assert not (tmp_path / "saved").exists()  # the folders it made, all gone
    (tmp_path / "saved").mkdir()
    kept = RunFiles(tmp_path / "saved" / "name" / "run")
    run_dir = kept.open({"name": "name"}, torch.device("cpu"))
    (run_dir / "last.pth").write_bytes(b"epoch 1")
    kept.close(failed=True)
    assert (run_dir / "last.pth").exists() and not (run_dir / ".lock").exists()
    (run_dir / "last.pth").unlink()
    resumed = RunFiles(run_dir, resume=run_dir / "last.pth")
    resumed.open({"name": "name"}, torch.device("cpu"))
    resumed.close(failed=True)
    assert run_dir.is_dir() and (tmp_path / "saved").is_dir()  # a resumed run's folder is never removed
