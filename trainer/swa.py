"""Stochastic weight averaging (trainer.swa; Izmailov et al., 2018), on torch.optim.swa_utils: from
epoch `start` on, the weights at the end of each epoch join an equal-weight average, and the average's
BatchNorm statistics are recomputed on training batches (the average of the weights is a network whose
activations no earlier set of statistics describes). The schedule stays the config's."""

from itertools import islice

import torch
from torch.optim.swa_utils import AveragedModel, update_bn

from config.schedules import swa_start


def holds_lr(trainer_cfg, epoch):
    """The constant learning rate of `epoch` when it is an averaged epoch of a trainer.swa with lr, else None."""
    swa = trainer_cfg.get("swa")
    return swa["lr"] if swa and swa.get("lr") and epoch >= swa_start(trainer_cfg) else None


def build_swa(model, cfg):
    """An empty equal-weight average of `model` (same memory format), or None when trainer.swa is
    null; its first update copies the weights."""
    if not cfg:
        return None
    return AveragedModel(model)


def recompute_bn(module, loader, device, channels_last=False, batches=None):
    """Replace `module`'s BatchNorm statistics by those of its activations on the first `batches`
    batches of `loader` (None: all), at the loader's (full) image size."""

    def images():
        for batch, *_ in islice(loader, batches):  # a third item: fixed views' stored logits
            batch = batch.to(device, non_blocking=True)
            yield batch.contiguous(memory_format=torch.channels_last) if channels_last else batch

    update_bn(images(), module)


def swa_update(swa, model, loader, device, channels_last=False, bn_batches=None):
    """Add `model`'s weights to the average, then recompute the average's BatchNorm statistics on the
    first `bn_batches` batches of `loader` (None: all)."""
    swa.update_parameters(model)
    recompute_bn(swa.module, loader, device, channels_last, bn_batches)
