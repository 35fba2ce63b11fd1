from abc import abstractmethod

import torch.nn as nn


def num_params(module):
    """Trainable parameters of `module`: the one count the spec checks, the logs and the benchmark use."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class BaseModel(nn.Module):
    """Base class for all models."""

    @abstractmethod
    def forward(self, *inputs):
        raise NotImplementedError

    def num_params(self):
        return num_params(self)

    def __str__(self):
        return super().__str__() + f"\nTrainable parameters: {self.num_params():,}"
