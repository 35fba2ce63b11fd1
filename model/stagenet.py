"""StageNet: C1 -> C2 -> C3 -> C4 -> output with every block written as data, so that network shapes
(plain, inverted-residual, squeeze-excite, re-parameterised, kept at high resolution) are config
values of one class and compare on one footing."""

import torch.nn as nn

from base import BaseModel
from base.base_model import check_size
from model.blocks import ACTIVATIONS, InvertedResidual, channels_last_grad, conv_bn, make_act
from utils.errors import ArgumentError

# The default: DilatedNet's shipped shape (config.json's arch) written as blocks. Each block is
# [out_channels, stride, dilation, expand]; expand 0 is a dense 3x3 convolution + BN + activation,
# expand >= 1 an InvertedResidual block whose middle width is the input width x expand.
DILATEDNET_STAGES = (
    ((16, 1, 1, 0), (64, 2, 1, 0)),
    ((64, 1, 1, 1), (64, 1, 1, 1)),
    ((144, 2, 1, 1), (144, 1, 1, 1), (144, 1, 1, 1)),
    ((144, 1, 4, 1),),
)


class StageNet(BaseModel):
    """Four stages of blocks (C1..C4), global average pooling, dropout and a linear layer.

    stages: four lists of blocks [out_channels, stride, dilation, expand] (see DILATEDNET_STAGES);
        the first block of C1 reads the 3 input channels.
    act: the activation everywhere (model.blocks.ACTIVATIONS).
    se: squeeze-excite reduction on the middle width of every inverted-residual block (0: none).
    post_act: an activation after each inverted-residual block's sum (DilatedNet's blocks; False:
        MobileNetV2's linear bottleneck).
    rep: every 3x3 convolution trains with re-parameterisable branches (blocks.RepConvBN), folded
        into one convolution by `reparameterize()` for inference and export.
    """

    def __init__(
        self,
        num_classes: int = 10,
        stages: list = DILATEDNET_STAGES,
        act: str = "leaky_relu",
        se: int = 0,
        post_act: bool = True,
        rep: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        if act not in ACTIVATIONS:
            raise ArgumentError("act", f"expected one of {', '.join(ACTIVATIONS)}, got {act!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ArgumentError("dropout", f"expected a probability from 0 to below 1, got {dropout!r}")
        if isinstance(se, bool) or not isinstance(se, int) or se < 0:
            raise ArgumentError("se", f"expected an integer >= 0 (0: no squeeze-excite), got {se!r}")
        if not isinstance(stages, (list, tuple)) or len(stages) != 4 or not all(stages):
            raise ArgumentError("stages", "expected four non-empty lists of blocks (C1..C4)")
        blocks = [b for stage in stages for b in (stage if isinstance(stage, (list, tuple)) else [])]
        check_size(len(blocks), [b[0] * max(1, b[3]) for b in blocks if isinstance(b, (list, tuple)) and len(b) == 4])
        width, built, options = 3, [], dict(act=act, se=se, post_act=post_act, rep=rep)
        for s, blocks in enumerate(stages):
            layers = []
            for b, block in enumerate(blocks):
                layers.append(self._block(width, block, f"C{s + 1} block {b + 1}", **options))
                width = block[0]
            built.append(nn.Sequential(*layers))
        self.c1, self.c2, self.c3, self.c4 = built
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.output = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(width, num_classes))

    @staticmethod
    def _block(width, block, where, act, se, post_act, rep):
        """One block [out_channels, stride, dilation, expand] reading `width` channels."""
        if not (
            isinstance(block, (list, tuple)) and len(block) == 4 and all(isinstance(v, (int, float)) for v in block)
        ):
            raise ArgumentError("stages", f"{where}: expected [out_channels, stride, dilation, expand], got {block!r}")
        out, stride, dilation, expand = block
        if out < 1 or stride not in (1, 2) or dilation < 1 or expand < 0 or (width == 3 and expand):
            raise ArgumentError(
                "stages",
                f"{where}: needs out_channels >= 1, stride 1 or 2, dilation >= 1, expand >= 0 "
                f"(and expand 0, a dense convolution, for the block that reads the image), got {block!r}",
            )
        if expand == 0:  # a strided convolution is not dilated
            return nn.Sequential(conv_bn(width, out, 3, stride, 1 if stride > 1 else dilation, rep=rep), make_act(act))
        return InvertedResidual(width, out, expand, stride, dilation, se, act, post_act, rep)

    def forward(self, x):
        for stage in (self.c1, self.c2, self.c3, self.c4):
            x = channels_last_grad(stage(x))
        return self.output(self.gap(x))
