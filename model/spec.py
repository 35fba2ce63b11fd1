"""Check a network against the spec (the `constraints` section of the config) from what its
forward pass really runs, not from what its code or its names claim.

A forward pass under a TorchFunctionMode records every conv2d and pooling call in execution order
with its kernel, stride, dilation and groups. From that trace:

* the receptive field is computed analytically, layer by layer (jump and RF columns), up to the
  last convolution before global pooling; this treats the network as a chain, which holds for
  plain and residual networks (a skip adds no receptive field);
* the same receptive field is measured empirically: in a copy of the network with positive
  weights and identity BatchNorm, the input-gradient of one central output of that last
  convolution is non-zero exactly over its receptive field (`empirical_receptive_field`);
* a depthwise-separable convolution is a depthwise kxk conv (groups == in_channels > 1, k > 1)
  whose output goes straight into a 1x1 conv; a dilated convolution has k > 1 and dilation > 1;
  global average pooling is an adaptive average pool to 1x1 whose output does not depend on the
  input size; any max-pool call, adaptive or not, counts as max-pooling.
"""

import copy
import inspect
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from base.base_model import num_params
from utils.errors import SpecError


@dataclass
class Layer:
    name: str  # module that owns the weight (convs) or the op's name (pools)
    op: str  # conv | depthwise | pointwise | maxpool | avgpool | gap | adaptive_maxpool
    kernel: int
    stride: int
    dilation: int
    groups: int = 1
    in_channels: int = 0
    out_channels: int = 0
    jump: int = 1  # distance in input pixels between neighbouring inputs of this layer
    rf: int = 1  # receptive field of this layer's output, in input pixels


def _first(v):
    return v[0] if isinstance(v, (tuple, list)) else v


_SIGS = {
    "conv2d": inspect.Signature.from_callable(
        lambda input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1: None
    ),
    "max_pool2d": inspect.Signature.from_callable(
        lambda input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False: None
    ),
    "avg_pool2d": inspect.Signature.from_callable(
        lambda input,
        kernel_size,
        stride=None,
        padding=0,
        ceil_mode=False,
        count_include_pad=True,  # noqa: E501
        divisor_override=None: None
    ),
    "adaptive_avg_pool2d": inspect.Signature.from_callable(lambda input, output_size: None),
    "adaptive_max_pool2d": inspect.Signature.from_callable(lambda input, output_size, return_indices=False: None),
}


class _Recorder(TorchFunctionMode):
    def __init__(self, weight_names):
        super().__init__()
        self.weight_names = weight_names
        self.calls = []  # (kind, bound arguments, output shape)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        kind = next((k for k in _SIGS if name.lstrip("_") == k or name.lstrip("_") == k + "_with_indices"), None)
        if kind is not None:
            bound = _SIGS[kind].bind(*args, **kwargs)
            bound.apply_defaults()
            shape = tuple((out[0] if isinstance(out, tuple) else out).shape)
            self.calls.append((kind, dict(bound.arguments), shape))
        return out


def trace(model, input_size=(1, 3, 32, 32)):
    """Run one forward pass (eval mode, no grad) and return the recorded layers with jump and RF."""
    weight_names = {id(p): n.rsplit(".", 1)[0] for n, p in model.named_parameters()}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    recorder = _Recorder(weight_names)
    try:
        with torch.no_grad(), recorder:
            model(torch.zeros(input_size, device=device))
    finally:
        model.train(was_training)
    layers = []
    for kind, a, shape in recorder.calls:
        if kind == "conv2d":
            w = a["weight"]
            out_ch, in_per_group, k = w.shape[0], w.shape[1], w.shape[-1]
            groups = a["groups"]
            in_ch = in_per_group * groups
            op = (
                "depthwise"
                if groups == in_ch and in_ch > 1 and k > 1
                else "pointwise"
                if k == 1 and groups == 1
                else "conv"
            )
            layers.append(
                Layer(
                    weight_names.get(id(w), "conv2d"),
                    op,
                    k,
                    _first(a["stride"]),
                    _first(a["dilation"]),
                    groups,
                    in_ch,
                    out_ch,
                )
            )
        elif kind in ("max_pool2d", "avg_pool2d"):
            k = _first(a["kernel_size"])
            stride = _first(a["stride"]) or k
            dilation = _first(a.get("dilation", 1))
            layers.append(Layer(kind, "maxpool" if kind == "max_pool2d" else "avgpool", k, stride, dilation))
        else:
            out_size = a["output_size"]
            is_global = all(s == 1 for s in (out_size if isinstance(out_size, (tuple, list)) else (out_size,)))
            op = "gap" if kind == "adaptive_avg_pool2d" and is_global else kind.replace("_pool2d", "pool")
            layers.append(Layer(kind, op, 0, 0, 1, out_channels=shape[1] if len(shape) > 1 else 0))
    jump, rf = 1, 1
    for layer in layers:
        if layer.kernel:  # convs and fixed-size pools; adaptive pools end the spatial chain
            layer.jump = jump
            rf += layer.dilation * (layer.kernel - 1) * jump
            jump *= layer.stride
        layer.rf = rf
    return layers


def last_conv_index(layers):
    """Index of the last convolution before the first global/adaptive pooling (or overall)."""
    end = next((i for i, l in enumerate(layers) if l.kernel == 0), len(layers))
    convs = [i for i in range(end) if layers[i].op in ("conv", "depthwise", "pointwise")]
    if not convs:
        raise SpecError("arch: the model runs no convolution before its pooling")
    return convs[-1]


def receptive_field(layers):
    return layers[last_conv_index(layers)].rf


def count_depthwise_separable(layers):
    return sum(
        1
        for a, b in zip(layers, layers[1:])
        if a.op == "depthwise" and b.op == "pointwise" and b.in_channels == a.out_channels
    )


def count_dilated(layers):
    return sum(1 for l in layers if l.op in ("conv", "depthwise") and l.dilation > 1 and l.kernel > 1)


def has_maxpool(layers):
    return any(l.op in ("maxpool", "adaptive_maxpool") for l in layers)


def has_gap(model, layers, input_size=(1, 3, 32, 32)):
    """An adaptive average pool to 1x1 runs, and the output shape does not change with input size."""
    if not any(l.op == "gap" for l in layers):
        return False
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            small = model(torch.zeros(input_size, device=device)).shape
            large = model(torch.zeros(*input_size[:2], input_size[2] * 2, input_size[3] * 2, device=device)).shape
    except RuntimeError:
        return False
    finally:
        model.train(was_training)
    return small == large


def empirical_receptive_field(model, channels=3, max_size=1024):
    """Measure the receptive field of the last convolution before pooling: the side of the square
    of input pixels whose gradient is non-zero for one central output. The model is copied and
    made linear-positive (conv weights 1/fan-in, identity BatchNorm, all-ones input) so no ReLU
    hides a pixel; the input grows until the field no longer touches its border."""
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
    layers = trace(probe, (1, channels, 32, 32))
    target = layers[last_conv_index(layers)]
    conv = probe.get_submodule(target.name)
    size = 32
    while True:
        captured = {}
        handle = conv.register_forward_hook(lambda mod, inp, out: captured.update(out=out))
        x = torch.ones(1, channels, size, size, requires_grad=True)
        try:
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
    dws = count_depthwise_separable(layers)
    dilated = count_dilated(layers)
    checks = [
        Check("max_params", f"< {constraints['max_params']:,}", f"{params:,}", params < constraints["max_params"]),
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


def format_rf_table(layers):
    head = f"{'layer':<22}{'op':<11}{'kernel':>7}{'stride':>7}{'dilation':>9}{'jump':>6}{'RF':>6}"
    rows = [head, "-" * len(head)]
    for l in layers:
        if l.kernel:
            rows.append(f"{l.name:<22}{l.op:<11}{l.kernel:>7}{l.stride:>7}{l.dilation:>9}{l.jump:>6}{l.rf:>6}")
        else:
            rows.append(f"{l.name:<22}{l.op:<11}{'-':>7}{'-':>7}{'-':>9}{'-':>6}{'-':>6}")
    return "\n".join(rows)


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
