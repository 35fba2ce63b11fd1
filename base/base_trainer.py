import math
from abc import ABC, abstractmethod
from pathlib import Path

from checkpoint.resume import check_resumable
from checkpoint.schema import (
    get_rng_state,
    load_checkpoint,
    load_model_state,
    make_checkpoint,
    saved_entries,
    set_rng_state,
)
from logger import TensorboardWriter, get_logger
from logger.format import format_log, write_csv
from logger.keys import EPOCH, LOSS, TIMING_KEYS, val_key
from utils import distributed
from utils.errors import DivergedError, NonFiniteLoss


class BaseTrainer(ABC):
    """The epoch loop, monitoring, early stopping, checkpoints and resume. Subclasses implement
    `_train_epoch(epoch) -> dict` and `_extra_state()` / `_load_extra_state(ckpt)`.
    files: the run's checkpoint.saver.RunFiles (its folder, made when training starts, and the
    save policy)."""

    def __init__(self, model, criterion, metric_ftns, optimizer, config, files, epoch_callbacks=()):
        self.config = config
        self.files = files
        self.epoch_callbacks = list(epoch_callbacks)  # f(epoch, log) after each epoch's checkpoint
        self.logger = get_logger("trainer")
        self.model = model
        self.criterion = criterion
        self.metric_ftns = metric_ftns
        self.optimizer = optimizer

        cfg = config["trainer"]
        self.epochs = cfg["epochs"]
        self.early_stop = cfg["early_stop"] if cfg["early_stop"] > 0 else math.inf
        self.mnt_mode, self.mnt_metric = config.monitor.mode, config.monitor.metric
        self.mnt_best = {"off": 0.0, "min": math.inf, "max": -math.inf}[self.mnt_mode]

        self.start_epoch = 1
        self.history = []  # one log dict per epoch, kept in checkpoints (curves survive a resume)
        self.writer = TensorboardWriter(lambda: self.checkpoint_dir, cfg["tensorboard"] and distributed.is_main())

    @property
    def checkpoint_dir(self):
        return self.files.run_dir  # known once the run folder is made (its name may gain a suffix then)

    @abstractmethod
    def _train_epoch(self, epoch):
        raise NotImplementedError

    def _extra_state(self):
        return {}

    def _load_extra_state(self, saved):
        """Restore what _extra_state saved, from the checkpoint's entries (checkpoint.schema.Saved)."""

    def train(self):
        try:
            return self._train()
        finally:
            self.writer.close()

    def _train(self):
        not_improved = 0
        for epoch in range(self.start_epoch, self.epochs + 1):
            try:
                log = {EPOCH: epoch, **self._train_epoch(epoch)}
            except NonFiniteLoss as e:
                self._stop_diverged(f"epoch {epoch}, {e.where}", "loss", e.value, epoch)
            bad = [k for k in (LOSS, val_key(LOSS)) if k in log and not math.isfinite(log[k])]
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
            self._save_checkpoint(epoch, best, periodic=self.files.is_periodic(epoch, self.epochs) or stop)
            if distributed.is_main():  # after the checkpoint: metrics.csv never lists an epoch last.pth lacks
                self._write_csv()
            for callback in self.epoch_callbacks:  # e.g. a tuning trial's pruner, which may raise to stop
                callback(epoch, log)
            if stop:
                self.logger.info(f"{self.mnt_metric} did not improve for {self.early_stop} epochs: training stops.")
                break
        if self.history:  # TensorBoard's HPARAMS tab: this run's config against its final figures
            final = {k: v for k, v in self.history[-1].items() if isinstance(v, (int, float)) and k not in TIMING_KEYS}
            self.writer.add_hparams(self.config.config, final)
        return self.history

    def _write_csv(self):
        """metrics.csv beside the checkpoints; a failure to write it is a warning (info.log has the
        same figures), and a full disk then stops the run at the checkpoint with one line."""
        path = self.checkpoint_dir / "metrics.csv"
        try:
            write_csv(self.history, path)
        except OSError as e:
            self.logger.warning(f"{path}: not written ({e.strerror or e}); info.log holds the same figures")

    def _stop_diverged(self, where, what, value, epoch):
        saved = f"last.pth keeps epoch {epoch - 1}" if epoch > 1 else "no checkpoint was written"
        state = f"is {value}" if not math.isfinite(value) else "was not finite (here, or in another process)"
        raise DivergedError(
            f"{where}: the {what} {state} (diverged: lower optimizer.args.lr or check the data); "
            f"training stopped, {saved} in {self.checkpoint_dir}"
        )

    def _state(self, epoch):
        """The checkpoint of this moment (schema: checkpoint.schema); the subclass adds its entries."""
        entries = {
            "epoch": epoch,
            "state_dict": self.model.state_dict(),  # the subclass may put the evaluated (EMA) weights here
            "optimizer": self.optimizer.state_dict(),
            "monitor_best": self.mnt_best,
            "config": self.config.config,
            "history": self.history,
            "rng": get_rng_state(),
        }
        return make_checkpoint(**(entries | self._extra_state()))

    def _save_checkpoint(self, epoch, save_best=False, periodic=False):
        """This epoch's checkpoint by the run's save policy (checkpoint.saver.RunFiles.save). Under
        DDP only rank 0 writes (the replicas are equal)."""
        if distributed.is_main():
            self.files.save(self._state(epoch), epoch, save_best, periodic)

    def resume(self, ckpt, path):
        """Continue from the checkpoint loaded from `path` (load_checkpoint): weights, optimizer,
        scheduler, scaler, RNG, history."""
        for warning in check_resumable(ckpt, self._state(self.start_epoch - 1), path):
            self.logger.warning(warning)
        saved = saved_entries(ckpt)
        last = Path(path).parent / "last.pth"
        if Path(path).name != "last.pth" and last.is_file():
            later = saved_entries(load_checkpoint(last)).epoch or 0  # another file: the run's newest epoch
            if later > saved.epoch:
                self.logger.warning(
                    f"resuming epoch {saved.epoch} of this run: its last.pth (epoch {later}) and the checkpoints "
                    f"after epoch {saved.epoch} are overwritten as training goes on (copy the run to keep them)"
                )
        load_model_state(self.model, ckpt, path)
        self.optimizer.load_state_dict(saved.optimizer)
        self._load_extra_state(saved)
        self.start_epoch = saved.epoch + 1
        self.mnt_best = saved.monitor_best
        self.history = list(saved.history or [])
        set_rng_state(saved.rng)
        self.logger.info(f"Resumed from {path}: training continues at epoch {self.start_epoch}")
