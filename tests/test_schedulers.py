"""Learning-rate schedules: built from the config, stepped in one place (trainer/schedulers.py)."""

import json
import re

import pytest
import torch

from config.parser import ConfigParser
from config.reading import load_config
from config.schedules import SCHEDULES, Schedule, build_lr_scheduler
from config.schema import parse_monitor
from conftest import REPO, assert_one_line_error, run_cli, tiny_config
from trainer.schedulers import SchedulerStepper
from utils.errors import ConfigError


def optimizer(lr=0.2):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def lrs(scheduler, steps):
    out = []
    for _ in range(steps):
        out.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def test_warmup_then_cosine_from_the_config():
    config = load_config(REPO / "config.json")
    config["lr_scheduler"] = {"type": "WarmupCosineLR", "args": {"warmup_epochs": 2, "start_factor": 0.1}}
    config["trainer"].update(epochs=10, swa=None)
    scheduler = build_lr_scheduler(ConfigParser(config), optimizer(0.2), steps_per_epoch=10)
    got = lrs(scheduler, 100)
    assert got[0] == pytest.approx(0.02) and got[20] == pytest.approx(0.2)  # linear warm-up over 2 epochs
    assert all(a < b for a, b in zip(got[:20], got[1:21])) and all(a >= b for a, b in zip(got[20:], got[21:]))
    assert got[-1] == pytest.approx(0.2 * 0.001)  # cosine down to final_factor at the last step
    assert (
        SchedulerStepper(scheduler, parse_monitor("max val_accuracy")).batch_scheduler is scheduler
    )  # steps every batch


def test_plateau_steps_on_the_monitored_metric_in_its_direction():
    config = load_config(REPO / "config.json")
    config["lr_scheduler"] = {"type": "ReduceLROnPlateau", "args": {"mode": "min"}}
    with pytest.raises(ConfigError, match="lr_scheduler.args.mode: 'min' but trainer.monitor is 'max val_accuracy'"):
        ConfigParser(config)
    config["trainer"]["monitor"] = "off"
    with pytest.raises(ConfigError, match="ReduceLROnPlateau steps on the monitored metric"):
        ConfigParser(config)
    opt = optimizer(0.2)
    stepper = SchedulerStepper(
        torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", patience=0), parse_monitor("max val_accuracy")
    )
    assert stepper.batch_scheduler is None
    for accuracy in (50.0, 40.0, 30.0):  # no improvement after the first epoch: the lr falls
        stepper.after_epoch({"loss": 1.0, "val_accuracy": accuracy})
    assert opt.param_groups[0]["lr"] < 0.2


def test_resume_with_another_scheduler_is_refused(tmp_path, tiny_folder):

    config = tiny_config(tmp_path, tiny_folder)
    assert run_cli("train.py", "-c", config).returncode == 0
    (run_dir,) = (tmp_path / "saved").glob("*/*")
    other = json.loads(config.read_text())
    other["lr_scheduler"] = {"type": "WarmupCosineLR", "args": {}}
    (tmp_path / "other.json").write_text(json.dumps(other))
    proc = run_cli("train.py", "-c", tmp_path / "other.json", "--resume", run_dir / "last.pth")
    assert_one_line_error(proc, "trained with lr_scheduler OneCycleLR, the config says WarmupCosineLR")


def test_a_scheduler_is_one_line_of_the_table(monkeypatch):
    """SCHEDULES decides when a scheduler steps and what the run gives it; the config check reads it too."""
    config = load_config(REPO / "config.json")
    config["lr_scheduler"] = {"type": "LinearLR", "args": {"start_factor": 0.5}}
    config["trainer"]["epochs"] = 4
    plain = build_lr_scheduler(ConfigParser(config), optimizer(0.2), steps_per_epoch=10)
    assert SchedulerStepper(plain, parse_monitor("off")).batch_scheduler is None  # not in the table: per epoch
    config["lr_scheduler"]["args"]["total_iters"] = 3
    monkeypatch.setitem(SCHEDULES, "LinearLR", Schedule("batch", refused=("total_iters",)))
    with pytest.raises(ConfigError, match="lr_scheduler.args.total_iters"):
        ConfigParser(config)  # the row's refused argument is refused when the config is read
    del config["lr_scheduler"]["args"]["total_iters"]
    per_batch = build_lr_scheduler(ConfigParser(config), optimizer(0.2), steps_per_epoch=10)
    assert SchedulerStepper(per_batch, parse_monitor("off")).batch_scheduler is per_batch
    config["lr_scheduler"]["args"]["epochs"] = 4
    with pytest.raises(ConfigError, match="lr_scheduler.args.epochs"):
        ConfigParser(config)  # not an argument of LinearLR at all


@pytest.mark.parametrize(
    "scheduler, message",
    [
        ({"type": "StepLR", "args": {"step_size": 0}}, "StepLR fails on these values when it steps (ZeroDivisionError"),
        ({"type": "ExponentialLR", "args": {"gamma": -1.0}}, "the ExponentialLR schedule reaches lr -"),
    ],
)
def test_a_schedule_that_fails_when_stepped_is_refused_before_training(scheduler, message):
    from config.schedules import dry_run

    config = load_config(REPO / "config.json")
    config["lr_scheduler"] = scheduler
    with pytest.raises(ConfigError, match=re.escape(message)):
        dry_run(ConfigParser(config), steps_per_epoch=3)
    config["lr_scheduler"] = {"type": "StepLR", "args": {"step_size": 2}}
    dry_run(ConfigParser(config), steps_per_epoch=3)  # a good one passes


def test_the_schedule_check_of_a_huge_run_stops_at_its_step_limit(monkeypatch):
    from config.schedules import dry_run

    config = load_config(REPO / "config.json")
    config["trainer"]["epochs"] = 10_000_000  # 1.76 G steps of OneCycle: checked as far as DRY_RUN_STEPS
    monkeypatch.setattr("config.schedules.DRY_RUN_STEPS", 1000)
    stepped = []
    monkeypatch.setattr("torch.optim.SGD.step", lambda self, *a: stepped.append(1))
    dry_run(ConfigParser(config), steps_per_epoch=176)
    assert len(stepped) == 1000
