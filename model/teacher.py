import torch.nn as nn

from base import BaseModel
from base.base_model import check_size
from model.blocks import conv_bn, make_act
from utils.errors import ArgumentError


class TeacherNet(BaseModel):
    """A dense teacher for distillation, of the airbench94 class (Jordan, 2024): a 3x3 stem, then
    three groups of [3x3 conv -> 2x2 max-pool -> BN -> act -> 3x3 conv -> BN -> act], 3x3 max-pool,
    a linear layer. About 2 M parameters and 0.1 G multiply-adds per 32x32 image: 20 times the
    student's cost, and outside the C1..C4 rules (its config turns `constraints.enforce` off).

    widths: output channels of the stem and the three groups. act: as in model.blocks.ACTIVATIONS.
    """

    def __init__(self, num_classes: int = 10, widths: list = (32, 64, 256, 256), act: str = "gelu"):
        super().__init__()
        if len(widths) != 4 or min(widths) < 1:
            raise ArgumentError("widths", f"expected 4 positive channel counts (stem, 3 groups), got {widths!r}")
        check_size(1 + 2 * (len(widths) - 1), widths)
        stem, *groups = widths
        self.stem = nn.Sequential(*conv_bn(3, stem), make_act(act))
        self.groups = nn.Sequential(*(self._group(a, b, act) for a, b in zip([stem, *groups], groups)))
        self.head = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(groups[-1], num_classes))

    @staticmethod
    def _group(in_width, width, act):
        first, bn1 = conv_bn(in_width, width)
        return nn.Sequential(first, nn.MaxPool2d(2), bn1, make_act(act), *conv_bn(width, width), make_act(act))

    def forward(self, x):
        return self.head(self.groups(self.stem(x)))
