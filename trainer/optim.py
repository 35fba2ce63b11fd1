"""The optimizer of a run (config "optimizer") over the network's parameters, in two groups when
trainer.norm asks for it: the normalisation layers' parameters (BatchNorm scales and biases) with
their own learning-rate multiplier and weight decay, and every other weight. trainer.norm also sets
BatchNorm's momentum and can freeze its scales (airbench's recipe: biases at 64x the learning rate,
scales fixed at 1, momentum 0.4 in PyTorch's sense)."""

import torch.nn as nn

NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def apply_norm_settings(model, norm):
    """BatchNorm momentum and frozen scales as trainer.norm says (None: PyTorch's defaults)."""
    if not norm:
        return
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and norm["momentum"] is not None:
            module.momentum = norm["momentum"]
        if isinstance(module, NORM_LAYERS) and norm["freeze_scale"] and module.weight is not None:
            module.weight.requires_grad_(False)


def parameter_groups(model, norm):
    """The optimizer's parameter groups: one, or the trainable normalisation parameters apart
    (key lr_scale: their learning rate is the schedule's times it)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not norm:
        return trainable
    in_norm = {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)}
    normal = [p for p in trainable if id(p) in in_norm]
    group = {"params": normal, "lr_scale": norm["lr_scale"]}
    if norm["weight_decay"] is not None:
        group["weight_decay"] = norm["weight_decay"]
    others = [p for p in trainable if id(p) not in in_norm]
    return [g for g in ({"params": others}, group) if g["params"]]


def build_optimizer(config, model):
    """config "optimizer" over `model` (trainer.norm applied first); each group starts at the
    optimizer's lr times its lr_scale."""
    norm = config["trainer"].get("norm")
    apply_norm_settings(model, norm)
    optimizer = config.init_obj("optimizer", parameter_groups(model, norm))
    for group in optimizer.param_groups:
        group.setdefault("lr_scale", 1.0)
        group["lr"] *= group["lr_scale"]
    return optimizer


def group_lrs(optimizer, lr):
    """`lr` for each of the optimizer's groups (times its lr_scale): one number with a single group."""
    scaled = [lr * group.get("lr_scale", 1.0) for group in optimizer.param_groups]
    return scaled[0] if len(scaled) == 1 else scaled
