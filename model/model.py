import torch.nn as nn

from base import BaseModel
from model.blocks import ConvBNReLU, DepthwiseSeparableConv


class DilatedNet(BaseModel):
    """C1 -> T1 -> C2 -> T2 -> C3 -> T3 -> C4 -> output, with no max-pooling.

    C1 is two plain 3x3 convolutions at full resolution. Each transition T is a depthwise-separable
    3x3 convolution with dilation 2 (T1, T2: also stride 2, 32 -> 16 -> 8 pixels) or dilation 4
    (T3: stride 1, it widens the receptive field at 8x8). C2-C4 are residual depthwise-separable
    blocks whose dilation alternates 1, 2. The output is global average pooling and a linear layer
    giving raw logits.

    widths: channels of C1..C4. depths: convolutions in C1..C4.
    """

    def __init__(self, num_classes: int = 10, widths: list = (32, 64, 112, 128), depths: list = (2, 2, 2, 1),
                 dropout: float = 0.0):
        super().__init__()
        if len(widths) != 4 or len(depths) != 4 or min(depths) < 1 or min(widths) < 1:
            raise ValueError("widths and depths need 4 positive entries each (C1..C4)")
        w1, w2, w3, w4 = widths
        c1_channels = [3] + [max(8, w1 * 3 // 4)] * (depths[0] - 1) + [w1]  # a narrower first conv
        self.c1 = nn.Sequential(*[ConvBNReLU(a, b) for a, b in zip(c1_channels, c1_channels[1:])])
        self.t1 = DepthwiseSeparableConv(w1, w2, stride=2, dilation=2)
        self.c2 = self._stage(w2, depths[1])
        self.t2 = DepthwiseSeparableConv(w2, w3, stride=2, dilation=2)
        self.c3 = self._stage(w3, depths[2])
        self.t3 = DepthwiseSeparableConv(w3, w4, stride=1, dilation=4)
        self.c4 = self._stage(w4, depths[3])
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.output = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(w4, num_classes))

    @staticmethod
    def _stage(width, depth):
        return nn.Sequential(*[DepthwiseSeparableConv(width, width, dilation=1 + i % 2, residual=True) for i in range(depth)])

    def forward(self, x):
        for block in (self.c1, self.t1, self.c2, self.t2, self.c3, self.t3, self.c4):
            x = block(x)
        return self.output(self.gap(x))
