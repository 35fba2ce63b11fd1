import torch.nn as nn

from base import BaseModel
from base.base_model import check_size
from model.blocks import (
    ACTIVATIONS,
    ConvBNReLU,
    DepthwiseSeparableConv,
    channels_last_grad,
)
from utils.errors import ArgumentError


class DilatedNet(BaseModel):
    """C1 -> C2 -> C3 -> C4 -> output, with no max-pooling: resolution falls by strided
    convolutions and the receptive field grows by dilated ones.

    C1 (32x32 -> 16x16): dense 3x3 convolutions, the last one with stride 2 (the only layers at full
        resolution: dense convs are cheap with so few input channels, and they learn edges best).
    C2 (16x16): residual depthwise-separable 3x3 blocks, dilation `dilations[1]`.
    C3 (8x8): a stride-2 depthwise-separable block, then residual blocks with dilation `dilations[2]`.
    C4 (8x8): depthwise-separable blocks with dilation `dilations[3]` (residual once the width is w4).
    output: global average pooling and a linear layer giving raw logits.

    widths: output channels of C1..C4. depths: convolutions (C1) or blocks (C2..C4) per stage.
    dilations: dilation of the depthwise convolutions of C2..C4 (the first entry, C1's, is 1).
    mid_act: BN + ReLU between each depthwise and pointwise convolution.
    c1_ratio: C1's full-resolution convolutions have w1 // c1_ratio channels (at least 8).
    act: the activation everywhere ("relu", "leaky_relu" (slope 0.1), "silu", "gelu", "hardswish").
    se: squeeze-excite reduction ratio in every block of C2..C4 (0: no squeeze-excite).
    """

    def __init__(
        self,
        num_classes: int = 10,
        widths: list = (64, 64, 144, 144),
        depths: list = (2, 2, 3, 1),
        dilations: list = (1, 1, 1, 4),
        mid_act: bool = True,
        dropout: float = 0.0,
        c1_ratio: int = 4,
        act: str = "relu",
        se: int = 0,
    ):
        super().__init__()
        if len(widths) != 4 or len(depths) != 4 or len(dilations) != 4:
            raise ArgumentError(None, "widths, depths and dilations need 4 entries each (C1..C4)")
        if min(depths) < 1 or min(widths) < 1 or min(dilations) < 1 or dilations[0] != 1 or c1_ratio < 1:
            raise ArgumentError(None, "widths, depths, dilations and c1_ratio must be positive, and C1's dilation 1")
        check_size(sum(depths), widths)
        if act not in ACTIVATIONS:
            raise ArgumentError("act", f"expected one of {', '.join(ACTIVATIONS)}, got {act!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ArgumentError("dropout", f"expected a probability from 0 to below 1, got {dropout!r}")
        if not isinstance(se, int) or isinstance(se, bool) or se < 0:
            raise ArgumentError("se", f"expected an integer >= 0 (0: no squeeze-excite), got {se!r}")
        block = dict(mid_act=mid_act, act=act, se=se)
        w1, w2, w3, w4 = widths
        c1 = [3] + [max(8, w1 // c1_ratio)] * (depths[0] - 1) + [w1]  # full-resolution convs are narrower
        self.c1 = nn.Sequential(
            *[
                ConvBNReLU(a, b, stride=2 if i == depths[0] - 1 else 1, act=act)
                for i, (a, b) in enumerate(zip(c1, c1[1:]))
            ]
        )
        self.c2 = self._stage(w1, w2, depths[1], 1, dilations[1], block)
        self.c3 = self._stage(w2, w3, depths[2], 2, dilations[2], block)
        self.c4 = self._stage(w3, w4, depths[3], 1, dilations[3], block)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.output = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(w4, num_classes))

    @staticmethod
    def _stage(in_width, width, depth, stride, dilation, block):
        """`depth` depthwise-separable blocks; the first changes width or stride when asked (a strided
        depthwise conv is not dilated: on a CPU a strided dilated depthwise conv is several times slower)."""
        blocks = []
        if in_width != width or stride != 1:
            blocks.append(
                DepthwiseSeparableConv(in_width, width, stride=stride, dilation=1 if stride > 1 else dilation, **block)
            )
        while len(blocks) < depth:
            blocks.append(DepthwiseSeparableConv(width, width, dilation=dilation, residual=True, **block))
        return nn.Sequential(*blocks)

    def forward(self, x):
        for block in (self.c1, self.c2, self.c3, self.c4):
            x = channels_last_grad(block(x))
        return self.output(self.gap(x))
