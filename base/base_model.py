from abc import abstractmethod

import torch.nn as nn


def num_params(module):
    """Parameters of `module`, frozen ones included (a whitening layer's filters are weights the
    network needs): the one count the spec checks, the logs and the benchmarks use."""
    return sum(p.numel() for p in module.parameters())


class BaseModel(nn.Module):
    """Base class for all models."""

    @abstractmethod
    def forward(self, *inputs):
        raise NotImplementedError

    def num_params(self):
        return num_params(self)

    def __str__(self):
        return super().__str__() + f"\nParameters: {self.num_params():,}"
