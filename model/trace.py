"""What a network's forward pass really runs, not what its code or its names claim.

A forward pass under a TorchFunctionMode records every conv2d and pooling call in execution order
with its kernel, stride, dilation and groups (`trace`). From that trace:

* the receptive field is computed analytically, layer by layer (jump and RF columns), up to the
  last convolution before global pooling; this treats the network as a chain, which holds for
  plain and residual networks (a skip adds no receptive field);
* a depthwise-separable convolution is a depthwise kxk conv (groups == in_channels > 1, k > 1)
  whose output goes into a 1x1 conv, with at most a squeeze-excite gate between them; a dilated
  convolution has k > 1 and dilation > 1; any max-pool call, adaptive or not, counts as max-pooling;
* a squeeze-excite gate is no part of the spatial chain: its global pool (op "squeeze": more spatial
  convolutions follow it) and its convolutions on the pooled 1x1 map (op "fc") add no receptive
  field, and global average pooling ("gap") is the global pool after the last spatial convolution;
"""

import inspect
from dataclasses import dataclass

import torch
from torch.overrides import TorchFunctionMode

from base.base_model import evaluating
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


def _avg_pool2d(
    input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None
):
    pass


_SIGS = {
    "conv2d": inspect.Signature.from_callable(
        lambda input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1: None
    ),
    "max_pool2d": inspect.Signature.from_callable(
        lambda input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False: None
    ),
    "avg_pool2d": inspect.Signature.from_callable(_avg_pool2d),
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
            in_shape = tuple(bound.arguments["input"].shape)
            self.calls.append((kind, dict(bound.arguments), shape, in_shape))
        return out


def trace(model, input_size=(1, 3, 32, 32)):
    """Run one forward pass (eval mode, no grad) and return the recorded layers with jump and RF."""
    weight_names = {id(p): n.rsplit(".", 1)[0] for n, p in model.named_parameters()}
    device = next(model.parameters()).device
    recorder = _Recorder(weight_names)
    with evaluating(model), recorder:
        model(torch.zeros(input_size, device=device))
    layers = [_layer(kind, a, shape, in_shape, weight_names) for kind, a, shape, in_shape in recorder.calls]
    _mark_squeezes(layers)
    jump, rf = 1, 1
    for layer in layers:
        if layer.kernel and layer.op != "fc":  # convs and fixed-size pools; adaptive pools end the spatial chain
            layer.jump = jump
            rf += layer.dilation * (layer.kernel - 1) * jump
            jump *= layer.stride
        layer.rf = rf
    return layers


def _layer(kind, a, shape, in_shape, weight_names):
    """The Layer of one recorded call (its bound arguments `a`, output and input shapes)."""
    if kind == "conv2d":
        w = a["weight"]
        out_ch, in_per_group, k = w.shape[0], w.shape[1], w.shape[-1]
        groups = a["groups"]
        in_ch = in_per_group * groups
        if in_shape[-2:] == (1, 1) and k == 1:
            op = "fc"  # a channel map on a pooled vector (a squeeze-excite gate's)
        elif groups == in_ch and in_ch > 1 and k > 1:
            op = "depthwise"
        else:
            op = "pointwise" if k == 1 and groups == 1 else "conv"
        name = weight_names.get(id(w), "conv2d")
        return Layer(name, op, k, _first(a["stride"]), _first(a["dilation"]), groups, in_ch, out_ch)
    if kind in ("max_pool2d", "avg_pool2d"):
        k = _first(a["kernel_size"])
        stride = _first(a["stride"]) or k
        return Layer(kind, "maxpool" if kind == "max_pool2d" else "avgpool", k, stride, _first(a.get("dilation", 1)))
    out_size = a["output_size"]
    is_global = all(s == 1 for s in (out_size if isinstance(out_size, (tuple, list)) else (out_size,)))
    op = "gap" if kind == "adaptive_avg_pool2d" and is_global else kind.replace("_pool2d", "pool")
    return Layer(kind, op, 0, 0, 1, out_channels=shape[1] if len(shape) > 1 else 0)


SPATIAL_CONVS = ("conv", "depthwise", "pointwise")


def _mark_squeezes(layers):
    """A global average pool followed by more spatial convolutions is a squeeze-excite gate's
    ("squeeze"), not the network's global average pooling."""
    for i, layer in enumerate(layers):
        if layer.op == "gap" and any(l.op in SPATIAL_CONVS for l in layers[i + 1 :]):
            layer.op = "squeeze"


def last_conv_index(layers):
    """Index of the last spatial convolution before the first global/adaptive pooling that is not a
    squeeze-excite gate's (or overall)."""
    end = next((i for i, l in enumerate(layers) if l.kernel == 0 and l.op != "squeeze"), len(layers))
    convs = [i for i in range(end) if layers[i].op in SPATIAL_CONVS]
    if not convs:
        raise SpecError("arch: the model runs no convolution before its pooling")
    return convs[-1]


def receptive_field(layers):
    return layers[last_conv_index(layers)].rf


def count_depthwise_separable(layers):
    """Depthwise convolutions whose output reaches a 1x1 convolution of the same input width next,
    a squeeze-excite gate (its pool and 1x1 maps on the pooled vector) allowed between them."""
    spatial = [l for l in layers if l.op not in ("fc", "squeeze")]
    return sum(
        1
        for a, b in zip(spatial, spatial[1:])
        if a.op == "depthwise" and b.op == "pointwise" and b.in_channels == a.out_channels
    )


def count_dilated(layers):
    return sum(1 for l in layers if l.op in ("conv", "depthwise") and l.dilation > 1 and l.kernel > 1)


def has_maxpool(layers):
    return any(l.op in ("maxpool", "adaptive_maxpool") for l in layers)


def format_rf_table(layers):
    head = f"{'layer':<22}{'op':<11}{'kernel':>7}{'stride':>7}{'dilation':>9}{'jump':>6}{'RF':>6}"
    rows = [head, "-" * len(head)]
    for l in layers:
        if l.kernel:
            rows.append(f"{l.name:<22}{l.op:<11}{l.kernel:>7}{l.stride:>7}{l.dilation:>9}{l.jump:>6}{l.rf:>6}")
        else:
            rows.append(f"{l.name:<22}{l.op:<11}{'-':>7}{'-':>7}{'-':>9}{'-':>6}{'-':>6}")
    return "\n".join(rows)
