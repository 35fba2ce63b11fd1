import math
from abc import ABC, abstractmethod

from logger import TensorboardWriter, get_logger
from logger.format import format_log
from utils import distributed
from utils.checkpoint import (
    get_rng_state,
    interrupts_deferred,
    load_checkpoint,
    load_model_state,
    save_atomic,
    set_rng_state,
)
from utils.errors import CheckpointError, ConfigError, DivergedError, NonFiniteLoss

# config keys a resumed run may change: where files go and how much is printed, not what is trained
MAY_DIFFER_ON_RESUME = {
    "name",
    "device",
    "trainer.save_dir",
    "trainer.save_period",
    "trainer.verbosity",
    "trainer.tensorboard",
    "trainer.report",
    "trainer.epochs",
    "trainer.early_stop",
    "trainer.dist_timeout",
    "data_loader.args.data_dir",
    "data_loader.args.num_workers",
    "data_loader.args.pin_memory",
    "data_loader.args.download",
}


def _flatten(tree, prefix=""):
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
    return flat


def config_changes(saved, now):
    """[(key path, saved value, new value)] of the keys a resumed run may not change."""
    was, new = _flatten(saved), _flatten(now)
    keys = sorted(k for k in was.keys() | new.keys() if was.get(k) != new.get(k) and k not in MAY_DIFFER_ON_RESUME)
    return [(k, was.get(k), new.get(k)) for k in keys]


class BaseTrainer(ABC):
    """The epoch loop, monitoring, early stopping, checkpoints and resume. Subclasses implement
    `_train_epoch(epoch) -> dict` and `_extra_state()` / `_load_extra_state(ckpt)`."""

    def __init__(self, model, criterion, metric_ftns, optimizer, config, epoch_callbacks=()):
        self.config = config
        self.epoch_callbacks = list(epoch_callbacks)  # f(epoch, log) after each epoch's checkpoint
        self.logger = get_logger("trainer")
        self.model = model
        self.criterion = criterion
        self.metric_ftns = metric_ftns
        self.optimizer = optimizer

        cfg = config["trainer"]
        self.epochs = cfg["epochs"]
        self.save_period = cfg["save_period"]
        self.monitor = cfg["monitor"]
        self.early_stop = cfg["early_stop"] if cfg["early_stop"] > 0 else math.inf
        if self.monitor == "off":
            self.mnt_mode, self.mnt_best = "off", 0.0
        else:
            self.mnt_mode, self.mnt_metric = self.monitor.split()
            self.mnt_best = math.inf if self.mnt_mode == "min" else -math.inf

        self.start_epoch = 1
        self.history = []  # one log dict per epoch, kept in checkpoints (curves survive a resume)
        self.writer = TensorboardWriter(lambda: self.checkpoint_dir, cfg["tensorboard"] and distributed.is_main())

    @property
    def checkpoint_dir(self):
        return self.config.run_dir  # known once the run folder is made (its name may gain a suffix then)

    @abstractmethod
    def _train_epoch(self, epoch):
        raise NotImplementedError

    def _extra_state(self):
        return {}

    def _load_extra_state(self, ckpt):
        pass

    def train(self):
        try:
            return self._train()
        finally:
            self.writer.close()

    def _train(self):
        if self.start_epoch > self.epochs:
            self.logger.info(f"Nothing to train: the checkpoint has finished all {self.epochs} epochs.")
        not_improved = 0
        for epoch in range(self.start_epoch, self.epochs + 1):
            try:
                log = {"epoch": epoch, **self._train_epoch(epoch)}
            except NonFiniteLoss as e:
                self._stop_diverged(f"epoch {epoch}, {e.where}", "loss", e.value, epoch)
            bad = [k for k in ("loss", "val_loss") if k in log and not math.isfinite(log[k])]
            if bad:  # stop before saving: last.pth keeps the last good epoch
                self._stop_diverged(f"epoch {epoch}", bad[0].replace("_", " "), log[bad[0]], epoch)
            self.history.append(log)
            self.logger.info(format_log(log))
            self.writer.add_scalars(log, epoch)

            best = False
            if self.mnt_mode != "off":
                if self.mnt_metric not in log:
                    self.logger.warning(f"trainer.monitor: metric {self.mnt_metric!r} is not logged; monitoring is off")
                    self.mnt_mode = "off"
                else:
                    value = log[self.mnt_metric]
                    improved = value < self.mnt_best if self.mnt_mode == "min" else value > self.mnt_best
                    if improved:
                        self.mnt_best, not_improved, best = value, 0, True
                    else:
                        not_improved += 1
            stop = not_improved > self.early_stop
            self._save_checkpoint(epoch, best, periodic=epoch % self.save_period == 0 or epoch == self.epochs or stop)
            for callback in self.epoch_callbacks:  # e.g. a tuning trial's pruner, which may raise to stop
                callback(epoch, log)
            if stop:
                self.logger.info(f"{self.mnt_metric} did not improve for {self.early_stop} epochs: training stops.")
                break
        return self.history

    def _stop_diverged(self, where, what, value, epoch):
        saved = f"last.pth keeps epoch {epoch - 1}" if epoch > 1 else "no checkpoint was written"
        state = f"is {value}" if not math.isfinite(value) else "was not finite (here, or in another process)"
        raise DivergedError(
            f"{where}: the {what} {state} (diverged: lower optimizer.args.lr or check the data); "
            f"training stopped, {saved} in {self.checkpoint_dir}"
        )

    def _state(self, epoch):
        return {
            "arch": type(self.model).__name__,
            "epoch": epoch,
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "monitor_best": self.mnt_best,
            "config": self.config.config,
            "history": self.history,
            "rng": get_rng_state(),
            **self._extra_state(),
        }

    def _save_checkpoint(self, epoch, save_best=False, periodic=False):
        """last.pth every epoch (what a killed run resumes from), checkpoint-epochN.pth every
        save_period epochs and at the end, model_best.pth when the monitored metric improves.
        Under DDP only rank 0 writes (the replicas are equal). A Ctrl-C during the saves takes
        effect once they are done, so the three files always belong to the same epoch."""
        if not distributed.is_main():
            return
        with interrupts_deferred():
            state = self._state(epoch)
            self._save(state, self.checkpoint_dir / "last.pth")
            if periodic:
                path = self.checkpoint_dir / f"checkpoint-epoch{epoch}.pth"
                self._save(state, path)
                self.logger.debug(f"Saving checkpoint: {path} ...")
            if save_best:
                self._save(state, self.checkpoint_dir / "model_best.pth")
                self.logger.debug("Saving current best: model_best.pth ...")

    @staticmethod
    def _save(state, path):
        try:
            save_atomic(state, path)
        except OSError as e:  # full disk, read-only or vanished folder: the previous file is untouched
            raise CheckpointError(
                f"{path}: cannot save the checkpoint ({e.strerror or e}); the previous one is left as it was"
            ) from None

    def _check_resumable(self, ckpt, path):
        """Everything a resume needs, checked before anything is loaded: one line per problem."""
        if "optimizer" not in ckpt or "rng" not in ckpt:
            raise CheckpointError(
                f"{path}: a weights-only checkpoint (no optimizer or RNG state) cannot be resumed; "
                "evaluate it with test.py, or resume from the run's last.pth"
            )
        expected = {"epoch": int, "optimizer": dict, "rng": dict, "monitor_best": (int, float), "config": dict}
        for key, kind in expected.items():
            if key not in ckpt or not isinstance(ckpt[key], kind) or isinstance(ckpt[key], bool):
                kind_found = type(ckpt.get(key)).__name__
                raise CheckpointError(f"{path}: its {key!r} is missing or of the wrong type ({kind_found})")
        saved = ckpt["config"]
        for section in ("optimizer", "lr_scheduler"):
            was = (saved.get(section) or {}).get("type")
            now = (self.config[section] or {}).get("type")
            if was != now:
                raise CheckpointError(
                    f"{path}: trained with {section} {was}, the config says {now}; a resumed run "
                    "continues its own optimizer and schedule: start a new run to change them"
                )
        was_lr = (saved.get("optimizer") or {}).get("args", {}).get("lr")
        now_lr = self.config["optimizer"]["args"].get("lr")
        if was_lr != now_lr:
            raise ConfigError(
                f"optimizer.args.lr (--lr): {now_lr} differs from the checkpoint's {was_lr}; a resumed "
                "run continues its schedule as saved: start a new run to change the learning rate"
            )
        changes = config_changes(saved, self.config.config)
        if changes:
            shown = "; ".join(f"{k}: {was!r} -> {now!r}" for k, was, now in changes[:3])
            more = f" and {len(changes) - 3} more" if len(changes) > 3 else ""
            raise ConfigError(
                f"{path}: the config differs from the one this run was trained with ({shown}{more}); a resumed "
                "run continues as it was trained: resume without -c, or start a new run with the new config"
            )

    def resume(self, path):
        """Continue from a checkpoint: weights, optimizer, scheduler, scaler, RNG, history."""
        ckpt = load_checkpoint(path)
        self._check_resumable(ckpt, path)
        load_model_state(self.model, ckpt, path)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self._load_extra_state(ckpt)
        self.start_epoch = ckpt["epoch"] + 1
        self.mnt_best = ckpt["monitor_best"]
        self.history = list(ckpt.get("history", []))
        set_rng_state(ckpt["rng"])
        self.logger.info(f"Resumed from {path}: training continues at epoch {self.start_epoch}")
