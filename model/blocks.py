"""Small typed blocks (timm-style): every convolution of the network is one of these."""

import torch
import torch.nn as nn


def same_padding(kernel_size, dilation):
    return dilation * (kernel_size - 1) // 2


class ConvBNReLU(nn.Sequential):
    """kxk convolution (optionally strided/dilated) -> BatchNorm -> ReLU."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, dilation=1):
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride,
                same_padding(kernel_size, dilation),
                dilation,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class DepthwiseSeparableConv(nn.Module):
    """Depthwise kxk (stride, dilation) [-> BN -> ReLU] -> pointwise 1x1 -> BN (-> + input) -> ReLU.

    mid_act=False drops the BN and ReLU between the depthwise and the pointwise convolution (as in
    Xception): the pair is then one linear map followed by one BN and ReLU; the shipped shape trained
    10-30% faster that way on a 2-core CPU (not used by the shipped config: its accuracy is untested).
    residual=True adds the input before the last ReLU; it needs in == out
    channels and stride 1."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, dilation=1, residual=False, mid_act=True):
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
        self.mid = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True)) if mid_act else nn.Identity()
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn_pw = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.bn_pw(self.pointwise(self.mid(self.depthwise(x))))
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
