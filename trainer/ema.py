"""Weight EMA (trainer.ema), on torch.optim.swa_utils.AveragedModel: an exponential moving average
of the weights and of the BatchNorm statistics, updated after every optimizer step."""

import torch
from torch.optim.swa_utils import AveragedModel


def ema_with_warmup(decay):
    """AveragedModel's multi_avg_fn for an EMA whose decay warms up as timm's does: after n updates
    it is min(decay, (1 + n) / (10 + n)). A fixed decay from the first step averages BatchNorm
    statistics of weights that still move fast, and the average then scores far below the raw
    weights early in training (docs/experiments.md has the figures)."""

    def update(averaged, current, num_averaged):
        n = float(num_averaged)
        weight = 1.0 - min(decay, (1.0 + n) / (10.0 + n))
        floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], weight)
        for a, c in zip(averaged, current):
            if not a.is_floating_point():  # counters such as num_batches_tracked: the model's own
                a.copy_(c)

    return update


def build_ema(model, cfg):
    """The average of `model` as trainer.ema says, or None when it is null. The copy starts equal
    to `model` (same memory format); its first update copies the weights again."""
    if not cfg:
        return None
    return AveragedModel(model, multi_avg_fn=ema_with_warmup(cfg["decay"]), use_buffers=True)


def ema_state(ema, model):
    """Checkpoint entries: the average as the state_dict every reader evaluates, the raw weights
    and the update count for a resume."""
    return {
        "state_dict": ema.module.state_dict(),
        "raw_state_dict": model.state_dict(),
        "ema_updates": ema.n_averaged.clone(),
    }


def load_ema_state(ema, model, saved, key="trainer.ema"):
    """Restore what ema_state saved, from the checkpoint's entries (checkpoint.schema.Saved), into `ema`
    (an AveragedModel of trainer.ema or trainer.swa, named by `key`); returns a warning for the log
    when the checkpoint and the config disagree about averaging (None when they agree)."""
    if saved.raw_state_dict is not None:
        model.load_state_dict(saved.raw_state_dict)  # training continues from the raw weights
        if ema is None:
            return (
                "the checkpoint averaged its weights (trainer.ema or trainer.swa) and this config does not: training "
                "continues from its raw weights without averaging"
            )
        ema.module.load_state_dict(saved.state_dict)
        ema.n_averaged.copy_(saved.ema_updates)
        return None
    if ema is not None:
        ema.module.load_state_dict(model.state_dict())
        ema.n_averaged.zero_()
        return f"the checkpoint has no weight average: {key} starts averaging from its weights"
    return None
