"""Channels that carry nothing: a BatchNorm whose running variance is (almost) zero sees a constant
input channel, so the convolution feeding it (or the ReLU before that) never fires for any image.
Parameters and CPU time are spent on such channels for no output."""

import torch.nn as nn

DEAD_VARIANCE = 1e-6


def dead_channels(model, threshold=DEAD_VARIANCE):
    """[(BatchNorm name, dead channels, channels)] for every BatchNorm of `model`, in order."""
    return [
        (name, int((module.running_var < threshold).sum()), module.num_features)
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_var is not None
    ]


def format_dead_channels(rows):
    """One line per BatchNorm with dead channels, and the total."""
    dead = [(name, d, n) for name, d, n in rows if d]
    total, channels = sum(d for _, d, _ in rows), sum(n for _, _, n in rows)
    lines = [
        f"{name:24s} {d:4d} of {n:4d} input channels constant (running variance < {DEAD_VARIANCE:g})"
        for name, d, n in dead
    ]
    return "\n".join([*lines, f"dead channels: {total} of {channels} normalised channels"])
