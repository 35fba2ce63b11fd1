"""Check a network against the spec (the `constraints` section of the config), from its trace
(model/trace.py) and from two measurements:

* the receptive field is also measured empirically: in a copy of the network with positive
  weights and identity BatchNorm, the input-gradient of one central output of the last
  convolution before pooling is non-zero exactly over its receptive field
  (`empirical_receptive_field`), which must equal the analytic one;
* global average pooling is an adaptive average pool to 1x1 whose output does not depend on the
  input size (`has_gap`).
"""

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from base.base_model import evaluating, num_params
from model.trace import (
    count_depthwise_separable,
    count_dilated,
    format_rf_table,
    has_maxpool,
    last_conv_index,
    receptive_field,
    trace,
)


def has_gap(model, layers, input_size=(1, 3, 32, 32)):
    """An adaptive average pool to 1x1 runs, and the output shape does not change with input size."""
    if not any(l.op == "gap" for l in layers):
        return False
    device = next(model.parameters()).device
    try:
        with evaluating(model):
            small = model(torch.zeros(input_size, device=device)).shape
            large = model(torch.zeros(*input_size[:2], input_size[2] * 2, input_size[3] * 2, device=device)).shape
    except RuntimeError:
        return False
    return small == large


class _GatesDetached(TorchFunctionMode):
    """Global pooling (adaptive pools, a mean over the spatial dimensions) passes no gradient: a
    squeeze-excite gate scales channels by a function of the whole image, but the receptive field
    is the convolutions' (the spec's GAP comes after the last convolution, so it is not affected)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        spatial_mean = name == "mean" and args[0].dim() == 4 and (out.dim() < 4 or out.shape[-2:] == (1, 1))
        if name.startswith(("adaptive_avg_pool", "adaptive_max_pool")) or spatial_mean:
            return out.detach() if isinstance(out, torch.Tensor) else out
        return out


def empirical_receptive_field(model, channels=3, start_size=32, max_size=1024):
    """Measure the receptive field of the last convolution before pooling: the side of the square
    of input pixels whose gradient is non-zero for one central output. The model is copied and
    made linear-positive (conv weights 1/fan-in, identity BatchNorm, all-ones input) so no ReLU
    hides a pixel, and global pools inside the network (squeeze-excite gates) pass no gradient; the
    input grows from `start_size` until the field no longer touches its border."""
    probe = copy.deepcopy(model).float().cpu().eval()
    for m in probe.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.constant_(m.weight, 1.0 / m.weight[0].numel())
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            if m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
    layers = trace(probe, (1, channels, start_size, start_size))
    target = layers[last_conv_index(layers)]
    conv = probe.get_submodule(target.name)
    size = start_size
    while True:
        captured = {}
        handle = conv.register_forward_hook(lambda mod, inp, out: captured.update(out=out))
        x = torch.ones(1, channels, size, size, requires_grad=True)
        try:
            with _GatesDetached():
                probe(x)
        finally:
            handle.remove()
        out = captured["out"]
        out[0, :, out.shape[2] // 2, out.shape[3] // 2].sum().backward()
        nonzero = x.grad[0].abs().sum(0) > 0
        rows = nonzero.any(1).nonzero().flatten()
        cols = nonzero.any(0).nonzero().flatten()
        if rows[0] > 0 and cols[0] > 0 and rows[-1] < size - 1 and cols[-1] < size - 1:
            return int(max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))
        if size >= max_size:
            raise ValueError(f"receptive field wider than {max_size} pixels")
        size *= 2


@dataclass
class Check:
    rule: str
    required: str
    actual: str
    ok: bool


def check_constraints(model, constraints, input_size=(1, 3, 32, 32)):
    """One Check per rule of the config's `constraints` section."""
    layers = trace(model, input_size)
    rf = receptive_field(layers)
    params = num_params(model)
    counted = f"{params:,}"
    dws = count_depthwise_separable(layers)
    dilated = count_dilated(layers)
    checks = [
        Check("max_params", f"< {constraints['max_params']:,}", counted, params < constraints["max_params"]),
        Check(
            "min_receptive_field",
            f">= {constraints['min_receptive_field']}",
            str(rf),
            rf >= constraints["min_receptive_field"],
        ),
        Check(
            "min_depthwise_separable",
            f">= {constraints['min_depthwise_separable']}",
            str(dws),
            dws >= constraints["min_depthwise_separable"],
        ),
        Check("min_dilated", f">= {constraints['min_dilated']}", str(dilated), dilated >= constraints["min_dilated"]),
    ]
    if constraints.get("require_gap"):
        gap = has_gap(model, layers, input_size)
        checks.append(Check("require_gap", "global average pooling", "yes" if gap else "no", gap))
    if constraints.get("forbid_maxpool"):
        mp = has_maxpool(layers)
        checks.append(Check("forbid_maxpool", "no max-pooling", "max-pooling found" if mp else "none", not mp))
    return checks


def format_checks(checks):
    return "\n".join(
        f"[{'PASS' if c.ok else 'FAIL'}] {c.rule:<24} required {c.required:<24} actual {c.actual}" for c in checks
    )


def layer_summary(model, input_size=(1, 3, 32, 32)):
    """torchinfo's table: every layer with its output shape and parameter count."""
    import torchinfo

    device = next(model.parameters()).device
    # eval mode and a zero input: the summary must not move BatchNorm statistics or draw random numbers
    stats = torchinfo.summary(
        model,
        input_data=torch.zeros(input_size, device=device),
        mode="eval",
        col_names=("output_size", "num_params"),
        depth=3,
        verbose=0,
        device=device,
        row_settings=("var_names",),
    )
    return str(stats)


def check_augmentations(entries, required):
    """One Check: every name in `required` (alternatives joined by "|") is the type of one of the
    training augmentations `entries` (the config's list)."""
    present = {e.get("type") for e in entries or [] if isinstance(e, dict)}
    missing = [name for name in required if not set(name.split("|")) & present]
    return Check(
        "required_augmentations",
        ", ".join(required) or "none",
        "missing " + ", ".join(missing) if missing else "all present",
        not missing,
    )


def describe(model, constraints, input_size=(1, 3, 32, 32), augmentations=None):
    """(text, failed checks): layer summary, receptive-field table and one line per constraint;
    with `augmentations` (the config's list), also the required-augmentations rule."""
    layers = trace(model, input_size)
    if not constraints:  # a config without a constraints section: nothing to check
        checks = []
    else:
        checks = check_constraints(model, constraints, input_size)
        if augmentations is not None and constraints.get("required_augmentations"):
            checks.append(check_augmentations(augmentations, constraints["required_augmentations"]))
    text = "\n\n".join(
        [
            layer_summary(model, input_size),
            "Receptive field (analytic; jump = input pixels between neighbouring inputs of the layer):\n"
            + format_rf_table(layers),
            f"Receptive field at the last convolution before pooling: {receptive_field(layers)}",
            "Constraints:\n" + format_checks(checks)
            if constraints
            else "Constraints: none (the config has no constraints section, so the network is not checked)",
        ]
    )
    return text, [c for c in checks if not c.ok]
