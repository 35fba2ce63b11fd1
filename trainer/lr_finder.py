"""Learning-rate range test (Smith, "Cyclical Learning Rates", 2017; the fastai / torch-lr-finder
recipe): train from scratch for a few batches while the learning rate grows exponentially, and see
where the loss falls fastest and where it blows up."""

import contextlib
import itertools
import math

import numpy as np

from trainer.loops import to_device


def lr_range_test(
    model,
    criterion,
    optimizer,
    loader,
    device,
    *,
    start_lr=1e-5,
    end_lr=10.0,
    num_steps=100,
    smoothing=0.05,
    diverge=4.0,
    autocast=contextlib.nullcontext,
    channels_last=False,
    progress=None,
):
    """One batch per learning rate, from start_lr to end_lr geometrically (num_steps values, the loader
    cycled if needed). Returns (lrs, smoothed losses); stops early once the smoothed loss exceeds
    `diverge` times its minimum or is not finite. progress: a trainer.progress.Progress (a bar on a
    terminal, a line every 30 s in a log file), or None."""
    model.train()
    lrs, losses, avg, best = [], [], 0.0, math.inf
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    try:
        for step, (images, target) in zip(range(num_steps), batches):
            lr = start_lr * (end_lr / start_lr) ** (step / max(1, num_steps - 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            images, target = to_device(images, target, device, channels_last)
            with autocast():
                loss = criterion(model(images), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            avg = smoothing * value + (1 - smoothing) * avg
            smoothed = avg / (1 - (1 - smoothing) ** (step + 1))  # bias-corrected exponential average
            lrs.append(lr)
            losses.append(smoothed)
            best = min(best, smoothed)
            if progress is not None:
                progress.update(len(target), loss)
            if not math.isfinite(smoothed) or smoothed > diverge * best:
                break
    finally:
        if progress is not None:
            progress.close()
    return lrs, losses


def suggest_lr(lrs, losses, skip_start=5, skip_end=3):
    """{'steepest': lr where the smoothed loss falls fastest (per log-lr), 'minimum': lr of the lowest
    loss, 'peak': the suggested OneCycle peak}. The peak is the minimum's lr (Smith's "largest lr at
    which the loss still falls"), not fastai's minimum / 10: on the JPEG CIFAR-10 data the test found
    its minimum at 0.085 while 65-epoch OneCycle runs train well at 0.15 and 5-epoch searches
    preferred 0.3 (docs/guide.md, "Tuning"); a tenth would be far too low. `steepest` is the cautious choice."""
    skip_start, skip_end = min(skip_start, len(lrs) // 4), min(skip_end, len(lrs) // 8)  # a short test skips less
    if len(lrs) < skip_start + skip_end + 3:
        raise ValueError(f"only {len(lrs)} steps recorded; run more steps (--steps) or start lower (--start_lr)")
    lr = np.array(lrs[skip_start : len(lrs) - skip_end])
    loss = np.array(losses[skip_start : len(losses) - skip_end])
    minimum = int(np.nanargmin(loss))
    slope = np.gradient(loss, np.log(lr))
    steepest = int(np.nanargmin(slope[: max(1, minimum)]))
    return {"steepest": float(lr[steepest]), "minimum": float(lr[minimum]), "peak": float(lr[minimum])}


def plot_lr_range(lrs, losses, suggestion, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    low, high = min(losses), max(losses[: max(1, len(losses) // 2)])
    ax.set_ylim(low - 0.05 * (high - low), high + 0.3 * (high - low))
    for key, style in (("steepest", ":"), ("minimum", "--")):
        label = f"{key} {suggestion[key]:.3g}" + (
            " (suggested OneCycle peak)" if suggestion[key] == suggestion["peak"] else ""
        )
        ax.axvline(suggestion[key], color="tab:red", ls=style, label=label)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
