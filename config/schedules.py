"""Learning-rate schedules as the config names them: one table (SCHEDULES) says, per scheduler, when
it steps and which of its arguments the run provides; the config check (config/parser.py),
`build_lr_scheduler`, `dry_run` and the trainer's SchedulerStepper follow it. Adding a scheduler is one
line there (any other torch.optim.lr_scheduler class works as it is: it steps once per epoch and gets
nothing). WarmupCosineLR is the project's own; trainer.swa.start and .lr decide how many epochs the
schedule spans (`schedule_epochs`)."""

import math
from typing import NamedTuple

from torch.optim.lr_scheduler import LambdaLR

from utils.errors import ArgumentError, ConfigError


def swa_start(trainer_cfg):
    """The first averaged epoch of trainer.swa: `start` itself, or for a fraction the epoch after that
    share of trainer.epochs and after at least one trained epoch (so a 1-epoch run averages nothing);
    None without trainer.swa."""
    swa = trainer_cfg.get("swa")
    if not swa:
        return None
    start = swa["start"]
    return start if isinstance(start, int) else max(2, math.floor(start * trainer_cfg["epochs"]) + 1)


def schedule_epochs(trainer_cfg):
    """The epochs the lr schedule and progressive resizing span: all of them, or with trainer.swa.lr
    set, those before the first averaged epoch (the averaged epochs hold the learning rate at swa.lr)."""
    swa = trainer_cfg.get("swa")
    return swa_start(trainer_cfg) - 1 if swa and swa.get("lr") else trainer_cfg["epochs"]


def check_swa(trainer_cfg):
    """One line for a trainer.swa the run cannot follow: starting after the last epoch (nothing would
    be averaged), or at epoch 1 with a constant lr (the schedule would span no epoch). Combined with
    trainer.ema it is refused too (config.schema.EXCLUSIVE). Both when the config is read."""
    cfg = trainer_cfg.get("swa")
    if not cfg:
        return
    start = swa_start(trainer_cfg)
    if isinstance(cfg["start"], int) and start > trainer_cfg["epochs"]:
        raise ConfigError(
            f"trainer.swa.start: epoch {start} is after the last epoch ({trainer_cfg['epochs']}): "
            "nothing would be averaged; start at an epoch up to trainer.epochs (or, for a short run, "
            "--set trainer.swa=null)"
        )
    if cfg.get("lr") and start == 1:
        raise ConfigError(
            "trainer.swa.start: with trainer.swa.lr set, the schedule spans the epochs before start, and start 1 "
            "leaves it none; start later, or set trainer.swa.lr to null to average under the schedule"
        )


class WarmupCosineLR(LambdaLR):
    """Linear warm-up from lr x start_factor to lr over `warmup_epochs` (a fraction is fine), then a
    cosine decay to lr x final_factor at the end of training; it steps every batch. The config sets
    warmup_epochs, start_factor and final_factor; the run gives epochs and steps_per_epoch."""

    def __init__(
        self,
        optimizer,
        epochs: int,
        steps_per_epoch: int,
        warmup_epochs: float = 1.0,
        start_factor: float = 0.05,
        final_factor: float = 0.001,
    ):
        self.total_steps = epochs * steps_per_epoch
        warmup = round(warmup_epochs * steps_per_epoch)
        if not 0 <= warmup < self.total_steps:
            raise ArgumentError(
                "warmup_epochs", f"{warmup_epochs} epochs of warm-up leave no cosine phase in {epochs} epochs"
            )
        if not (0 < start_factor <= 1 and 0 <= final_factor <= 1):
            raise ArgumentError(None, "start_factor must be in (0, 1] and final_factor in [0, 1]")

        def factor(step):
            if step < warmup:
                return start_factor + (1 - start_factor) * step / warmup
            progress = min(1.0, (step - warmup) / max(1, self.total_steps - 1 - warmup))
            return final_factor + (1 - final_factor) * 0.5 * (1 + math.cos(math.pi * progress))

        super().__init__(optimizer, factor)

    def state_dict(self):
        return {k: v for k, v in super().state_dict().items() if k != "lr_lambdas"} | {"total_steps": self.total_steps}


class Schedule(NamedTuple):
    """How the run drives one scheduler class."""

    steps: str = "epoch"  # "batch": after every batch; "epoch": after every epoch; "metric": on the monitor
    given: tuple = ()  # arguments the run passes ("epochs", "steps_per_epoch"): the config must not set them
    refused: tuple = ()  # other arguments the config must not set (they would contradict the given ones)
    filled: tuple = ()  # required arguments the run fills in when the config leaves them out


# The one table. A class not named here steps once per epoch and gets nothing from the run.
SCHEDULES = {
    "OneCycleLR": Schedule("batch", ("epochs", "steps_per_epoch"), ("total_steps",), ("max_lr",)),
    "WarmupCosineLR": Schedule("batch", ("epochs", "steps_per_epoch")),
    "CyclicLR": Schedule("batch"),
    "ReduceLROnPlateau": Schedule("metric"),
}


def schedule_of(name):
    return SCHEDULES.get(name, Schedule())


def check_monitor(entry, monitor):
    """A scheduler that steps on the metric follows trainer.monitor: it must be on, and in the same
    direction. `monitor`: the parsed trainer.monitor (config.schema.Monitor)."""
    if entry is None or schedule_of(entry["type"]).steps != "metric":
        return
    if monitor.mode == "off":
        raise ConfigError(
            f"lr_scheduler: {entry['type']} steps on the monitored metric; set trainer.monitor "
            '(e.g. "max val_accuracy", with lr_scheduler.args.mode "max")'
        )
    mode = entry["args"].get("mode", "min")
    if mode != monitor.mode:
        raise ConfigError(
            f"lr_scheduler.args.mode: {mode!r} but trainer.monitor is {monitor.text!r}; use {monitor.mode!r}"
        )


def build_lr_scheduler(config, optimizer, steps_per_epoch):
    """The config's lr_scheduler, or None, with the arguments its SCHEDULES row says the run gives
    (epochs, steps_per_epoch) or fills in (max_lr: the optimizer's lr); stepped through once on a
    copy first (dry_run)."""
    dry_run(config, steps_per_epoch)
    return _scheduler(config, optimizer, steps_per_epoch)


def _scheduler(config, optimizer, steps_per_epoch):
    entry = config["lr_scheduler"]
    if entry is None:
        return None
    schedule = schedule_of(entry["type"])
    run = {
        "epochs": schedule_epochs(config["trainer"]),
        "steps_per_epoch": steps_per_epoch,
        "max_lr": config["optimizer"]["args"].get("lr", optimizer.defaults["lr"]),
    }
    extra = {k: run[k] for k in schedule.given} | {k: run[k] for k in schedule.filled if k not in entry["args"]}
    if entry["type"] == "OneCycleLR":
        total = run["epochs"] * steps_per_epoch
        warmup_end = entry["args"].get("pct_start", 0.3) * total - 1  # as OneCycleLR computes it
        if not 0 < warmup_end < total - 1:
            raise ConfigError(
                f"lr_scheduler.args.pct_start: a OneCycleLR warm-up of {entry['args'].get('pct_start', 0.3)} x "
                f"{total} steps ({run['epochs']} epoch{'s' if run['epochs'] != 1 else ''} x {steps_per_epoch} "
                "batches) leaves no room for both phases; train for more steps (more epochs, or a smaller "
                "data_loader.args.batch_size) or raise pct_start"
            )
    return config.init_obj("lr_scheduler", optimizer, **extra)


DRY_RUN_STEPS = 50_000  # about a second; a longer schedule (hundreds of epochs) is checked this far


def dry_run(config, steps_per_epoch):
    """Run the schedule once on a one-parameter copy of the optimizer (its first DRY_RUN_STEPS steps:
    all of any usual run), so that a value the scheduler accepts when built but fails on when stepped
    (StepLR step_size 0 divides by zero at the end of the first epoch) is a one-line ConfigError
    before training, not a traceback after."""
    import torch

    if config["lr_scheduler"] is None:
        return
    optimizer = config.init_obj("optimizer", [torch.nn.Parameter(torch.zeros(1))])
    scheduler = _scheduler(config, optimizer, steps_per_epoch)
    per_batch = schedule_of(config["lr_scheduler"]["type"]).steps == "batch"
    epochs = schedule_epochs(config["trainer"])
    used = []  # the learning rate of every batch (or epoch) as training will use it
    try:
        for _ in range(min(DRY_RUN_STEPS, epochs * steps_per_epoch if per_batch else epochs)):
            used.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step(0.0) if schedule_of(config["lr_scheduler"]["type"]).steps == "metric" else scheduler.step()
    except Exception as e:  # the scheduler's own arithmetic on the configured values
        name = config["lr_scheduler"]["type"]
        raise ConfigError(
            f"lr_scheduler.args: {name} fails on these values when it steps ({type(e).__name__}: {e})"
        ) from None
    bad = [lr for lr in used if not math.isfinite(lr) or lr < 0]
    if bad:
        raise ConfigError(f"lr_scheduler.args: the {config['lr_scheduler']['type']} schedule reaches lr {bad[0]}")
