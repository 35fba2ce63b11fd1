import contextlib
from abc import abstractmethod

import torch
import torch.nn as nn


def num_params(module):
    """Parameters of `module`, frozen ones included: the one count the spec checks, the logs and
    the benchmarks use."""
    return sum(p.numel() for p in module.parameters())


# Far beyond any network of this project: what a config may make a class build, checked before any
# module is made (a typo of 2000000 blocks would otherwise build for minutes and take gigabytes).
MAX_BLOCKS, MAX_WIDTH = 256, 4096


def check_size(blocks, widths):
    """An ArgumentError naming `depths`/`stages` or `widths` when a network would have more than
    MAX_BLOCKS blocks or a layer wider than MAX_WIDTH channels."""
    from utils.errors import ArgumentError

    if blocks > MAX_BLOCKS:
        raise ArgumentError(None, f"{blocks:,} blocks in all, more than the {MAX_BLOCKS} a network here may have")
    widest = max(widths, default=0)
    if widest > MAX_WIDTH:
        raise ArgumentError(None, f"a layer of {widest:,} channels, more than the {MAX_WIDTH:,} allowed")


@contextlib.contextmanager
def evaluating(module):
    """`module` in eval mode without gradients inside the block; every submodule's own mode restored
    after (one kept in eval mode on purpose, such as a frozen BatchNorm, stays so)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        for m, training in modes:
            m.training = training


class BaseModel(nn.Module):
    """Base class for all models."""

    @abstractmethod
    def forward(self, *inputs):
        raise NotImplementedError

    def num_params(self):
        return num_params(self)

    def __str__(self):
        return super().__str__() + f"\nParameters: {self.num_params():,}"
