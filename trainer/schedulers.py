"""Learning-rate schedules: how each one is built from the config, and the one place that decides
when it steps (every batch, every epoch, or on the monitored metric)."""

import math

from torch.optim.lr_scheduler import CyclicLR, LambdaLR, OneCycleLR, ReduceLROnPlateau

from utils.errors import ConfigError


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
            raise ConfigError(
                f"lr_scheduler.args.warmup_epochs: {warmup_epochs} epochs of warm-up leave no cosine "
                f"phase in {epochs} epochs"
            )
        if not (0 < start_factor <= 1 and 0 <= final_factor <= 1):
            raise ConfigError("lr_scheduler.args: start_factor must be in (0, 1] and final_factor in [0, 1]")

        def factor(step):
            if step < warmup:
                return start_factor + (1 - start_factor) * step / warmup
            progress = min(1.0, (step - warmup) / max(1, self.total_steps - 1 - warmup))
            return final_factor + (1 - final_factor) * 0.5 * (1 + math.cos(math.pi * progress))

        super().__init__(optimizer, factor)

    def state_dict(self):
        return {k: v for k, v in super().state_dict().items() if k != "lr_lambdas"} | {"total_steps": self.total_steps}


PER_BATCH = (OneCycleLR, CyclicLR, WarmupCosineLR)  # every other scheduler steps once per epoch


class SchedulerStepper:
    """Steps a scheduler at the right moment: per batch (OneCycleLR, CyclicLR, WarmupCosineLR), on
    the monitored metric (ReduceLROnPlateau) or per epoch (the rest)."""

    def __init__(self, scheduler, monitor):
        self.scheduler = scheduler
        self.metric = monitor.partition(" ")[2] if monitor != "off" else None
        self.batch_scheduler = scheduler if isinstance(scheduler, PER_BATCH) else None

    def after_epoch(self, log):
        if self.scheduler is None or self.batch_scheduler is not None:
            return
        if isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step(log[self.metric])
        else:
            self.scheduler.step()


def check_monitor(entry, monitor):
    """ReduceLROnPlateau follows trainer.monitor: it must be on, and in the same direction."""
    if entry is None or entry["type"] != "ReduceLROnPlateau":
        return
    if monitor == "off":
        raise ConfigError(
            "lr_scheduler: ReduceLROnPlateau steps on the monitored metric; set trainer.monitor "
            '(e.g. "max val_accuracy", with lr_scheduler.args.mode "max")'
        )
    mode, want = entry["args"].get("mode", "min"), monitor.partition(" ")[0]
    if mode != want:
        raise ConfigError(f"lr_scheduler.args.mode: {mode!r} but trainer.monitor is {monitor!r}; use {want!r}")


def check_same_length(scheduler, saved_state, epochs, steps_per_epoch):
    """A per-batch schedule resumed with another number of steps would silently be another schedule."""
    was, now = saved_state.get("total_steps"), getattr(scheduler, "total_steps", None)
    if now is not None and was is not None and was != now:
        raise ConfigError(
            f"trainer.epochs: the checkpoint's {type(scheduler).__name__} schedule has {was} steps, "
            f"this run's {now} ({epochs} epochs x {steps_per_epoch} batches); resume with the same "
            "epochs, batch size and data"
        )


def build_lr_scheduler(config, optimizer, steps_per_epoch):
    """The config's lr_scheduler, or None. OneCycleLR and WarmupCosineLR get epochs and
    steps_per_epoch from the run; OneCycleLR peaks at the optimizer's lr unless max_lr is set."""
    entry = config["lr_scheduler"]
    if entry is None:
        return None
    if entry["type"] == "WarmupCosineLR":
        return config.init_obj(
            "lr_scheduler", optimizer, epochs=config["trainer"]["epochs"], steps_per_epoch=steps_per_epoch
        )
    if entry["type"] == "OneCycleLR":
        extra = {"epochs": config["trainer"]["epochs"], "steps_per_epoch": steps_per_epoch}
        if "max_lr" not in entry["args"]:
            extra["max_lr"] = config["optimizer"]["args"].get("lr", optimizer.defaults["lr"])
        total = extra["epochs"] * steps_per_epoch
        warmup_end = entry["args"].get("pct_start", 0.3) * total - 1  # as OneCycleLR computes it
        if not 0 < warmup_end < total - 1:
            raise ConfigError(
                f"lr_scheduler.args.pct_start: a OneCycleLR warm-up of {entry['args'].get('pct_start', 0.3)} x "
                f"{total} steps ({extra['epochs']} epochs x {steps_per_epoch} batches) leaves no room for "
                "both phases; train for more steps or change pct_start"
            )
        return config.init_obj("lr_scheduler", optimizer, **extra)
    return config.init_obj("lr_scheduler", optimizer)


def dry_run(config, steps_per_epoch):
    """Run the whole schedule once on a one-parameter copy of the optimizer, so that a value the
    scheduler accepts when built but fails on when stepped (StepLR step_size 0 divides by zero at
    the end of the first epoch) is a one-line ConfigError before training, not a traceback after."""
    import torch

    if config["lr_scheduler"] is None:
        return
    optimizer = config.init_obj("optimizer", [torch.nn.Parameter(torch.zeros(1))])
    scheduler = build_lr_scheduler(config, optimizer, steps_per_epoch)
    per_batch, epochs = isinstance(scheduler, PER_BATCH), config["trainer"]["epochs"]
    used = []  # the learning rate of every batch (or epoch) as training will use it
    try:
        for _ in range(epochs * steps_per_epoch if per_batch else epochs):
            used.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step(0.0) if isinstance(scheduler, ReduceLROnPlateau) else scheduler.step()
    except Exception as e:  # the scheduler's own arithmetic on the configured values
        name = config["lr_scheduler"]["type"]
        raise ConfigError(
            f"lr_scheduler.args: {name} fails on these values when it steps ({type(e).__name__}: {e})"
        ) from None
    bad = [lr for lr in used if not math.isfinite(lr) or lr < 0]
    if bad:
        raise ConfigError(f"lr_scheduler.args: the {config['lr_scheduler']['type']} schedule reaches lr {bad[0]}")
