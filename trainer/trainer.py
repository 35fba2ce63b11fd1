import time

import torch

from base import BaseTrainer
from base.base_data_loader import close_workers
from config.networks import load_teacher
from config.schedules import schedule_epochs, swa_start
from logger import attach_run_log
from logger.format import format_log
from logger.keys import EPOCH_TIME, IMAGE_SIZE, LR, describe_duration, training_seconds, val_key
from logger.keys import tta as log_tta
from logger.run_report import write_final_report
from model.tta import LABELS
from trainer.batch_tricks import BatchTricks
from trainer.distill import Distiller
from trainer.ema import build_ema, ema_state, load_ema_state
from trainer.hooks import EmaUpdate, ScheduleStep
from trainer.loops import Limited, evaluate, train_one_epoch
from trainer.precision import Precision
from trainer.progress import Progress
from trainer.schedulers import SchedulerStepper
from trainer.swa import build_swa, holds_lr, swa_update
from utils import distributed


class Trainer(BaseTrainer):
    """Trains a classifier on `data_loader`, validating on `valid_data_loader` every epoch."""

    def __init__(
        self,
        model,
        criterion,
        metric_ftns,
        optimizer,
        config,
        files,
        device,
        data_loader,
        valid_data_loader=None,
        lr_scheduler=None,
        epoch_callbacks=(),
    ):
        super().__init__(model, criterion, metric_ftns, optimizer, config, files, epoch_callbacks)
        cfg = config["trainer"]
        self.device = device
        self.data_loader = data_loader
        self.valid_data_loader = valid_data_loader
        self.lr_scheduler = lr_scheduler
        self.stepper = SchedulerStepper(lr_scheduler, config.monitor)
        self.last_val_outputs = None  # (probabilities, targets) of the latest validation
        self.epoch_seconds = []  # (training, validation) wall seconds of each epoch this process ran
        self.limit_batches = cfg["limit_batches"]  # None: every batch of each epoch
        self.precision, why = Precision.of_run(device, cfg["amp"], cfg["channels_last"])
        self.logger.info(
            f"Precision: {why}; memory format: {'channels_last' if cfg['channels_last'] else 'contiguous'}"
        )
        if self.precision.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.ema = build_ema(self.model, cfg["ema"])
        self.swa, self.swa_cfg, self.swa_start = build_swa(self.model, cfg["swa"]), cfg["swa"], swa_start(cfg)
        self.average = self.ema if self.ema is not None else self.swa  # at most one (trainer/swa.py checks)
        self.logger.info(f"Weights evaluated and saved: {self._evaluated_weights(cfg)}")
        self.distiller, self.teacher_sha256 = self._distiller(cfg, data_loader, device)
        self.tricks = BatchTricks.from_config(
            cfg, len(data_loader.classes), data_loader.image_size, schedule_epochs(cfg)
        )
        self.train_model = self._training_model(device, data_loader)

    def _distiller(self, cfg, data_loader, device):
        """(the Distiller of trainer.distill, the teacher file's sha256), or (None, None)."""
        teacher = load_teacher(cfg)
        if teacher is None:
            return None, None
        trained, sha256 = teacher
        distiller = Distiller.from_config(
            cfg["distill"], trained, data_loader, device, self.precision, self.config["data_loader"]["args"]
        )
        if cfg["distill"]["views"]:
            distiller.fix_views(data_loader, cfg["distill"]["views"], cfg["save_dir"], sha256, device)
        self.logger.info(
            f"Distilling from {cfg['distill']['teacher']} (sha256 {sha256[:12]}...): alpha "
            f"{cfg['distill']['alpha']}, temperature {cfg['distill']['temperature']}, teacher TTA "
            f"{cfg['distill']['tta']}; the training loss logged is the distillation loss"
        )
        return distiller, sha256

    def _training_model(self, device, data_loader):
        """The model that trains: under DDP the wrapper (it all-reduces gradients); validation and the
        checkpoints use the plain model, so checkpoints load in a single process and evaluation needs
        no collective per batch."""
        if not distributed.is_distributed():
            return self.model
        self.logger.info(
            f"DistributedDataParallel over {distributed.world_size()} processes "
            f"({torch.distributed.get_backend()}); global batch {data_loader.batch_sampler.batch_size}, "
            f"{data_loader.batch_sampler.batch_size // distributed.world_size()} per process"
        )
        return torch.nn.parallel.DistributedDataParallel(
            self.model, device_ids=[device.index] if device.type == "cuda" else None
        )

    def _evaluated_weights(self, cfg):
        """Which weights validation, checkpoints and the scripts use, as a sentence for the log."""
        if self.ema is not None:
            return (
                f"the EMA of the weights (decay {cfg['ema']['decay']}; the raw weights are kept in last.pth for resume)"
            )
        if self.swa is not None:
            start = self.swa_start
            return (
                f"{f'the trained weights until epoch {start - 1}, then ' if start > 1 else ''}the average of the "
                f"weights at the end of each epoch from epoch {start} on (SWA; the raw weights are kept in last.pth "
                "for resume)"
            )
        return "the trained weights (no averaging)"

    def train(self):
        """Open the run folder (rank 0), train every epoch left, then the TTA figures; a finished
        checkpoint trains nothing and makes no folder."""
        self.trained_now = self.start_epoch <= self.epochs
        if not self.trained_now:
            self.logger.info(
                f"Nothing to train: {self.files.resume} has finished all {self.epochs} epochs "
                "(test.py, report.py and export.py take it as it is)"
            )
            return self.history
        failed = True
        try:
            if distributed.is_main():
                attach_run_log(self.files.open(self.config.config, self.device))
            self._log_data()
            history, failed = super().train(), False
        finally:
            if distributed.is_main():
                self.files.close(failed)
        total, timed = training_seconds(history)
        if timed:
            self.logger.info(
                f"Training time: {describe_duration(total, timed)} "
                f"({total / timed:.1f} s per epoch, validation included)"
            )
        self._check_replicas()
        self.tta_results = {}  # {"flip": {metric: value}, ...}, for the report
        if self.valid_data_loader is not None and history:
            for kind in ("flip", "multicrop"):
                tta = self.tta_results[kind] = self._validate(tta=kind, desc=f"{kind} TTA")
                self.logger.info(
                    f"{LABELS[kind]} test-time augmentation (its own figure; the epoch log above is the plain one):\n"
                    + format_log({val_key(log_tta(k, kind)): v for k, v in tta.items()})
                )
            if self.averaging:
                raw = self._validate(model=self.model, desc="raw weights")
                self.logger.info(
                    f"The raw (not averaged) weights, for comparison with the {'EMA' if self.ema else 'SWA'} above:\n"
                    + format_log({val_key(f"{k}_raw"): v for k, v in raw.items()})
                )
        return history

    def _log_data(self):
        loader, valid = self.data_loader, self.valid_data_loader
        self.logger.info(
            f"Data: {len(loader.dataset)} training images, {len(valid.dataset) if valid else 0} {loader.valid_name} "
            f"images; mean {loader.stats['mean']} std {loader.stats['std']}; device {self.device}; "
            f"run folder {self.files.run_dir}"
        )

    def report(self, summary, mistake_cams=None):
        """The end-of-run report in the run folder (logger/run_report.py), when this process trained."""
        if self.trained_now:
            write_final_report(
                self.files.run_dir,
                self.config.config,
                self.history,
                self.last_val_outputs,
                self.data_loader,
                self.valid_data_loader,
                summary,
                mistake_cams=mistake_cams,
                tta=getattr(self, "tta_results", None),
            )

    def close_loaders(self):
        for loader in (self.data_loader, self.valid_data_loader):
            close_workers(loader)

    @property
    def averaging(self):
        """Whether the evaluated weights are an average (EMA, or SWA once its first epoch is in)."""
        return self.average is not None and int(self.average.n_averaged) > 0

    @property
    def eval_model(self):
        """The weights validation, checkpoints and the report use: the average once there is one."""
        return self.average.module if self.averaging else self.model

    def _validate(self, model=None, **options):
        """The evaluated model (the EMA when on; not the DDP wrapper) on the validation loader (under
        DDP every rank its shard; exact totals)."""
        return evaluate(
            model if model is not None else self.eval_model,
            self.criterion,
            self.metric_ftns,
            Limited(self.valid_data_loader, self.limit_batches),
            self.device,
            precision=self.precision,
            **options,
        )

    def _check_replicas(self):
        """Under DDP: the ranks must end with equal weights; a difference is a bug, not a user error."""
        if not distributed.is_distributed():
            return
        sums = distributed.all_gather_objects(distributed.weights_checksum(self.model))
        if len(set(sums)) != 1:
            raise RuntimeError(f"DDP replicas diverged: weight checksums per rank {sums}")
        self.logger.info(f"Weights identical on all {len(sums)} processes (checksum {sums[0]:.6f})")

    def step_hooks(self, schedule=True):
        """This run's per-step options in the order they act on a batch: the teacher sees it first,
        then resizing and mixing change it; after each step the EMA, then the per-batch lr schedule
        (schedule=False: the lr is held, as in SWA's averaged epochs)."""
        batch_scheduler = self.stepper.batch_scheduler if schedule else None
        hooks = [
            self.distiller,
            self.tricks,
            EmaUpdate(self.ema) if self.ema is not None else None,
            ScheduleStep(batch_scheduler) if batch_scheduler is not None else None,
        ]
        return [hook for hook in hooks if hook is not None]

    def train_batches(self, loader, desc, epochs_after=0, schedule=True):
        """One pass of train_one_epoch over `loader` with everything this run steps: the model, the
        optimizer, precision and the step hooks; progress on screen (or a line every 30 s in a log),
        with the time left for `epochs_after` more."""
        loader = Limited(loader, self.limit_batches)
        seconds = [a + b for a, b in self.epoch_seconds]
        progress = Progress(
            len(loader),
            desc,
            epochs_after=epochs_after,
            epoch_seconds=sum(seconds) / len(seconds) if seconds else None,
            logger=self.logger,
        )
        return train_one_epoch(
            self.train_model,
            self.criterion,
            self.metric_ftns,
            self.optimizer,
            loader,
            self.device,
            precision=self.precision,
            hooks=self.step_hooks(schedule),
            clip_grad_norm=self.config.trainer.clip_grad_norm,
            accumulate=self.config.trainer.accumulate,
            progress=progress,
        )

    def _train_epoch(self, epoch):
        start = self._clock()
        if hasattr(self.data_loader.batch_sampler, "set_epoch"):  # what the data draws by epoch (the alternating flip)
            self.data_loader.batch_sampler.set_epoch(epoch)
        schedule = {k: v for hook in self.step_hooks() for k, v in hook.start_epoch(epoch).items()}
        constant_lr = holds_lr(self.config["trainer"], epoch)
        if constant_lr is not None:  # an averaged epoch of trainer.swa with lr: the schedule has ended
            for group in self.optimizer.param_groups:
                group["lr"] = constant_lr
        log = self.train_batches(
            self.data_loader,
            f"epoch {epoch}/{self.epochs}",
            epochs_after=self.epochs - epoch,
            schedule=constant_lr is None,
        )
        lr = log.pop("lr")
        distributed.average_buffers(self.model)  # DDP: one set of BatchNorm statistics for all ranks
        if self.swa is not None and epoch >= self.swa_start:
            swa_update(
                self.swa,
                self.model,
                self.data_loader,
                self.device,
                self.precision.channels_last,
                self.swa_cfg["bn_batches"],
            )
        if self.averaging:
            distributed.average_buffers(self.average.module)
        middle = self._clock()
        if self.valid_data_loader is not None:
            val, *self.last_val_outputs = self._validate(return_outputs=True, desc="validation")
            log.update({val_key(k): v for k, v in val.items()})
        self.epoch_seconds.append((middle - start, self._clock() - middle))
        log[LR] = lr
        log.update(schedule)
        log[EPOCH_TIME] = round(sum(self.epoch_seconds[-1]), 1)
        self._note_small_images(epoch, log)
        if constant_lr is None:
            self.stepper.after_epoch(log)
        return log

    def _note_small_images(self, epoch, log):
        """Once per process: while progressive resizing trains on smaller images, validation runs at
        full size, where the network has not learnt yet to see; a low val_accuracy then is expected."""
        size, full = log.get(IMAGE_SIZE), self.data_loader.image_size[0]
        if size is not None and size < full and not getattr(self, "_said_small", False):
            self._said_small = True
            self.logger.info(
                f"note: epoch {epoch} trains on {size}-px images (progressive resizing) and validates at {full} px, "
                "so val_accuracy can sit far below accuracy until the training images reach full size"
            )

    def _clock(self):
        """Wall time once the device has finished its queued work."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _extra_state(self):
        return {
            "lr_scheduler": self.lr_scheduler.state_dict() if self.lr_scheduler is not None else None,
            "scaler": self.precision.scaler.state_dict() if self.precision.scaler is not None else None,
            "data_stats": self.data_loader.stats,
            "classes": list(self.data_loader.classes),
            "world_size": distributed.world_size(),
            "image_size": list(self.data_loader.image_size),
            **(ema_state(self.average, self.model) if self.averaging else {}),
            **({"teacher_sha256": self.teacher_sha256} if self.teacher_sha256 is not None else {}),
        }

    def _load_extra_state(self, saved):
        if self.swa is not None and saved.raw_state_dict is None and (saved.epoch or 0) < self.swa_start:
            warning = None  # SWA has not started yet: nothing to restore
        else:
            warning = load_ema_state(self.average, self.model, saved, "trainer.ema" if self.ema else "trainer.swa")
        if warning:
            self.logger.warning(warning)
        if self.lr_scheduler is not None and saved.lr_scheduler is not None:
            self.lr_scheduler.load_state_dict(saved.lr_scheduler)
        if self.precision.scaler is not None and saved.scaler is not None:
            self.precision.scaler.load_state_dict(saved.scaler)
