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


class RepConvBN(nn.Module):
    """A kxk convolution + BatchNorm that trains with parallel branches and runs as one convolution
    (structural re-parameterisation: ACNet, Ding et al. 2019; RepVGG, 2021). Beside the kxk conv + BN,
    a 1xk, a kx1 and a 1x1 convolution (same stride, dilation and groups), each with its own BN, and a
    BN of the input itself when the shapes allow (in == out, stride 1); their outputs are summed.
    Every branch is linear in eval mode, so `fuse()` folds them into a single kxk convolution with a
    bias and the network's outputs stay the same; checkpoints keep the branches (the state a resume
    needs), and inference, export and the spec check run the fused form (BaseModel.reparameterize)."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, dilation=1, groups=1):
        super().__init__()
        k, pad = kernel_size, same_padding(kernel_size, dilation)
        shape = dict(stride=stride, dilation=dilation, groups=groups, bias=False)
        self.kernel_size, self.dilation, self.stride, self.groups = k, dilation, stride, groups
        self.in_channels, self.out_channels = in_channels, out_channels
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(in_channels, out_channels, size, padding=padding, **shape), nn.BatchNorm2d(out_channels)
            )
            for size, padding in (((k, k), pad), ((1, k), (0, pad)), ((k, 1), (pad, 0)), ((1, 1), 0))
        )
        self.identity = nn.BatchNorm2d(out_channels) if in_channels == out_channels and stride == 1 else None
        self.fused = None

    def forward(self, x):
        if self.fused is not None:
            return self.fused(x)
        y = sum(branch(x) for branch in self.branches)
        return y + self.identity(x) if self.identity is not None else y

    @staticmethod
    def _fold(weight, bn):
        """(weight, bias) of a bias-free convolution followed by `bn` in eval mode."""
        scale = bn.weight / (bn.running_var + bn.eps).sqrt()
        return weight * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale

    def _embed(self, weight):
        """A 1xk, kx1 or 1x1 kernel placed at the centre of a kxk one."""
        k = self.kernel_size
        h, w = weight.shape[-2:]
        top, left = (k - h) // 2, (k - w) // 2
        return nn.functional.pad(weight, (left, k - w - left, top, k - h - top))

    @torch.no_grad()
    def fused_weights(self):
        """(weight, bias) of the single kxk convolution equal to the branches in eval mode."""
        weight, bias = 0, 0
        for conv, bn in self.branches:
            w, b = self._fold(self._embed(conv.weight), bn)
            weight, bias = weight + w, bias + b
        if self.identity is not None:
            per_group = self.in_channels // self.groups
            eye = torch.zeros_like(self.branches[0][0].weight)
            centre = self.kernel_size // 2
            channels = torch.arange(self.out_channels)
            eye[channels, channels % per_group, centre, centre] = 1
            w, b = self._fold(eye, self.identity)
            weight, bias = weight + w, bias + b
        return weight, bias

    @torch.no_grad()
    def fuse(self):
        """Replace the branches by one kxk convolution with bias (in place; eval outputs unchanged)."""
        if self.fused is not None:
            return
        weight, bias = self.fused_weights()
        conv = self.branches[0][0]
        fused = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.stride,
            same_padding(self.kernel_size, self.dilation),
            self.dilation,
            self.groups,
            bias=True,
        ).to(conv.weight.device)
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
        self.fused = fused
        del self.branches, self.identity
        self.branches, self.identity = nn.ModuleList(), None


def conv_bn(in_channels, out_channels, kernel_size=3, stride=1, dilation=1, groups=1, rep=False):
    """kxk convolution + BatchNorm: a plain pair, or with rep=True its re-parameterisable form."""
    if rep:
        return RepConvBN(in_channels, out_channels, kernel_size, stride, dilation, groups)
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


class InvertedResidual(nn.Module):
    """MobileNetV2's block: [1x1 expand -> BN -> act] -> depthwise kxk (stride, dilation) -> BN -> act
    [-> SE] -> 1x1 project -> BN (+ input when the shapes allow) [-> act when post_act].

    expand: the middle width is in_channels x expand (1: no expanding convolution); se: the
    squeeze-excite reduction on the middle width (0: none); post_act: an activation after the
    sum (DilatedNet's blocks), else the linear bottleneck of MobileNetV2; rep: the depthwise
    convolution trains with re-parameterisable branches (RepConvBN)."""

    def __init__(
        self, in_channels, out_channels, expand=1, stride=1, dilation=1, se=0, act="relu", post_act=False, rep=False
    ):
        super().__init__()
        mid = round(in_channels * expand)
        self.residual = in_channels == out_channels and stride == 1
        self.expand = (
            nn.Sequential(nn.Conv2d(in_channels, mid, 1, bias=False), nn.BatchNorm2d(mid), make_act(act))
            if expand != 1
            else nn.Identity()
        )
        # a strided depthwise conv is not dilated (several times slower on a CPU, and it skips pixels)
        self.depthwise = nn.Sequential(
            conv_bn(mid, mid, 3, stride, 1 if stride > 1 else dilation, groups=mid, rep=rep), make_act(act)
        )
        self.se = SqueezeExcite(mid, se) if se else nn.Identity()
        self.project = nn.Sequential(nn.Conv2d(mid, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        self.act = make_act(act) if post_act else nn.Identity()

    def forward(self, x):
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return self.act(y + x if self.residual else y)
