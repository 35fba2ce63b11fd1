import contextlib

import torch
from tqdm import tqdm

from base import BaseTrainer
from logger.format import format_log
from trainer.schedulers import SchedulerStepper, check_same_length
from utils import MetricTracker, distributed
from utils.errors import CheckpointError


def cpu_has_native_bf16(cpuinfo="/proc/cpuinfo"):
    """True when the CPU computes bf16 natively (AVX-512 BF16 or AMX flags). Without them oneDNN
    emulates bf16, which measured slower than fp32 (see the README's speed table)."""
    try:
        flags = set(open(cpuinfo).read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_amp(device, amp):
    """(autocast dtype or None, one line saying why) for the config's `trainer.amp` on `device`.
    auto: bf16 on CUDA and on CPUs with native bf16, fp32 elsewhere."""
    if amp == "off":
        return None, "fp32 (trainer.amp is off)"
    if device.type == "cuda":
        if amp == "fp16":
            return torch.float16, "fp16 autocast with gradient scaling on CUDA"
        return torch.bfloat16, "bf16 autocast on CUDA"
    if device.type == "cpu":
        if amp == "fp16":
            return None, "fp32: trainer.amp fp16 applies on CUDA only"
        if amp == "bf16":
            return torch.bfloat16, "bf16 autocast on the CPU, as trainer.amp asks"
        if cpu_has_native_bf16():
            return torch.bfloat16, "bf16 autocast: this CPU has native bf16 (AVX-512 BF16 or AMX)"
        return None, "fp32: this CPU has no native bf16 (no AVX-512 BF16 or AMX), where bf16 is slower"
    return None, f"fp32: mixed precision is not used on {device.type}"


def autocast_for(device, amp):
    """A context factory: autocast in the precision that `resolve_amp` picks, or nothing."""
    return _autocast(device, resolve_amp(device, amp)[0])


def _autocast(device, dtype):
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def to_device(images, target, device, channels_last):
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, target.to(device, non_blocking=True)


def train_one_epoch(
    model,
    criterion,
    metric_ftns,
    optimizer,
    loader,
    device,
    *,
    batch_scheduler=None,
    scaler=None,
    autocast=contextlib.nullcontext,
    channels_last=False,
    desc="train",
):
    """One pass over `loader`; returns exact per-image means of the loss and each metric, and the
    learning rate of the last batch."""
    model.train()
    tracker = MetricTracker("loss", *[m.__name__ for m in metric_ftns])
    lr = optimizer.param_groups[0]["lr"]
    for images, target in tqdm(loader, desc=desc, leave=False, disable=None):
        lr = optimizer.param_groups[0]["lr"]
        images, target = to_device(images, target, device, channels_last)
        with autocast():
            output = model(images)
            loss = criterion(output, target)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if batch_scheduler is not None:
            batch_scheduler.step()
        n = target.size(0)
        tracker.update("loss", loss.detach().float() * n, n)
        output = output.detach().float()
        for metric in metric_ftns:
            tracker.update(metric.__name__, metric(output, target), n)
    return {**tracker.all_reduce().result(), "lr": lr}


@torch.no_grad()
def evaluate(
    model,
    criterion,
    metric_ftns,
    loader,
    device,
    *,
    autocast=contextlib.nullcontext,
    channels_last=False,
    return_outputs=False,
    flip_tta=False,
    desc="eval",
):
    """Exact per-image means of the loss and each metric over `loader`. With return_outputs, also
    the softmax probabilities (N, C) and the targets (N,), in the loader's order. flip_tta: the
    output is the mean of the logits of each image and of its mirror image (test-time
    augmentation: report it as its own figure, never as the plain accuracy)."""
    model.eval()
    tracker = MetricTracker("loss", *[m.__name__ for m in metric_ftns])
    probs, targets = [], []
    for images, target in tqdm(loader, desc=desc, leave=False, disable=None):
        images, target = to_device(images, target, device, channels_last)
        with autocast():
            output = model(images)
            if flip_tta:
                output = (output + model(images.flip(3))) / 2
        output = output.float()
        n = target.size(0)
        tracker.update("loss", criterion(output, target).float() * n, n)
        for metric in metric_ftns:
            tracker.update(metric.__name__, metric(output, target), n)
        if return_outputs:
            probs.append(output.softmax(dim=1))
            targets.append(target)
    result = tracker.all_reduce().result()
    if return_outputs:
        return (result, *_gather_in_order(torch.cat(probs).cpu(), torch.cat(targets).cpu()))
    return result


def _gather_in_order(probs, targets):
    """Under DDP each rank evaluated images rank, rank + world, ... (ShardSampler): put every rank's
    outputs back in the loader's order. A no-op in a single process."""
    if not distributed.is_distributed():
        return probs, targets
    parts = distributed.all_gather_objects((probs, targets))
    world, n = len(parts), sum(len(t) for _, t in parts)
    all_probs, all_targets = torch.empty(n, probs.shape[1]), torch.empty(n, dtype=targets.dtype)
    for r, (p, t) in enumerate(parts):
        all_probs[r::world], all_targets[r::world] = p, t
    return all_probs, all_targets


class Trainer(BaseTrainer):
    """Trains a classifier on `data_loader`, validating on `valid_data_loader` every epoch."""

    def __init__(
        self,
        model,
        criterion,
        metric_ftns,
        optimizer,
        config,
        device,
        data_loader,
        valid_data_loader=None,
        lr_scheduler=None,
        epoch_callbacks=(),
    ):
        super().__init__(model, criterion, metric_ftns, optimizer, config, epoch_callbacks)
        cfg = config["trainer"]
        self.device = device
        self.data_loader = data_loader
        self.valid_data_loader = valid_data_loader
        self.lr_scheduler = lr_scheduler
        self.stepper = SchedulerStepper(lr_scheduler, config["trainer"]["monitor"])
        self.last_val_outputs = None  # (probabilities, targets) of the latest validation
        self.channels_last = cfg["channels_last"]
        dtype, why = resolve_amp(device, cfg["amp"])
        self.autocast = _autocast(device, dtype)
        self.scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        self.logger.info(f"Precision: {why}; memory format: {'channels_last' if self.channels_last else 'contiguous'}")
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        # DDP: train through the wrapper (it all-reduces gradients); evaluate and save the plain model,
        # so checkpoints load in a single process and evaluation needs no collective per batch
        self.train_model = self.model
        if distributed.is_distributed():
            self.train_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None
            )
            self.logger.info(
                f"DistributedDataParallel over {distributed.world_size()} processes "
                f"({torch.distributed.get_backend()}); global batch {data_loader.batch_sampler.batch_size}, "
                f"{data_loader.batch_sampler.batch_size // distributed.world_size()} per process"
            )

    def train(self):
        history = super().train()
        self._check_replicas()
        if self.valid_data_loader is not None and history:
            tta = self._validate(flip_tta=True, desc="flip TTA")
            self.logger.info(
                "Flip test-time augmentation (its own figure; the epoch log above is the plain one):\n"
                + format_log({f"val_{k}_flip_tta": v for k, v in tta.items()})
            )
        return history

    def _validate(self, **options):
        """The plain model on the validation loader (under DDP every rank its shard; exact totals)."""
        return evaluate(
            self.model,
            self.criterion,
            self.metric_ftns,
            self.valid_data_loader,
            self.device,
            autocast=self.autocast,
            channels_last=self.channels_last,
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

    def _train_epoch(self, epoch):
        log = train_one_epoch(
            self.train_model,
            self.criterion,
            self.metric_ftns,
            self.optimizer,
            self.data_loader,
            self.device,
            batch_scheduler=self.stepper.batch_scheduler,
            scaler=self.scaler,
            autocast=self.autocast,
            channels_last=self.channels_last,
            desc=f"epoch {epoch}/{self.epochs}",
        )
        lr = log.pop("lr")
        distributed.average_buffers(self.model)  # DDP: one set of BatchNorm statistics for all ranks
        if self.valid_data_loader is not None:
            val, *self.last_val_outputs = self._validate(return_outputs=True, desc="validation")
            log.update({f"val_{k}": v for k, v in val.items()})
        log["lr"] = lr
        self.stepper.after_epoch(log)
        return log

    def _extra_state(self):
        return {
            "lr_scheduler": self.lr_scheduler.state_dict() if self.lr_scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "data_stats": self.data_loader.stats,
            "classes": list(self.data_loader.classes),
            "world_size": distributed.world_size(),
            "image_size": list(self.data_loader.image_size),
        }

    def _load_extra_state(self, ckpt):
        was, now = ckpt.get("world_size", 1), distributed.world_size()
        if was != now:
            how = (
                "python train.py"
                if was == 1
                else f"torchrun --nproc_per_node={was} train.py (or as many processes over several machines)"
            )
            raise CheckpointError(
                f"{self.config.resume}: trained with {was} process(es), this run has {now}; the data order "
                f"and the batch split depend on it: resume with {how}"
            )
        if self.lr_scheduler is not None and ckpt.get("lr_scheduler") is not None:
            check_same_length(self.lr_scheduler, ckpt["lr_scheduler"], self.epochs, len(self.data_loader))
            self.lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
        if self.scaler is not None and ckpt.get("scaler") is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        if ckpt.get("data_stats") and ckpt["data_stats"] != self.data_loader.stats:
            self.logger.warning(
                "the data's mean/std differ from the checkpoint's: was the data or the validation split changed?"
            )
        if ckpt.get("classes") and list(ckpt["classes"]) != list(self.data_loader.classes):
            raise CheckpointError(
                f"{self.config.resume}: trained on classes {ckpt['classes']}, the data holds {self.data_loader.classes}"
            )
