"""Small typed blocks (timm-style): every convolution of the network is one of these."""

import torch
import torch.nn as nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,  # slope 0.1 below zero: a unit pushed negative still learns its way back
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "hardswish": nn.Hardswish,
}
LEAKY_SLOPE = 0.1


def make_act(name):
    """The activation module called `name` (one of ACTIVATIONS); in place where the module allows it."""
    kind = ACTIVATIONS[name]
    if kind is nn.LeakyReLU:
        return kind(LEAKY_SLOPE, inplace=True)
    return kind(inplace=True) if kind in (nn.ReLU, nn.SiLU, nn.Hardswish) else kind()


def same_padding(kernel_size, dilation):
    return dilation * (kernel_size - 1) // 2


class ConvBNReLU(nn.Sequential):
    """kxk convolution (optionally strided/dilated) -> BatchNorm -> ReLU (or the activation `act`)."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, dilation=1, act="relu"):
        super().__init__(*conv_bn(in_channels, out_channels, kernel_size, stride, dilation), make_act(act))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al., 2018): channel weights in (0, 1) from the spatial mean of
    each channel, through a bottleneck of `channels // reduction` units. The mean is taken with
    `mean()` and the bottleneck is two linear layers, so the spec's trace sees neither a pooling
    layer nor a convolution: global pooling stays the one before the classifier."""

    def __init__(self, channels, reduction=8):
        super().__init__()
        hidden = max(4, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x):
        w = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3))))))
        return x * w[:, :, None, None]


class DepthwiseSeparableConv(nn.Module):
    """Depthwise kxk (stride, dilation) [-> BN -> act] -> pointwise 1x1 -> BN [-> SE] (-> + input) -> act.

    mid_act=False drops the BN and ReLU between the depthwise and the pointwise convolution (as in
    Xception): the pair is then one linear map followed by one BN and ReLU, which trains faster on a
    CPU (docs/speed.md has the figures; the shipped config keeps mid_act=True).
    residual=True adds the input before the last activation; it needs in == out channels and stride 1.
    act: the activation (ACTIVATIONS); se: squeeze-excite reduction ratio (0: none)."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size=3,
        stride=1,
        dilation=1,
        residual=False,
        mid_act=True,
        act="relu",
        se=0,
    ):
        super().__init__()
        if residual and (in_channels != out_channels or stride != 1):
            raise ValueError("a residual DepthwiseSeparableConv needs in_channels == out_channels and stride 1")
        self.residual = residual
        self.depthwise = nn.Conv2d(
            in_channels,
            in_channels,
            kernel_size,
            stride,
            same_padding(kernel_size, dilation),
            dilation,
            groups=in_channels,
            bias=False,
        )
        self.mid = nn.Sequential(nn.BatchNorm2d(in_channels), make_act(act)) if mid_act else nn.Identity()
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn_pw = nn.BatchNorm2d(out_channels)
        self.se = SqueezeExcite(out_channels, se) if se else None
        self.act = make_act(act)

    def forward(self, x):
        y = self.bn_pw(self.pointwise(self.mid(self.depthwise(x))))
        if self.se is not None:
            y = self.se(y)
        return self.act(y + x if self.residual else y)


class _ChannelsLastGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous(memory_format=torch.channels_last)


def channels_last_grad(x):
    """Identity whose gradient is made channels_last when `x` is. The backward of adaptive pooling
    and of strided convolutions returns contiguous (NCHW) gradients; every elementwise backward op
    (BatchNorm, ReLU, residual add) that then mixes the two layouts ran 2-9x slower on the CPU."""
    if x.requires_grad and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return _ChannelsLastGrad.apply(x)
    return x


def conv_bn(in_channels, out_channels, kernel_size=3, stride=1, dilation=1, groups=1):
    """kxk convolution + BatchNorm."""
    return nn.Sequential(
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            same_padding(kernel_size, dilation),
            dilation,
            groups=groups,
            bias=False,
        ),
        nn.BatchNorm2d(out_channels),
    )
