"""train.py and trainer/preflight.py: checks before the run folder, and the ways a run ends (diverged, Ctrl-C,
SIGTERM)."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, assert_one_line_error, run_cli, tiny_config


def test_diverging_loss_stops_at_once_and_keeps_the_last_good_checkpoint(tmp_path, tiny_folder):
    config = tiny_config(tmp_path, tiny_folder, epochs=3)
    proc = run_cli("train.py", "-c", config, "--lr", 1e30)
    line = assert_one_line_error(proc, "epoch 1, batch ", ": the loss is", "diverged: lower optimizer.args.lr")
    assert "no checkpoint was written" in line
    assert not (tmp_path / "saved").exists()  # a non-finite epoch is never saved: the new run's folder is removed


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
        if str(msg).startswith("interrupted: "):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C pressed again while the hint is printed
        return warn(self, msg, *args, **kwargs)

    monkeypatch.setattr("trainer.trainer.Trainer.train", interrupted)
    monkeypatch.setattr(logging.Logger, "warning", warning_with_a_second_ctrl_c)
    proc = run_cli("train.py", "-c", tiny_config(tmp_path, tiny_folder))
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr
    # no epoch had finished (train() was interrupted at once): nothing to resume, and it says so
    assert "interrupted: no epoch had finished, so there is nothing to resume" in proc.stdout + proc.stderr
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # this process's Ctrl-C is back


def test_momentum_outside_0_1_is_one_line_and_a_cycled_momentum_is_said(tmp_path, tiny_folder):
    config = tiny_config(tmp_path, tiny_folder)
    proc = run_cli("train.py", "-c", config, "--set", "optimizer.args.momentum=2.0")
    assert_one_line_error(proc, "optimizer.args.momentum: expected a number from 0 to below 1, got 2.0")
    assert not (tmp_path / "saved").exists()
    proc = run_cli("train.py", "-c", config, "--set", "optimizer.args.momentum=0.5")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "note: OneCycleLR cycles the momentum between 0.85 and 0.95" in proc.stdout
    assert "optimizer.args.momentum 0.5 is not used (cycle_momentum false keeps it)" in proc.stdout


def test_a_batch_whose_activations_would_not_fit_is_one_line_before_the_network_runs_at_that_size(monkeypatch):
    """Estimated on one 32x32 picture and scaled by the area: large pictures (or a large batch) are
    refused before check_logits or the spec check run the network at the data's size."""
    from types import SimpleNamespace

    from model.model import DilatedNet
    from trainer import preflight
    from utils.errors import ConfigError

    model = DilatedNet()
    small = SimpleNamespace(image_size=(32, 32), batch_sampler=SimpleNamespace(batch_size=256))
    large = SimpleNamespace(image_size=(2048, 2048), batch_sampler=SimpleNamespace(batch_size=8))
    assert preflight.activation_bytes(model, (32, 32), 256) < preflight.MAX_BATCH_BYTES  # the shipped recipe
    preflight.check_batch_memory(model, small)
    ran = []
    model.register_forward_pre_hook(lambda m, args: ran.append(args[0].shape[-1]))
    with pytest.raises(ConfigError, match=r"^data_loader.args.batch_size: a batch of 8 pictures of 2048x2048 needs"):
        preflight.check_batch_memory(model, large)
    assert ran == [32]  # only the small probe ran


def test_a_progressive_resize_that_cannot_shrink_the_images_is_one_line(tmp_path, tiny_folder):
    config = tiny_config(tmp_path, tiny_folder, progressive_resize={"min_size": 100000, "until": 0.5})
    proc = run_cli("train.py", "-c", config)
    assert_one_line_error(proc, "trainer.progressive_resize.min_size: 100000 is larger than the images' 32 px")
    assert not (tmp_path / "saved").exists()


def test_an_interrupt_after_the_epochs_gives_the_resume_command_not_nothing_was_written(
    tmp_path, tiny_folder, monkeypatch
):
    """A stop outside the epoch loop (here while the loaders close; under torchrun, while the group is
    torn down) said "interrupted before training started: nothing was written"; it now says what is
    saved and how to resume, from any step of the run."""

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr("trainer.trainer.Trainer.close_loaders", interrupted)
    proc = run_cli("train.py", "-c", tiny_config(tmp_path, tiny_folder))
    run_dir = next((tmp_path / "saved").glob("*/*"))
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr
    assert "nothing was written" not in proc.stdout + proc.stderr
    assert (
        f"interrupted: the last finished epoch is saved; resume with  python train.py --resume {run_dir / 'last.pth'}"
        in proc.stdout + proc.stderr
    )


HANG_UP_ON_A_WORKER = """
import os, select, socket, sys, time
from multiprocessing import resource_sharer
from base.base_data_loader import _leave_stops_to_the_main_process
_leave_stops_to_the_main_process(0)
read_end, _ = os.pipe()
resource_sharer.DupFd(read_end)  # the worker offers a file descriptor, as for a batch's tensors
client = socket.socket(socket.AF_UNIX)
client.connect(resource_sharer._resource_sharer._address)
select.select([client], [], [], 10)  # the worker's challenge has arrived, and is left unread
client.close()  # the main process, stopped mid-handover, drops the connection
time.sleep(1)
try:
    raise ValueError("a bug in a worker's thread")
except ValueError:
    sys.excepthook(*sys.exc_info())
"""


def test_a_worker_is_quiet_when_the_main_process_drops_a_handover_and_keeps_other_tracebacks():
    """The traceback a SIGTERM to the process group sometimes left under the resume line: the worker's
    resource_sharer thread, which hands batches' file descriptors to the main process, printed the
    ConnectionResetError of a handover the stopped main process dropped. Reproduced directly."""
    proc = subprocess.run([sys.executable, "-c", HANG_UP_ON_A_WORKER], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "ConnectionResetError" not in proc.stderr and "EOFError" not in proc.stderr, proc.stderr
    assert "ValueError: a bug in a worker's thread" in proc.stderr


def test_sigterm_to_the_whole_process_group_with_loader_workers_is_the_resume_line(tmp_path, tiny_folder):
    """pkill, `kill -- -PGID` and job schedulers stop every process of the group, the DataLoader's
    workers too: the run still ends with its one line (the workers leave the stop to the main process)."""
    config = tiny_config(tmp_path, tiny_folder, epochs=50)
    changed = json.loads(config.read_text())
    changed["data_loader"]["args"]["num_workers"] = 1
    config.write_text(json.dumps(changed))
    proc = subprocess.Popen(
        [sys.executable, "train.py", "-c", str(config)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list((tmp_path / "saved").glob("*/*/last.pth")):
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "stopped (SIGTERM): the last finished epoch is saved; resume with" in out
    assert "Traceback" not in err, err[-2000:]
