"""One training epoch and one evaluation pass, as plain functions (as in torchvision's reference
scripts): the Trainer, the benchmark, report.py and test.py all run these."""

import math

import torch
from tqdm import tqdm

from model.tta import tta_logits
from trainer.metric_tracker import MetricTracker
from trainer.precision import PRECISE
from trainer.progress import Progress
from utils import distributed
from utils.errors import NonFiniteLoss, TrainingError


class Limited:
    """The first `n` batches of a loader (all of them when n is None), with a length."""

    def __init__(self, loader, n):
        self.loader, self.n = loader, n
        self.dataset = getattr(loader, "dataset", None)

    def __len__(self):
        return len(self.loader) if self.n is None else min(self.n, len(self.loader))

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i == len(self):
                return
            yield batch


def to_device(images, target, device, channels_last):
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, target.to(device, non_blocking=True)


def finite_check_every(device):
    """How often (in batches) train_one_epoch checks the loss: every batch on the CPU, where the check
    costs nothing; every 50 on a GPU or under DDP, where it waits for the device or for the others."""
    return 1 if device.type == "cpu" and not distributed.is_distributed() else 50


def _check_finite(nonfinite, loss, first, last):
    """Raise NonFiniteLoss if any rank saw a non-finite loss in batches first..last (all ranks check
    at the same batches; the earlier checks found none)."""
    if distributed.all_reduce_sum(nonfinite.clone()).item():
        raise NonFiniteLoss(first, last, loss.item())


def forward_loss(model, criterion, images, target, precision, hooks=(), stored=()):
    """(output, loss) of one batch: each hook may change the batch first (the teacher sees it before
    resizing and mixing, in the hooks' order), then the first hook with a loss of its own replaces
    the criterion's. stored: the loader's third item, if it gives one (StepHook.stored_targets)."""
    for hook in hooks:
        for values in stored:
            hook.stored_targets(values)
    for hook in hooks:
        images, target = hook.batch(images, target)
    with precision.autocast():
        output = model(images)
        for hook in hooks:
            loss = hook.loss(criterion, output, target)
            if loss is not None:
                return output, loss
        return output, criterion(output, target)


def optimizer_steps(loader, accumulate=1):
    """Optimizer steps per epoch over `loader`: one per `accumulate` batches (trainer.accumulate)."""
    return math.ceil(len(loader) / accumulate)


def backward(loss, optimizer, scaler=None, first=True):
    """Add the gradients of `loss` (scaled under fp16); the first micro-batch of a step clears the old."""
    if first:
        optimizer.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler is not None else loss).backward()


def step(model, optimizer, scaler=None, clip_grad_norm=None):
    """One optimizer step on the gradients gathered, clipped to a total L2 norm of `clip_grad_norm`
    (of the true gradients: unscaled first under fp16) when given."""
    if scaler is not None and clip_grad_norm is not None:
        scaler.unscale_(optimizer)
    if clip_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def track(tracker, metric_ftns, output, target, loss):
    """Add one batch's loss and metrics to `tracker`, weighted by its number of images."""
    n = target.size(0)
    tracker.update("loss", loss.detach().float() * n, n)
    output = output.detach().float()
    for metric in metric_ftns:
        tracker.update(metric.__name__, metric(output, target), n)


def train_one_epoch(
    model,
    criterion,
    metric_ftns,
    optimizer,
    loader,
    device,
    *,
    precision=PRECISE,
    hooks=(),
    clip_grad_norm=None,
    accumulate=1,
    progress=None,
):
    """One pass over `loader`: exact per-image means of the loss and each metric, and the last lr.
    precision: a trainer.precision.Precision (autocast, fp16 gradient scaling, memory format);
    hooks: the run's per-step options (trainer.hooks.StepHook: distillation, resizing and mixing,
    the EMA, a per-batch lr schedule), in order; the metrics compare with the unmixed labels;
    clip_grad_norm: the total L2 norm of the gradients before each step (None: not clipped);
    accumulate: one step per this many batches (each loss divided by the group's size); progress:
    a trainer.progress.Progress (default: a bar on a terminal). NonFiniteLoss at the first check
    (every finite_check_every(device) batches, before that batch's step) that finds a NaN or
    infinite loss."""
    model.train()
    tracker = MetricTracker("loss", *[m.__name__ for m in metric_ftns])
    lr = optimizer.param_groups[0]["lr"]
    every, batches = finite_check_every(device), len(loader)
    nonfinite = torch.zeros((), device=device)  # counted on the device: no sync between checks
    progress = progress or Progress(batches, "train")
    try:
        for batch, (images, target, *stored) in enumerate(loader, 1):
            lr = optimizer.param_groups[0]["lr"]
            images, target = to_device(images, target, device, precision.channels_last)
            stored = [values.to(device, non_blocking=True) for values in stored]
            output, loss = forward_loss(model, criterion, images, target, precision, hooks, stored)
            nonfinite += ~torch.isfinite(loss.detach())
            if batch % every == 0 or batch == batches:
                _check_finite(nonfinite, loss, (batch - 1) // every * every + 1, batch)
            start = (batch - 1) // accumulate * accumulate  # batches before this step's group
            group = min(accumulate, batches - start)
            backward(loss / group if group > 1 else loss, optimizer, precision.scaler, first=batch - 1 == start)
            if batch - start == group:  # the group's last batch: one optimizer step
                step(model, optimizer, precision.scaler, clip_grad_norm)
                for hook in hooks:
                    hook.after_step(model)
            track(tracker, metric_ftns, output, target, loss)
            progress.update(target.size(0), loss)
    finally:  # on Ctrl-C too: the bar ends its line, so what is said next starts on a line of its own
        progress.close()
    if tracker.count("loss") == 0:
        raise TrainingError(f"{progress.desc}: the training loader gave no batch")
    return {**tracker.all_reduce().result(), "lr": lr}


@torch.no_grad()
def evaluate(
    model,
    criterion,
    metric_ftns,
    loader,
    device,
    *,
    precision=PRECISE,
    return_outputs=False,
    tta="none",
    desc="eval",
):
    """Exact per-image means of the loss and each metric over `loader`. With return_outputs, also
    the softmax probabilities (N, C) and the targets (N,), in the loader's order. tta: test-time
    augmentation (model/tta.py: "flip", "multicrop"), the mean of the logits of several views of
    each image (report it as its own figure, never as the plain accuracy); precision: as in
    train_one_epoch (its scaler is not used)."""
    model.eval()
    tracker = MetricTracker("loss", *[m.__name__ for m in metric_ftns])
    probs, targets = [], []
    for images, target, *_ in tqdm(loader, desc=desc, leave=False, disable=None):
        images, target = to_device(images, target, device, precision.channels_last)
        with precision.autocast():
            output = tta_logits(model, images, tta)
        output = output.float()
        track(tracker, metric_ftns, output, target, criterion(output, target))
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
